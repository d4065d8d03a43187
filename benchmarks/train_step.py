"""Steps per second of VICReg's training step (`fit`) on each Keras backend, with and without XLA.

    python benchmarks/train_step.py                                  # everything: a table
    python benchmarks/train_step.py --models resnet18_32px --backends jax --steps 10
    python benchmarks/train_step.py --models demo --backends tensorflow --intra_op_threads 1

Fixed configurations, LARS, random images, batches already in memory:

- resnet18_32px: ResNet-18 with the small stem, 32 x 32 x 3, batch 128, expander 2048-2048-2048.
- resnet50_96px: ResNet-50 (keras-hub, ImageNet stem), 96 x 96 x 3, batch 32, 8192-8192-8192.
- demo: the Fashion-MNIST demo's model (configs/fashion_mnist_demo.py): the narrow ResNet-18
  (16-32-64-256) with the small stem, 28 x 28 x 1, batch 256, expander 1024-1024-1024, in
  `mixed_bfloat16` where the CPU has bfloat16 instructions, with the experimental CPU kernels
  (`keras_vicreg.experimental.cpu.use_cpu_kernels`), as the demo config has them.
- demo_keras_bn: the same with Keras' own BatchNormalization instead of `FusedBatchNormalization`
  (`keras_vicreg.experimental.cpu.batch_norm`), to show what the fused kernel saves.
- demo_conv: the same with TensorFlow's own filter gradients instead of `MatmulGradConv2D`'s
  (`keras_vicreg.experimental.cpu.conv`) on the last stage's 4 x 4 maps.

All but demo and demo_keras_bn train in float32. `--intra_op_threads N` sets TensorFlow's threads
per op (the demo config's `tf_intra_op_threads`); the other backends ignore it.
Each (backend, model, compilation) runs in its own process, since a Keras backend is chosen once per
process. "compiled" is `jit_compile=True`: XLA for TensorFlow and JAX, `torch.compile` for PyTorch;
"not compiled" is a `tf.function` graph (TensorFlow), op-by-op dispatch (JAX) or eager PyTorch.
Steps per second are measured over `--steps` steps after `--warmup` steps (which include the
compilation, reported apart). The 1-minute load average of the machine is printed with each row:
on a shared machine the figures are only comparable when it stays below the number of cores.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

_DEMO = dict(depth=18, stem="small", size=28, channels=1, batch=256, expander="1024-1024-1024",
             filters=(16, 32, 64, 256), bfloat16=True)
MODELS = {
    "resnet18_32px": dict(depth=18, stem="small", size=32, batch=128, expander="2048-2048-2048"),
    "resnet50_96px": dict(depth=50, stem="imagenet", size=96, batch=32, expander="8192-8192-8192"),
    "demo": {**_DEMO, "cpu_kernels": True},
    "demo_keras_bn": {**_DEMO, "cpu_kernels": True, "fused_batch_norm": False},
    "demo_conv": {**_DEMO, "cpu_kernels": True, "matmul_filter_gradients": False},
}
BACKENDS = ("tensorflow", "jax", "torch")


def measure(model_name, jit_compile, warmup, steps, intra_op_threads=None):
    """Runs `warmup + steps` training steps in this process; returns the measurements."""
    import keras
    import tensorflow as tf

    if intra_op_threads and keras.backend.backend() == "tensorflow":
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)

    from keras_vicreg import LARS
    from keras_vicreg import VICReg
    from keras_vicreg.experimental.cpu import use_cpu_kernels
    from keras_vicreg.models import backbones
    from keras_vicreg.config.pretraining import cpu_has_bfloat16

    spec = MODELS[model_name]
    size, channels, batch = spec["size"], spec.get("channels", 3), spec["batch"]
    if spec.get("bfloat16") and cpu_has_bfloat16():
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    backbone = backbones.resnet(
        spec["depth"], stem=spec["stem"], input_shape=(size, size, channels),
        filters=spec.get("filters", (64, 128, 256, 512)),
    )
    if spec.get("cpu_kernels"):
        use_cpu_kernels(backbone, batch_norm=spec.get("fused_batch_norm", True),
                        conv=spec.get("matmul_filter_gradients", True))
    model = VICReg(backbone, spec["expander"])
    model.compile(optimizer=LARS(0.1), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    views = tuple(
        rng.normal(size=(batch, size, size, channels)).astype("float32") for _ in range(2)
    )
    dataset = tf.data.Dataset.from_tensors(views).repeat()

    ends = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    load = os.getloadavg()[0]
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, callbacks=[clock], verbose=0)
    seconds_per_step = (ends[-1] - ends[warmup - 1]) / steps
    return {
        "backend": keras.backend.backend(),
        "model": model_name,
        "compiled": jit_compile,
        "dtype_policy": keras.mixed_precision.dtype_policy().name,
        "steps_per_second": 1.0 / seconds_per_step,
        "first_steps_seconds": ends[warmup - 1] - start,
        "load_average": load,
        "intra_op_threads": intra_op_threads,
    }


def _run_child(backend, model_name, jit_compile, args):
    command = [sys.executable, os.path.abspath(__file__), "--child", "--models", model_name,
               "--backends", backend, "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--compiled", "1" if jit_compile else "0"]
    if args.intra_op_threads:
        command += ["--intra_op_threads", str(args.intra_op_threads)]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True,
                                timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {args.timeout} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"failed: {last[:80]}"}
    return json.loads(lines[-1])


def _cell(row):
    if "error" in row:
        return row["error"], ""
    return (f"{row['steps_per_second']:.3g} ({1.0 / row['steps_per_second']:.2f} s)",
            f"{row['first_steps_seconds']:.0f} s, load {row['load_average']:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--warmup", type=int, default=2, help="steps before timing (compile)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    parser.add_argument("--intra_op_threads", type=int,
                        help="TensorFlow's threads per op (default: one per core)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.models[0], bool(args.compiled), args.warmup, args.steps,
                                 args.intra_op_threads)))
        return

    print(f"{os.cpu_count()} CPU cores; {args.steps} timed steps after {args.warmup} warm-up "
          "steps; steps/s (seconds per step); warm-up time and 1-min load average at start\n")
    print("| model | backend | not compiled | compiled (XLA / torch.compile) | warm-up, load |")
    print("|---|---|---|---|---|")
    fastest = {}
    for model_name in args.models:
        for backend in args.backends:
            rows = [_run_child(backend, model_name, jit, args) for jit in (False, True)]
            cells = [_cell(row) for row in rows]
            notes = " / ".join(note for _, note in cells if note)
            print(f"| {model_name} | {backend} | {cells[0][0]} | {cells[1][0]} | {notes} |",
                  flush=True)
            for row in rows:
                if "error" not in row and row["steps_per_second"] > fastest.get(
                    model_name, {"steps_per_second": 0.0}
                )["steps_per_second"]:
                    fastest[model_name] = row
    print()
    for model_name, row in fastest.items():
        setting = "compiled" if row["compiled"] else "not compiled"
        print(f"Fastest on this CPU for {model_name}: {row['backend']}, {setting}, "
              f"{row['steps_per_second']:.3g} steps/s")


if __name__ == "__main__":
    main()
