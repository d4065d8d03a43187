"""End-to-end tests of trainers/pretrain.py, run as a program on configs/tiny.py.

Each launch is a separate process (as a user runs it), on the backend of the test session.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from keras_vicreg.training import checkpointing
from keras_vicreg.training import exit_codes

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 24  # configs/tiny.py: 2 epochs of 12 steps, checkpoints every 5 steps


def _command(workdir, *overrides):
    return [sys.executable, "-m", "trainers.pretrain", "--config=configs/tiny.py",
            f"--workdir={workdir}", *overrides]


def _env():
    return {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(workdir, *overrides):
    return subprocess.run(_command(workdir, *overrides), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)


def _assert_same_weights(final, reference):
    """Every weight and optimizer variable of two runs' checkpoints equal to 1e-6 absolute.

    Not bit for bit: TensorFlow's CPU kernels in two processes have rounded one element of one
    variable one ulp apart (CI, a killed-and-resumed run against an uninterrupted one), with
    oneDNN off, and later steps carry such an ulp on: a momentum entry of -0.0049837 came out
    1.9e-7 off in one CI run. A resume that redid, skipped or lost a step, or the optimizer's
    momentum, is off by a step's update, orders of magnitude more.
    """
    assert final.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_allclose(final[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def _checkpoint(workdir, step):
    return checkpointing.checkpoint_path(os.path.join(workdir, "checkpoints"), step)


def _arrays(path):
    """{name: array} of every weight and optimizer variable in a checkpoint file."""
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: arrays.update({name: item[()]})
            if isinstance(item, h5py.Dataset) else None
        )
    return arrays


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """(workdir, return code, newest checkpoint's step) of a run killed by SIGKILL once its step-5
    checkpoint (in the middle of the first epoch) exists."""
    workdir = str(tmp_path_factory.mktemp("killed"))
    process = subprocess.Popen(_command(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not os.path.exists(_checkpoint(workdir, 5)) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    newest = checkpointing.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return workdir, process.returncode, newest[0]


@pytest.fixture(scope="module")
def resumed(killed):
    """(workdir, newest step before, completed process) of the same command run again."""
    workdir, _, killed_at = killed
    return workdir, killed_at, _run(workdir)


def test_a_killed_run_leaves_its_checkpoints_from_before_the_kill(killed):
    workdir, returncode, killed_at = killed
    assert returncode == -signal.SIGKILL
    assert 5 <= killed_at < TOTAL_STEPS  # killed mid-run, not after the end
    assert not os.path.exists(os.path.join(workdir, "export"))


def test_the_same_command_resumes_from_the_newest_checkpoint_and_finishes(resumed):
    workdir, killed_at, result = resumed
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from step {killed_at} of {TOTAL_STEPS}" in result.stdout
    assert "Starting from scratch" not in result.stdout
    first_step = result.stdout.split("\nstep ")[1].split("/")[0]
    assert int(first_step) == killed_at + 1  # it continued, it did not redo steps

    final = _arrays(_checkpoint(workdir, TOTAL_STEPS))
    iterations = [v for name, v in final.items() if name.startswith("optimizer") and v.shape == ()]
    assert [int(v) for v in iterations] == [TOTAL_STEPS]  # the optimizer's step counter
    assert all(np.all(np.isfinite(v)) for v in final.values())
    export = os.path.join(workdir, "export")
    assert os.path.isfile(os.path.join(export, "backbone.keras"))
    if keras.backend.backend() != "torch":
        assert os.path.isfile(os.path.join(export, "saved_model", "saved_model.pb"))
    assert any(name.startswith("events.out.tfevents")
               for name in os.listdir(os.path.join(workdir, "tensorboard")))


def test_the_resumed_run_reaches_the_weights_of_an_uninterrupted_run(resumed, tmp_path):
    uninterrupted = _run(str(tmp_path))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    final = _arrays(_checkpoint(resumed[0], TOTAL_STEPS))
    reference = _arrays(_checkpoint(str(tmp_path), TOTAL_STEPS))
    _assert_same_weights(final, reference)


def test_a_diverging_run_stops_naming_the_step_and_keeps_a_finite_checkpoint(tmp_path):
    # The warmup's first step has learning rate 0; the second, 1e30 / 12, breaks the weights.
    result = _run(str(tmp_path), "--config.optimizer.base_learning_rate=1e30",
                  "--config.checkpoint_every_steps=1")
    assert result.returncode == exit_codes.DIVERGED
    assert "Training diverged at step" in result.stderr
    assert "NaNGuard: non-finite values at training step" in result.stderr
    checkpoints = checkpointing.list_checkpoints(os.path.join(tmp_path, "checkpoints"))
    assert checkpoints, "a checkpoint of the steps before the divergence"
    newest = checkpoints[-1]
    assert f"The newest checkpoint with finite values, step {newest[0]}" in result.stderr
    for name, value in _arrays(newest[1]).items():
        assert np.all(np.isfinite(value)), name
    assert not os.path.exists(os.path.join(tmp_path, "export"))


@pytest.mark.parametrize(
    "overrides, returncode, expected",
    [
        (["--config.optimizer.base_learning_rate=-0.1", "--config.model.backbone=resnet19"], 2,
         ["Invalid pretraining config (2 problems)", "base_learning_rate must be > 0.0",
          "config.model.backbone must be a backbone"]),
        (["--config.optimizer.learning_rate=0.1"], 2,
         ["Invalid flag", "Did you mean \"base_learning_rate\""]),
        (["--config.batch_size=0"], 2, ["config.batch_size must be >= 1"]),
        # TensorFlow's engine across machines is multi_worker: data_parallel is JAX's and torch's.
        (["--strategy=data_parallel"], 2, ["strategy='data_parallel'", "'multi_worker'"]),
        # A malformed TF_CONFIG, before any server starts.
        (["--strategy=multi_worker", "TF_CONFIG={\"cluster\": {}}"], 2, ["TF_CONFIG"]),
    ],
)
def test_an_invalid_config_stops_before_any_data_is_read(tmp_path, overrides, returncode,
                                                         expected):
    workdir = tmp_path / "workdir"
    env = dict(arg.split("=", 1) for arg in overrides if not arg.startswith("--"))
    flags = [arg for arg in overrides if arg.startswith("--")]
    result = subprocess.run(_command(str(workdir), *flags), cwd=ROOT, env={**_env(), **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == returncode, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr
    assert not workdir.exists()


def _wait_for(path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and process.poll() is None:
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.02)


def test_sigterm_checkpoints_the_step_exits_preempted_and_the_relaunch_finishes_exactly(
    tmp_path, resumed
):
    workdir = str(tmp_path)
    process = subprocess.Popen(_command(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _wait_for(_checkpoint(workdir, 5), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == exit_codes.PREEMPTED, stderr[-2000:]
    assert "Stopped by SIGTERM after step" in stderr
    stopped_at = checkpointing.latest_checkpoint(os.path.join(workdir, "checkpoints"))[0]
    assert 5 <= stopped_at < TOTAL_STEPS
    assert not os.path.exists(os.path.join(workdir, "job.lock"))  # released on the way out

    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Resuming from step {stopped_at}" in result.stdout
    reference = _arrays(_checkpoint(resumed[0], TOTAL_STEPS))  # the killed-and-resumed run's end
    _assert_same_weights(_arrays(_checkpoint(workdir, TOTAL_STEPS)), reference)


def test_a_second_job_on_a_live_workdir_is_refused(tmp_path):
    workdir = str(tmp_path)
    first = subprocess.Popen(_command(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(os.path.join(workdir, "job.lock"), first)
        second = _run(workdir)
        assert second.returncode == exit_codes.INVALID_CONFIG
        assert f"is in use by another job: pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait(timeout=60)


def test_resuming_with_a_changed_batch_size_is_refused_unless_allowed(tmp_path):
    workdir = str(tmp_path)
    assert _run(workdir, "--config.epochs=1").returncode == 0
    changed = _run(workdir, "--config.epochs=1", "--config.batch_size=16")
    assert changed.returncode == exit_codes.INVALID_CONFIG
    assert "config.batch_size: 32 (saved) -> 16 (now)" in changed.stderr
    assert "--allow_config_change" in changed.stderr
