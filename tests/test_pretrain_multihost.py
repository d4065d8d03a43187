"""trainers/pretrain.py as a job of two processes on localhost, on the backend of the session.

Each backend's own launcher: JAX with the three KERAS_DISTRIBUTION_* variables and
`--strategy=data_parallel`, TensorFlow with TF_CONFIG and `--strategy=multi_worker`, PyTorch with
`torchrun --standalone --nproc_per_node=2` and `--strategy=data_parallel`. The job trains
configs/tiny.py (24 steps) and exports; only process 0 writes; SIGTERM to one process stops both
after the same step with the PREEMPTED status and the relaunch reaches the weights of the
uninterrupted job; a second job on the live workdir is refused; a killed peer makes the other
process exit PEER_LOST within a bound. Every launch has a timeout and its processes are killed
at the end of the test, whatever happens.
"""

import json
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
from tests.local_processes import free_port

pytestmark = pytest.mark.backend_neutral

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 24
TIMEOUT_S = 300
PEER_TIMEOUT_S = 20
BACKEND = keras.backend.backend()
STRATEGY = {"jax": "data_parallel", "tensorflow": "multi_worker", "torch": "data_parallel"}[BACKEND]




def _arguments(workdir, overrides):
    return ["-m", "trainers.pretrain", "--config=configs/tiny.py", f"--workdir={workdir}",
            f"--strategy={STRATEGY}", f"--config.peer_timeout_s={PEER_TIMEOUT_S}", *overrides]


