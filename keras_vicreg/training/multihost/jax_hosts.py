"""JAX: several processes (hosts) train one model as one SPMD program over all their devices.

Every process runs the same program. `initialize` joins the job through
`keras.distribution.initialize()` (which reads KERAS_DISTRIBUTION_JOB_ADDRESSES,
KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID; on Cloud TPU JAX reads the TPU
environment instead); after it `keras.distribution.list_devices()` lists every process's devices.
`data_parallel` then replicates the variables over all of them and splits the global batch: each
process feeds only its own rows (`multihost.input_context`: its shard of the input at the
per-process batch), and Keras' JAX trainer assembles the global batch from every process's rows
(`jax.make_array_from_process_local_data`), so the loss, its gradients and BatchNormalization's
statistics are those of the global batch, as on one device.

The collectives here (`any_process`, `barrier`) and the train step are collective: every process
must reach them, in the same order.
"""

import contextlib
import os

import jax
import keras
import numpy as np

_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
_VARIABLES = (_ADDRESSES, _NUM_PROCESSES, _PROCESS_ID)
_SETTING = (
    f"set all three of {_ADDRESSES} (the coordinator's host:port, or every process's host:port "
    f"separated by commas, the coordinator first), {_NUM_PROCESSES} (the number of processes) and "
    f"{_PROCESS_ID} (0 .. {_NUM_PROCESSES} - 1, 0 on the coordinator), the same addresses and "
    "number on every process"
)


def job_settings(environ=None):
    """The job's (addresses, num_processes, process_id) from the environment, checked.

    Runs before anything starts, so that a mistyped launch fails at once with a message naming the
    variable, instead of a process waiting for peers that never come.

    Args:
        environ: the environment to read; None: `os.environ`.

    Returns:
        None when none of the three variables is set (one process, or Cloud TPU), else the tuple.
    """
    environ = os.environ if environ is None else environ
    values = {name: environ.get(name, "").strip() for name in _VARIABLES}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ValueError(
            f"A multi-process job needs {', '.join(missing)} too: {_SETTING}. "
            f"Received: {_received(values)}"
        )
    count = _integer(values, _NUM_PROCESSES)
    index = _integer(values, _PROCESS_ID)
    if count < 1:
        raise ValueError(f"{_NUM_PROCESSES} must be at least 1. Received: {_received(values)}")
    if not 0 <= index < count:
        raise ValueError(
            f"{_PROCESS_ID} must be in 0 .. {_NUM_PROCESSES} - 1 = {count - 1}. "
            f"Received: {_received(values)}"
        )
    addresses = [address.strip() for address in values[_ADDRESSES].split(",")]
    if len(addresses) > 1 and len(addresses) != count:
        raise ValueError(
            f"{_ADDRESSES} lists {len(addresses)} addresses for {count} processes: give one per "
            f"process, or only the coordinator's. Received: {_received(values)}"
        )
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"{_ADDRESSES} holds host:port addresses, e.g. 10.0.0.1:1234. "
                f"Received: {_received(values)}"
            )
    return values[_ADDRESSES], count, index


def _integer(values, name):
    try:
        return int(values[name])
    except ValueError:
        raise ValueError(f"{name} must be an integer. Received: {_received(values)}") from None


def _received(values):
    return ", ".join(f"{name}={value!r}" for name, value in values.items())


def _on_cloud_tpu():
    """Whether JAX found TPU chips at import (then it reads the job from the TPU environment)."""
    from jax._src import cloud_tpu_init

    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def initialize(heartbeat_timeout_s=None):
    """Joins the job: `keras.distribution.initialize()`; call it before anything else uses JAX.

    A no-op (a job of one process) when none of the KERAS_DISTRIBUTION_* variables is set and the
    machine is no Cloud TPU VM; calling it again does nothing. The variables are checked first
    (`job_settings`). Cross-process collectives of CPU arrays use gloo (JAX's
    `jax_cpu_collectives_implementation`, unless the JAX_CPU_COLLECTIVES_IMPLEMENTATION environment
    variable chose another), which Keras' own initialisation (a psum over the CPU devices, for a
    common random seed) and CPU-only jobs need.

    When a process dies, JAX's coordination service (run by process 0) declares it dead once it has
    missed its heartbeats for `heartbeat_timeout_s`, and then aborts every other process (SIGABRT),
    whatever it is doing; when process 0 dies, the others abort at once. Keras'
    `initialize` keeps JAX's default timeout (100 s); a number here joins through
    `jax.distributed.initialize` with that timeout instead, followed by Keras' agreement on a
    common random seed, which is all `keras.distribution.initialize()` adds.

    Args:
        heartbeat_timeout_s: seconds without heartbeats after which a process counts as dead;
            None: JAX's default.

    Returns:
        The number of processes of the job.
    """
    if heartbeat_timeout_s is not None and (
        isinstance(heartbeat_timeout_s, bool)
        or not isinstance(heartbeat_timeout_s, int)
        or heartbeat_timeout_s < 1
    ):
        raise ValueError(
            "`heartbeat_timeout_s` is a whole number of seconds, at least 1, or None for JAX's "
            f"default. Received: heartbeat_timeout_s={heartbeat_timeout_s!r}"
        )
    settings = job_settings()
    if jax.distributed.is_initialized():
        return jax.process_count()
    if settings is None and not _on_cloud_tpu():
        return 1
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if heartbeat_timeout_s is None:
        keras.distribution.initialize()
        return jax.process_count()
    address, count, index = settings or (None, None, None)
    jax.distributed.initialize(
        coordinator_address=None if address is None else address.split(",")[0].strip(),
        num_processes=count,
        process_id=index,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
    )
    # What keras.distribution.initialize() runs after jax.distributed.initialize: one random seed
    # for every process (unless one was set), so that every process initialises the same weights.
    from keras.src.backend.jax.distribution_lib import initialize_rng

    initialize_rng()
    return jax.process_count()


def process_index():
    """This process's index in the job (0 when the job is one process)."""
    return jax.process_index()


def process_count():
    """The number of processes of the job (1 when the job is one process)."""
    return jax.process_count()


def any_process(flag):
    """True on every process when `flag` is True on any (a collective: every process calls it)."""
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(bool(flag)))
    return bool(np.any(flags))


def barrier(name="keras_vicreg_barrier"):
    """Returns once every process has reached the barrier of this name."""
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def data_parallel():
    """`keras.distribution.DataParallel` over every process's devices, each process feeding its rows.

    Call `initialize` first. `auto_shard_dataset=False`: each process's dataset already yields only
    its own rows, the per-process batch (`multihost.input_context`); Keras' JAX trainer then
    makes the global batch of the processes' rows in process order.
    """
    return keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False
    )


@contextlib.contextmanager
def local_scope():
    """A scope without a Keras distribution: for Keras' saving and loading, and one-process work.

    Under a multi-process distribution, creating a Keras variable places its value on every
    process's devices, a collective (JAX checks that every process passes the same value): on one
    process alone it waits for the others forever, and where the others are in another collective
    the two get mixed up. Keras' saving and loading create such variables the first time they run
    in a process (a reference `Optimizer`, to list the attributes they skip; then cached), so a
    process 0 that saves alone hangs, and a later `load_weights` on every process would run that
    collective on the processes that never saved only. Run every `save_weights`, `load_weights`
    and `save` inside this scope: saving reads the replicated variables without a collective (each
    process holds their whole value), and loading assigns every variable on every process, in the
    same order, keeping its layout. Anything else one process builds alone (metrics, a probe)
    belongs here too; running the distributed model (`predict`) is a collective in any scope.
    """
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)
