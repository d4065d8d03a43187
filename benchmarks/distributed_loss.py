"""Per-replica cost of VICReg's covariance term for 1, 2 and 4 replicas, against the released code.

    python benchmarks/distributed_loss.py                  # N = 2048, d = 8192, replicas 1, 2, 4
    python benchmarks/distributed_loss.py --n 256 --d 1024 # a quick look

TensorFlow on logical CPU devices (made before TensorFlow initialises). One view's covariance term
c(Z), forward and gradient with respect to the embeddings, three ways:

- released: the released code's way; every replica gathers the batch and computes the whole d x d
  covariance on it, 6 N d^2 FLOPs (forward Zc^T Zc, and the gradient's two matmuls of that size),
  whatever the number of replicas R.
- gram, whole: the same value from the N x N Gram matrix (what `covariance_loss` picks for N < d),
  still computed whole on every replica: 6 N^2 d FLOPs.
- ours: each replica computes its N/R rows of the Gram matrix against the gathered batch
  (`losses.covariance_loss_block`) and the shares are summed across replicas: 6 N^2 d / R FLOPs.

FLOPs count the matrix products only (the O(N d) centring and squares are left out). "per replica"
times run one replica's computation alone (the ways interleaved, the best of --repeats kept): what
each replica spends when each has a device of its own. "step" times (one run) run the distributed
step, gather included, on R logical devices, which here share the machine's CPU cores, so they do
not fall with R; they show what the replicas do in all.
Where JAX is installed, a last column gives XLA's own FLOP count per device for the same term under
batch sharding over R devices (JAX's DataParallel): XLA splits the Gram matrix into blocks of rows
by itself. Each measurement runs in a child process of its own.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _flops(n, d, replicas):
    """Forward + gradient matmul FLOPs per replica of each way."""
    return {
        "released": 6 * n * d * d,
        "gram": 6 * n * n * d,
        "ours": 6 * n * n * d // replicas,
    }


def _timed(fn, *args):
    """Wall time of one run of a tf.function, and its value."""
    start = time.perf_counter()
    value = float(np.asarray(fn(*args)[0]))  # waits for the result
    return time.perf_counter() - start, value


def _per_replica_fn(tf, losses, way, replicas):
    """One replica's share, value and gradient, run alone on the first logical device."""

    @tf.function
    def step(z):
        with tf.device("/cpu:0"), tf.GradientTape() as tape:
            tape.watch(z)
            if way == "released":
                value = losses.covariance_loss(z, "dense")
            elif way == "gram":
                value = losses.covariance_loss(z, "gram")
            else:
                value = losses.covariance_loss_block(z, 0, replicas, "gram")
        return value, tape.gradient(value, z)

    return step


def _distributed_fn(tf, distribute, losses, strategy, way):
    """The step on every replica: gather the rows, compute the term, take the gradient."""
    replicas = strategy.num_replicas_in_sync

    def replica(z_local):
        with tf.GradientTape() as tape:
            tape.watch(z_local)
            z = distribute.cross_replica_gather(z_local)
            if way == "released" or replicas == 1:
                value = losses.covariance_loss(z, "dense" if way == "released" else "gram")
            else:
                context = tf.distribute.get_replica_context()
                share = losses.covariance_loss_block(
                    z, context.replica_id_in_sync_group, replicas, "gram"
                )
                value = context.all_reduce(tf.distribute.ReduceOp.SUM, share)
        return value, tape.gradient(value, z_local)

    @tf.function
    def step(z_per_replica):
        value, gradient = strategy.run(replica, args=(z_per_replica,))
        # The gradients are returned too, or tf.function would prune their computation away.
        return strategy.experimental_local_results(value)[0], gradient

    return step


