"""SIGTERM and SIGINT as a request to stop cleanly: finish the step, checkpoint, exit "preempted".

Cloud VMs and TPU hosts announce a preemption with SIGTERM and kill the process some seconds
later; Ctrl-C sends SIGINT. By default either kills the run and loses the steps since the last
checkpoint. Inside `PreemptionSignal` the first of them is only recorded: the
`checkpointing.StepCheckpoint` that watches it writes the checkpoint of the step that just ended
and raises `Preempted`, which the binaries turn into their "preempted" exit status, telling a
supervisor to start the same command again (it resumes exactly) rather than to report a crash. A
second signal while the first is being handled acts as usual (kills), for a user who insists.
"""

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal, after checkpointing the step it had reached."""

    def __init__(self, step, signum):
        self.step, self.signum = step, signum
        super().__init__(
            f"Stopped by {signal.Signals(signum).name} after step {step}; its checkpoint is "
            "written: run the same command again to resume."
        )


class PreemptionSignal:
    """A context manager that records SIGTERM / SIGINT instead of dying on them.

    `received` is the first signal's number, or None. The previous handlers come back on exit.
    Handlers can only be installed from the main thread; elsewhere this records nothing and says
    so in `active`.

    Example:
        >>> with PreemptionSignal() as stop:
        ...     model.fit(..., callbacks=[StepCheckpoint(directory, 1000, stop_signal=stop)])
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received = None
        self.active = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:  # a second signal: the previous behaviour, at once
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if callable(previous):
                previous(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
            self.active = True
        return self

    def __exit__(self, *exc_info):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        self.active = False
        return False


class AgreedStopSignal:
    """The stop signal of a job of several processes: received everywhere once received anywhere.

    Every step of a multi-process job is a collective, so all processes must stop after the same
    step: a preemption notice often reaches one host only, and a process that stopped alone would
    leave the others waiting for it. Reading `received` asks every process (`any_process`, a
    collective): `checkpointing.StepCheckpoint` reads it once per step, on every process.

    Args:
        local: this process's `PreemptionSignal`.
        any_process: `keras_vicreg.training.multihost.any_process`.
    """

    def __init__(self, local, any_process):
        self.local = local
        self._any_process = any_process

    @property
    def received(self):
        """This process's signal, or SIGTERM's number when only another process got one."""
        local = self.local.received
        if self._any_process(local is not None):
            return signal.SIGTERM if local is None else local
        return None
