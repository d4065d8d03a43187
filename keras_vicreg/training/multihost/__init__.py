"""Several processes (hosts) training one model: each backend's own engine behind one interface.

A job of P processes, each with its own devices, trains one VICReg model on a global batch of
`config.batch_size` pairs, each process reading its own shard of it. The engines:

- JAX (`jax_hosts`): `keras.distribution.initialize()` from KERAS_DISTRIBUTION_JOB_ADDRESSES,
  KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID (on Cloud TPU, from the TPU
  environment), then `keras.distribution.DataParallel` over every process's devices.
- TensorFlow (`tensorflow_hosts`): `tf.distribute.MultiWorkerMirroredStrategy` from TF_CONFIG.
- PyTorch (`torch_hosts`): `torch.distributed` from torchrun's variables (RANK, WORLD_SIZE,
  MASTER_ADDR, MASTER_PORT), NCCL on GPUs and gloo on CPUs.

Each backend module provides the same functions, which this package re-exports for the current
Keras backend:

    process_index() -> int         this process's index, 0 .. process_count() - 1
    process_count() -> int         the number of processes of the job (1 when not distributed)
    any_process(flag) -> bool      True on every process when `flag` is True on any (collective:
                                   every process must call it, in the same order)
    barrier()                      returns once every process has reached it (collective)

Process 0 alone writes the workdir (`is_writer`); the others wait at a `barrier` where they read
what it wrote.
"""

import contextlib
import importlib

import keras


def _backend_module():
    backend = keras.backend.backend()
    return importlib.import_module(f"keras_vicreg.training.multihost.{backend}_hosts")


def process_index():
    """This process's index in the job (0 when the job is one process)."""
    return _backend_module().process_index()


def process_count():
    """The number of processes of the job (1 when the job is one process)."""
    return _backend_module().process_count()


def is_writer():
    """Whether this process writes the workdir: process 0."""
    return process_index() == 0


def any_process(flag):
    """True on every process when `flag` is True on any; every process must call it."""
    if process_count() == 1:
        return bool(flag)
    return _backend_module().any_process(bool(flag))


def barrier():
    """Waits for every process of the job; a no-op for a job of one process."""
    if process_count() > 1:
        _backend_module().barrier()


class WriterFailedError(RuntimeError):
    """Process 0 failed at a step that only it runs; the other processes stop with this."""


def on_writer(function, *args, **kwargs):
    """Runs `function` on process 0 only; if it raises there, every process raises.

    For the work only process 0 does (taking the workdir's lock, writing config.json): the others
    must not go on to the next collective while process 0 stops, or they would wait for it.

    Returns:
        `function`'s result on process 0; None on the others.

    Raises:
        What `function` raised, on process 0; `WriterFailedError` on the others.
    """
    result, error = None, None
    if is_writer():
        try:
            result = function(*args, **kwargs)
        except Exception as caught:  # re-raised below, after the others have been told
            error = caught
    if any_process(error is not None):
        if error is not None:
            raise error
        raise WriterFailedError(
            f"Process 0 stopped at {getattr(function, '__name__', function)!r}: its output says "
            f"why. This is process {process_index()} of {process_count()}."
        )
    return result


def local_scope():
    """A scope for Keras' saving and loading on one process of a multi-process job.

    JAX: without the Keras distribution (`jax_hosts.local_scope`), where creating a variable is a
    collective that process 0 saving alone would wait in for ever. A no-op elsewhere.
    """
    if keras.backend.backend() == "jax" and process_count() > 1:
        return _backend_module().local_scope()
    return contextlib.nullcontext()


def broadcast_weights(model):
    """Gives every process process 0's weights and optimizer state (PyTorch, whose processes each
    hold their own copy); a no-op on JAX and TensorFlow, whose engines keep one copy in sync."""
    if process_count() > 1 and keras.backend.backend() == "torch":
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        _backend_module().broadcast_weights(model)


def input_context():
    """This process's shard of the input, for `two_view_dataset(..., input_context=...)`; None
    for a job of one process.

    Each process reads every `process_count()`-th example, from its index on, in batches of the
    global batch size over `process_count()`; its augmentation seeds fold in its index.
    """
    count = process_count()
    if count == 1:
        return None
    import tensorflow as tf

    return tf.distribute.InputContext(
        num_input_pipelines=count, input_pipeline_id=process_index(), num_replicas_in_sync=count
    )
