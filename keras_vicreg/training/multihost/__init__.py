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
