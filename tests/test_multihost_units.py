"""The multi-process job's pieces, one process: the stall watchdog, the agreed stop signal, work
only process 0 does, and each process's input shard (with the process functions faked)."""

import signal
import threading

import pytest

from keras_vicreg.training import exit_codes
from keras_vicreg.training import multihost
from keras_vicreg.training import preemption
from keras_vicreg.training import watchdog as watchdog_lib

pytestmark = pytest.mark.backend_neutral


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_watchdog_is_disarmed_until_training_begins_and_fires_after_a_stalled_step():
    clock, exits = FakeClock(), []
    dog = watchdog_lib.StallWatchdog(10, exit_codes.PEER_LOST, clock=clock, exit_fn=exits.append)
    clock.now = 1e6  # preparing the data may take as long as it takes
    assert not dog.expired()
    dog.on_train_begin()
    clock.now += 19  # the first step gets twice the timeout
    assert not dog.expired()
    dog.on_train_batch_end(0)
    clock.now += 9.9
    assert not dog.expired()
    clock.now += 0.2
    assert dog.expired()
    dog._fire()
    assert exits == [exit_codes.PEER_LOST]
    dog.on_train_end()
    assert not dog.expired()


def test_watchdog_allow_bounds_a_known_wait_then_disarms():
    clock = FakeClock()
    dog = watchdog_lib.StallWatchdog(5, exit_codes.PEER_LOST, clock=clock, exit_fn=lambda s: None)
    with dog.allow(100):
        clock.now += 104
        assert not dog.expired()
        clock.now += 2
        assert dog.expired()
    assert not dog.expired()


def test_watchdog_thread_ends_a_stalled_process_and_names_it(capsys):
    fired = threading.Event()
    statuses = []

    def record(status):
        statuses.append(status)
        fired.set()

    with watchdog_lib.StallWatchdog(0.2, 4, describe="process 1 of 2", exit_fn=record) as dog:
        dog.on_train_begin()
        assert fired.wait(10)
    assert statuses == [4]
    message = capsys.readouterr().err
    assert "process 1 of 2" in message and "PEER_LOST" in message and "peer_timeout_s" in message


def test_watchdog_rejects_a_non_positive_timeout():
    with pytest.raises(ValueError, match="timeout_s"):
        watchdog_lib.StallWatchdog(0, 4)


class FakeSignal:
    received = None


@pytest.mark.parametrize("local, others, expected", [
    (None, False, None),
    (None, True, signal.SIGTERM),  # another process got the notice: stop with it
    (signal.SIGINT, False, signal.SIGINT),
])
def test_agreed_stop_signal_stops_every_process_when_any_received(local, others, expected):
    asked = []

    def any_process(flag):
        asked.append(flag)
        return flag or others

    local_signal = FakeSignal()
    local_signal.received = local
    assert preemption.AgreedStopSignal(local_signal, any_process).received == expected
    assert asked == [local is not None]  # one collective per read


def _fake_processes(monkeypatch, index, count, others_fail=False):
    monkeypatch.setattr(multihost, "process_index", lambda: index)
    monkeypatch.setattr(multihost, "process_count", lambda: count)
    monkeypatch.setattr(multihost, "any_process", lambda flag: flag or others_fail)


def test_on_writer_runs_only_on_process_0(monkeypatch):
    calls = []
    _fake_processes(monkeypatch, 0, 2)
    assert multihost.on_writer(calls.append, "x") is None and calls == ["x"]
    _fake_processes(monkeypatch, 1, 2)
    assert multihost.on_writer(calls.append, "y") is None and calls == ["x"]


def test_on_writer_failure_stops_every_process(monkeypatch):
    def fail():
        raise ValueError("locked")

    _fake_processes(monkeypatch, 0, 2)
    with pytest.raises(ValueError, match="locked"):
        multihost.on_writer(fail)
    _fake_processes(monkeypatch, 1, 2, others_fail=True)
    with pytest.raises(multihost.WriterFailedError, match="process 1 of 2"):
        multihost.on_writer(fail)


def test_input_context_gives_each_process_its_shard(monkeypatch):
    _fake_processes(monkeypatch, 1, 4)
    context = multihost.input_context()
    assert (context.num_input_pipelines, context.input_pipeline_id) == (4, 1)
    assert context.get_per_replica_batch_size(64) == 16
    _fake_processes(monkeypatch, 0, 1)
    assert multihost.input_context() is None
