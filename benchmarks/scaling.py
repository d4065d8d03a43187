r"""Pairs per second and peak memory of pretraining with 1 and 2 processes, on each backend.

    python benchmarks/scaling.py                               # every backend, 1 and 2 processes
    python benchmarks/scaling.py --backends jax --processes 1,2 --steps 60
    python benchmarks/scaling.py --gpu_step                    # the paper's step on one GPU

The CPU part runs `trainers/pretrain.py` as a user launches it: one process, then a job of
several processes on this machine with the backend's own launcher (JAX: the three
KERAS_DISTRIBUTION_* variables and `--strategy=data_parallel`; TensorFlow: TF_CONFIG and
`--strategy=multi_worker`; PyTorch: `torchrun --standalone` and `--strategy=data_parallel`). The
config is configs/tiny.py at a global batch of `--batch` pairs for `--steps` steps, every process
on its share of the cores; pairs per second are the global batch times the steps per second that
process 0 reports over the steps after the first `--warmup` (which compile), and peak memory is
each process's resident set (its `ru_maxrss`), summed over the job. On one machine the processes
share its cores, so this measures the overhead of the engine (collectives, gathers, the data
sharding), not a speed-up: the speed-up comes from hosts with their own cores and accelerators.

`--gpu_step` times the paper's step where an accelerator is present: ResNet-50 and a
8192-8192-8192 expander at 64 images per device (the paper's 2048 over 32 GPUs) in
mixed_bfloat16, `--gpu_steps` steps after warmup, printing pairs per second and peak device
memory, beside the paper's 11 h per 100 epochs on 32 V100s (about 100 pairs per second per GPU)
and 11.3 GB. Without an accelerator it says so and exits 0.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATEGY = {"jax": "data_parallel", "tensorflow": "multi_worker", "torch": "data_parallel"}
SPEED = re.compile(r"^step (\d+)/\d+ .*?([0-9.e+-]+) steps/s$", re.MULTILINE)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _arguments(workdir, strategy, batch, steps):
    return ["-m", "trainers.pretrain", "--config=configs/tiny.py", f"--workdir={workdir}",
            f"--strategy={strategy}", f"--config.batch_size={batch}",
            f"--config.num_examples={batch * steps}", f"--config.shuffle_buffer={batch * steps}",
            "--config.epochs=1", f"--config.checkpoint_every_steps={steps}",
            "--config.log_every_steps=1", f"--config.summary_every_steps={steps}"]


def _commands(backend, processes, workdir, batch, steps):
    """[(command, extra environment)] of the job's processes (one torchrun for PyTorch)."""
    strategy = "default" if processes == 1 else STRATEGY[backend]
    arguments = _arguments(workdir, strategy, batch, steps)
    if processes == 1:
        return [([sys.executable, *arguments], {})]
    if backend == "torch":
        return [([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={processes}", *arguments], {})]
    ports = [_free_port() for _ in range(processes)]
    commands = []
    for index in range(processes):
        if backend == "jax":
            env = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}",
                   "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes),
                   "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
        else:
            env = {"TF_CONFIG": json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": index}})}
        commands.append(([sys.executable, *arguments], env))
    return commands


def run_job(backend, processes, batch, steps, warmup):
    """{"pairs_per_s", "peak_rss_mib"} of one job; raises with its output if it fails."""
    with tempfile.TemporaryDirectory() as workdir:
        env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env.pop("XLA_FLAGS", None)
        started = []
        for command, extra in _commands(backend, processes, os.path.join(workdir, "w"), batch,
                                        steps):
            log = open(os.path.join(workdir, f"log{len(started)}"), "w+")
            process = subprocess.Popen(command, cwd=ROOT, env={**env, **extra}, stdout=log,
                                       stderr=subprocess.STDOUT)
            started.append((process, log))
        peak_kib = 0
        for process, _ in started:
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            peak_kib += usage.ru_maxrss  # KiB: the process's, or its largest child's (torchrun)
        outputs = []
        for _, log in started:
            log.seek(0)
            outputs.append(log.read())
        if any(process.returncode for process, _ in started):
            raise RuntimeError(f"{backend} x{processes} failed:\n" + "\n".join(outputs)[-4000:])
        speeds = [(int(step), float(speed)) for step, speed in SPEED.findall("\n".join(outputs))]
        timed = [speed for step, speed in speeds if step > warmup]
        if not timed:
            raise RuntimeError(f"no progress lines after step {warmup}:\n{outputs[0][-3000:]}")
        steps_per_s = len(timed) / sum(1.0 / speed for speed in timed)  # harmonic mean
        if backend == "torch" and processes > 1:
            peak_kib *= processes  # ru_maxrss is the largest worker's: every worker is alike
        return {"pairs_per_s": batch * steps_per_s, "peak_rss_mib": peak_kib / 1024}


def gpu_step(steps):
    """The paper's per-device step on one accelerator, if there is one."""
    import keras

    devices = [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")]
    if not devices:
        print(f"--gpu_step: no accelerator on this machine ({keras.backend.backend()} sees only "
              "CPUs); nothing measured.")
        return None
    import numpy as np

    import keras_vicreg

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    model = keras_vicreg.VICReg(keras_vicreg.backbones.resnet(50), "8192-8192-8192")
    model.compile(optimizer=keras_vicreg.LARS(0.3 * 64 / 256, weight_decay=1e-6))
    views = np.random.default_rng(0).normal(size=(2, 64, 224, 224, 3)).astype("float32")
    model.fit((views[0], views[1]), batch_size=64, epochs=3, verbose=0)  # compile, warm up
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch((views[0], views[1]))
    seconds = (time.perf_counter() - start) / steps
    return {"device": devices[0], "pairs_per_s": 64 / seconds, "peak_gib": _peak_device_gib()}


def _peak_device_gib():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) / 2**30
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gpu_step", action="store_true")
    parser.add_argument("--gpu_steps", type=int, default=20)
    args = parser.parse_args()
    if args.gpu_step:
        result = gpu_step(args.gpu_steps)
        if result:
            print(f"{result['device']}: ResNet-50 + 8192-8192-8192, 64 pairs, mixed_bfloat16: "
                  f"{result['pairs_per_s']:.0f} pairs/s, peak {result['peak_gib']:.1f} GiB "
                  "(paper: about 100 pairs/s per V100, 11.3 GB)")
        return
    print(f"| backend | processes | pairs/s | peak RSS, all processes (MiB) |  "
          f"(configs/tiny.py, batch {args.batch}, {args.steps} steps, {os.cpu_count()} cores)")
    print("|---|---:|---:|---:|")
    for backend in args.backends.split(","):
        for processes in (int(p) for p in args.processes.split(",")):
            result = run_job(backend, processes, args.batch, args.steps, args.warmup)
            print(f"| {backend} | {processes} | {result['pairs_per_s']:.0f} | "
                  f"{result['peak_rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
