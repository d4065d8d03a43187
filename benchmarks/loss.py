"""Times VICReg's loss plus gradient with the dense and the Gram covariance, and their ratio.

    KERAS_BACKEND=tensorflow python benchmarks/loss.py            # d = 8192, N in {256, 512, 2048}
    python benchmarks/loss.py --all_backends                       # one subprocess per backend

The dense form builds the d x d covariance (O(N d^2)); the Gram form gets the same value from the
N x N Gram matrix (O(N^2 d)); "auto" picks the Gram form exactly when N < d.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def _loss_and_grad_fn(method):
    """A compiled function of (z_a, z_b) returning the loss and its gradients, per backend."""
    import keras

    from keras_vicreg import vicreg_loss

    def loss(z_a, z_b):
        return vicreg_loss(z_a, z_b, covariance=method)["loss"]

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(z_a, z_b):
            with tf.GradientTape() as tape:
                tape.watch([z_a, z_b])
                value = loss(z_a, z_b)
            return value, tape.gradient(value, [z_a, z_b])

        return step
    import torch

    def step(z_a, z_b):
        z_a, z_b = z_a.detach().requires_grad_(), z_b.detach().requires_grad_()
        value = loss(z_a, z_b)
        return value, torch.autograd.grad(value, [z_a, z_b])

    return step


def _to_backend(array):
    import keras

    return keras.ops.convert_to_tensor(array)


def _block(result):
    import keras

    value = result[0]
    return float(keras.ops.convert_to_numpy(value))


def time_method(method, n, d, repeats):
    rng = np.random.default_rng(0)
    z_a = _to_backend(rng.normal(size=(n, d)).astype("float32"))
    z_b = _to_backend(rng.normal(size=(n, d)).astype("float32"))
    step = _loss_and_grad_fn(method)
    value = _block(step(z_a, z_b))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(step(z_a, z_b))
        times.append(time.perf_counter() - start)
    return min(times), value


def run(width, batch_sizes, repeats):
    import keras

    from keras_vicreg.losses import resolve_covariance_method

    print(f"backend: {keras.backend.backend()}, d = {width}, cores: {os.cpu_count()}, "
          f"best of {repeats} after a warm-up (loss + gradient, float32)\n")
    print("| N | dense (s) | gram (s) | dense / gram | auto picks | values agree |")
    print("|---|---|---|---|---|---|")
    for n in batch_sizes:
        dense, dense_value = time_method("dense", n, width, repeats)
        gram, gram_value = time_method("gram", n, width, repeats)
        agree = abs(dense_value - gram_value) <= 1e-5 * abs(dense_value)
        print(f"| {n} | {dense:.3f} | {gram:.3f} | {dense / gram:.1f}x | "
              f"{resolve_covariance_method('auto', n, width)} | {agree} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[256, 512, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--all_backends", action="store_true")
    args = parser.parse_args()
    if args.all_backends:
        for backend in ("tensorflow", "jax", "torch"):
            command = [sys.executable, __file__, "--width", str(args.width), "--repeats",
                       str(args.repeats), "--batch_sizes", *map(str, args.batch_sizes)]
            subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend}, check=True)
            print()
        return
    run(args.width, args.batch_sizes, args.repeats)


if __name__ == "__main__":
    main()