def _setup(devices):
    """TensorFlow with `devices` logical CPU devices, keras_vicreg, and the embeddings."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * devices
    )
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("This benchmark runs on TensorFlow: set KERAS_BACKEND=tensorflow.")
    return tf


def _embeddings(tf, args):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(args.n, args.d)) * rng.uniform(0.2, 1.5, size=args.d)
    return tf.constant(z.astype("float32"))


def _measure_per_replica(args):
    """Each way's per-replica time, runs interleaved (the best of `repeats` is kept), so that a
    load change on a shared machine hits every way alike."""
    tf = _setup(1)
    from keras_vicreg import losses

    z = _embeddings(tf, args)
    functions = {"released": _per_replica_fn(tf, losses, "released", 1),
                 "gram": _per_replica_fn(tf, losses, "gram", 1)}
    for replicas in args.replicas:
        functions[f"ours_{replicas}"] = _per_replica_fn(tf, losses, "ours", replicas)
    for fn in functions.values():
        fn.get_concrete_function(z)
    result = {name: float("inf") for name in functions}
    for _ in range(args.repeats):
        for name, fn in functions.items():
            seconds, result[f"value_{name}"] = _timed(fn, z)
            result[name] = min(result[name], seconds)
    result["tensorflow"] = tf.__version__
    return result


def _measure_step(args, replicas):
    """The distributed step's time on `replicas` logical devices, in a process of its own
    (collective groups of different sizes cannot share one)."""
    tf = _setup(replicas)
    from keras_vicreg.training import distribute
    from keras_vicreg import losses

    z, n = _embeddings(tf, args), args.n
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    z_split = strategy.experimental_distribute_values_from_function(
        lambda context: z[context.replica_id_in_sync_group * n // replicas:
                          (context.replica_id_in_sync_group + 1) * n // replicas]
    )
    result = {}
    for way in ("released", "ours"):
        fn = _distributed_fn(tf, distribute, losses, strategy, way)
        fn.get_concrete_function(z_split)
        result[way], result[f"value_{way}"] = _timed(fn, z_split)
    return result


def _xla_flops(args):
    """JAX: XLA's own count of the FLOPs per device of c(Z) and its gradient ("auto" form) under
    DataParallel-style batch sharding over R devices; compiled only, not run."""
    import jax
    from jax.sharding import Mesh
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec

    from keras_vicreg import losses

    step = jax.jit(jax.value_and_grad(lambda z: losses.covariance_loss(z, "auto")))
    flops = {}
    for replicas in args.replicas:
        mesh = Mesh(np.array(jax.devices()[:replicas]), ("batch",))
        z = jax.ShapeDtypeStruct(
            (args.n, args.d), np.float32, sharding=NamedSharding(mesh, PartitionSpec("batch"))
        )
        cost = step.lower(z).compile().cost_analysis()
        flops[replicas] = (cost[0] if isinstance(cost, list) else cost)["flops"]
    return flops


def _child(args, *flags, env=None):
    command = [sys.executable, __file__, *sys.argv[1:], *flags]
    child = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="global batch size N")
    parser.add_argument("--d", type=int, default=8192, help="embedding width d")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved timed runs of the per-replica computations (best kept)")
    parser.add_argument("--skip_step", action="store_true", help="per-replica times only")
    parser.add_argument("--child", choices=["per_replica", "step", "xla"], help=argparse.SUPPRESS)
    parser.add_argument("--step_replicas", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "per_replica":
        print(json.dumps(_measure_per_replica(args)))
    elif args.child == "step":
        print(json.dumps(_measure_step(args, args.step_replicas)))
    elif args.child == "xla":
        print(json.dumps(_xla_flops(args)))
    else:
        per_replica = _child(args, "--child", "per_replica")
        steps = {} if args.skip_step else {
            replicas: _child(args, "--child", "step", "--step_replicas", str(replicas))
            for replicas in args.replicas
        }
        xla = {}
        if importlib.util.find_spec("jax") is not None:
            env = dict(os.environ, KERAS_BACKEND="jax",
                       XLA_FLAGS=f"--xla_force_host_platform_device_count={max(args.replicas)}")
            xla = {int(k): v for k, v in _child(args, "--child", "xla", env=env).items()}
        _print_table(args, per_replica, steps, xla)


def _print_table(args, per_replica, steps, xla):
    n, d = args.n, args.d
    print(f"Covariance term c(Z) of one view, forward + gradient, N = {n}, d = {d}, float32, "
          f"TensorFlow {per_replica['tensorflow']} on {os.cpu_count()} CPU cores; best of "
          f"{args.repeats} interleaved runs per replica.\n")
    header = ("| replicas R | GFLOP per replica: released / Gram whole / ours "
              "| s per replica: released / Gram whole / ours |")
    if steps:
        header += " s per step, R logical CPUs sharing the cores: released / ours |"
    if xla:
        header += " GFLOP per device, XLA's count, JAX DataParallel |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    # Whole terms only: a replica's block ("ours" with R > 1) is a share of the term.
    values = [per_replica[name] for name in ("value_released", "value_gram", "value_ours_1")
              if name in per_replica]
    for replicas in args.replicas:
        flops = _flops(n, d, replicas)
        gflop = " / ".join(f"{flops[way] / 1e9:.1f}" for way in ("released", "gram", "ours"))
        line = (f"| {replicas} | {gflop} | {per_replica['released']:.2f} / "
                f"{per_replica['gram']:.2f} / {per_replica[f'ours_{replicas}']:.2f} |")
        if steps:
            step = steps[replicas]
            line += f" {step['released']:.2f} / {step['ours']:.2f} |"
            values += [step["value_released"], step["value_ours"]]
        if xla:
            line += f" {xla[replicas] / 1e9:.1f} |"
        print(line)
    reference = per_replica["value_released"]
    error = max(abs(v - reference) for v in values) / reference
    print(f"\nReleased and whole-Gram times do not depend on R: every replica computes the whole "
          f"term. 'ours' is one replica's block of rows. The values of every way, every R, agree "
          f"with the released code's to {error:.1e} (relative).")


if __name__ == "__main__":
    main()