class Job:
    """The processes of one two-process job, their output in files of `logs`."""

    def __init__(self, workdir, logs, *overrides):
        self.processes, self.logs = [], []
        env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        if BACKEND == "torch":
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node=2", "--tee=3", f"--log-dir={logs}/torchrun",
                       *_arguments(workdir, overrides)[0:]]
            self._start(command, env, logs / "launcher.log")
            return
        ports = [free_port(), free_port()]
        for index in range(2):
            process_env = dict(env)
            if BACKEND == "jax":
                process_env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{ports[0]}",
                                   KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                                   KERAS_DISTRIBUTION_PROCESS_ID=str(index))
            else:
                process_env["TF_CONFIG"] = json.dumps({
                    "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                    "task": {"type": "worker", "index": index},
                })
            self._start([sys.executable, *_arguments(workdir, overrides)], process_env,
                        logs / f"process{index}.log")

    def _start(self, command, env, log):
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "w")
        self.logs.append(log)
        self.processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def output(self):
        text = "\n".join(log.read_text() for log in self.logs)
        if BACKEND == "torch":  # torchrun's --tee copies each worker's output into its log dir
            for path in sorted(self.logs[0].parent.glob("torchrun/**/*")):
                if path.is_file():
                    text += f"\n--- {path.name}\n" + path.read_text(errors="replace")
        return text

    def worker_outputs(self):
        """Each process's own output (torch: from torchrun's per-rank files)."""
        if BACKEND != "torch":
            return [log.read_text() for log in self.logs]
        outputs = []
        for rank in range(2):
            files = sorted(self.logs[0].parent.glob(f"torchrun/**/{rank}/std*.log"))
            outputs.append("".join(p.read_text(errors="replace") for p in files))
        return outputs

    def wait(self, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"the job did not end within {timeout} s:\n{self.output()[-6000:]}")
        return [process.returncode for process in self.processes]

    def wait_for(self, text, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline or all(p.poll() is not None for p in self.processes):
                self.kill()
                pytest.fail(f"{text!r} never appeared:\n{self.output()[-6000:]}")
            time.sleep(0.1)

    def signal_worker(self, index, signum):
        """Sends `signum` to process `index` of the job (torch: the rank's worker process)."""
        if BACKEND != "torch":
            self.processes[index].send_signal(signum)
            return
        children = subprocess.run(["pgrep", "-P", str(self.processes[0].pid)],
                                  capture_output=True, text=True).stdout.split()
        for pid in map(int, children):  # torchrun's workers: the one whose RANK is `index`
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={index}".encode() in environ:
                os.kill(pid, signum)
                return
        pytest.fail(f"no worker of rank {index} among torchrun's children {children}")

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def jobs():
    started = []
    yield lambda *args: started.append(Job(*args)) or started[-1]
    for job in started:
        job.kill()


def _final_weights(workdir):
    path = checkpointing.checkpoint_path(os.path.join(workdir, "checkpoints"), TOTAL_STEPS)
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.update({name: item[()]})
                        if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(workdir, job) of an uninterrupted two-process job."""
    workdir = tmp_path_factory.mktemp("finished")
    job = Job(workdir / "w", workdir / "logs")
    try:
        codes = job.wait()
    finally:
        job.kill()
    assert codes == [0] * len(codes), job.output()[-6000:]
    return workdir / "w", job


def test_two_processes_train_the_tiny_config_and_export(finished):
    workdir, job = finished
    assert (workdir / "export" / "backbone.keras").is_file()
    if BACKEND != "torch":
        assert (workdir / "export" / "saved_model" / "saved_model.pb").is_file()
    assert json.loads((workdir / "config.json").read_text())["batch_size"] == 32
    steps = [step for step, _ in checkpointing.list_checkpoints(str(workdir / "checkpoints"))]
    assert steps[-1] == TOTAL_STEPS
    weights = _final_weights(workdir)
    assert all(np.all(np.isfinite(value)) for value in weights.values())


def test_only_process_0_writes_and_prints(finished):
    workdir, job = finished
    assert len(list((workdir / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    first, second = job.worker_outputs()
    assert f"step {TOTAL_STEPS}/{TOTAL_STEPS}" in first and "Saved the backbone" in first
    assert "step 1/" not in second and "Saved the backbone" not in second
    assert not list(workdir.rglob("*.tmp*")) and not list(workdir.rglob("*partial*"))


def _assert_preempted(job, codes):
    """Every process exited PREEMPTED after its checkpoint. torchrun itself exits 1 when a worker
    exits non-zero, naming each worker's status in its report."""
    if BACKEND == "torch":
        assert codes == [1], job.output()[-6000:]
        assert job.output().count(f"exitcode  : {exit_codes.PREEMPTED}") >= 1, job.output()[-6000:]
        assert all("Stopped by SIGTERM after step" in out for out in job.worker_outputs())
        return
    assert codes == [exit_codes.PREEMPTED] * len(codes), job.output()[-6000:]
    assert all("Stopped by SIGTERM after step" in out for out in job.worker_outputs())


def test_sigterm_stops_both_processes_and_the_relaunch_reaches_the_same_weights(
        finished, tmp_path, jobs):
    workdir = tmp_path / "w"
    job = jobs(workdir, tmp_path / "logs1")
    job.wait_for("step 8/")
    job.signal_worker(1, signal.SIGTERM)  # the notice reaches one host only
    codes = job.wait()
    _assert_preempted(job, codes)
    stopped = checkpointing.latest_checkpoint(str(workdir / "checkpoints"))[0]
    assert 8 <= stopped < TOTAL_STEPS
    relaunch = jobs(workdir, tmp_path / "logs2")
    codes = relaunch.wait()
    assert codes == [0] * len(codes), relaunch.output()[-6000:]
    assert f"Resuming from step {stopped}" in relaunch.output()
    expected, actual = _final_weights(finished[0]), _final_weights(workdir)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_a_second_job_is_refused_and_a_killed_peer_ends_the_job(tmp_path, jobs):
    workdir = tmp_path / "w"
    # Slow steps, so that the first job is still training when the second starts.
    first = jobs(workdir, tmp_path / "logs1", "--config.epochs=40")
    first.wait_for("step 3/")
    second = jobs(workdir, tmp_path / "logs2")
    codes = second.wait()
    if BACKEND == "torch":  # torchrun exits 1 and names each worker's status
        assert codes == [1], second.output()[-6000:]
        assert f"exitcode  : {exit_codes.INVALID_CONFIG}" in second.output(), second.output()
    else:
        assert exit_codes.INVALID_CONFIG in codes and 0 not in codes, second.output()[-6000:]
    assert "job.lock" in second.output()
    first.signal_worker(1, signal.SIGKILL)
    killed_at = time.monotonic()
    codes = first.wait(timeout=4 * PEER_TIMEOUT_S + 60)
    assert all(code != 0 for code in codes), first.output()[-6000:]
    assert time.monotonic() - killed_at < 4 * PEER_TIMEOUT_S + 60
