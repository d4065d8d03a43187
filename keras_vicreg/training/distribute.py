"""Distribution: VICReg's variance and covariance on the global batch, on one device or many.

VICReg's variance and covariance are statistics of the whole batch; computing them over each
device's own rows silently changes the method. This module keeps them global on every backend:

- TensorFlow (`tf.distribute`: `mirrored`, `multi_worker`, `tpu`): inside `train_step` each
  replica's embeddings are gathered across replicas (`cross_replica_gather`, whose gradient returns
  each replica its own rows of the gradient summed over replicas). Each replica computes only its
  own block of rows of the covariance term (`losses.covariance_loss_block`) and the shares are
  summed across replicas, so no replica computes the whole term and its cost falls with the number
  of replicas. The train step divides the loss by the number of replicas, so that the gradients
  Keras sums across replicas equal the single-device gradient of the global-batch loss.
- JAX (`mirrored`: `keras.distribution.DataParallel` over every device JAX sees; `data_parallel`:
  the same over every device of several processes, `multihost.jax_hosts`): the step is one SPMD
  program over the global batch, so the loss already is the global-batch loss; XLA partitions
  it across the devices, the Gram covariance into blocks of rows (its FLOP count per device falls
  as 1/R: benchmarks/distributed_loss.py).
- PyTorch (`data_parallel`: one process per device, started by torchrun): `torch.distributed`
  (`keras_vicreg.training.multihost.torch_hosts`); each process reads its own shard of the input
  (`TorchDataParallel.input_context`), the embeddings are gathered across processes as on
  TensorFlow (`global_batch`) and the gradients averaged across them (`steps.torch_steps`).

The gather and the global-batch loss are the model's (`keras_vicreg.models.global_batch`,
re-exported here); this module chooses, scopes and checks the strategy they run under.

BatchNormalization must be synchronised across replicas too, or its statistics are per-device: a
`VICReg` built under a TensorFlow strategy of several replicas, or in a torchrun job of several
processes, synchronises all of its own (the backbone's included) unless `sync_batch_norm=False`;
`sync_batch_norm(model)` converts any other model (under JAX's SPMD the statistics are already
those of the global batch).

What is supported on TensorFlow, with Keras 3.15 and TensorFlow 2.21 (see docs/guide.md):
- global batches of one size, divisible by the number of replicas: batch with `drop_remainder=True`
  (the gather refuses replicas of different static sizes);
- `steps_per_execution=1` under MirroredStrategy and MultiWorkerMirroredStrategy: Keras fails with
  more (keras issue #19246), and the train step says so;
- `jit_compile` left to Keras, which turns XLA off under tf.distribute;
- MultiWorkerMirroredStrategy through `fit`, which fails under it for other models (keras issue
  #20585, tensorflow issue #72388) and which `VICReg` works around
  (`keras_vicreg.models.steps.tensorflow_steps`); `keras_vicreg.training.multihost` gives the
  workers' indices and collectives;
- TPUStrategy: written for, not tested here.
"""

import contextlib
import importlib

import keras

from keras_vicreg.models import batch_norm
from keras_vicreg.models.global_batch import cross_replica_gather  # noqa: F401
from keras_vicreg.models.global_batch import global_batch_vicreg_loss  # noqa: F401
from keras_vicreg.training.multihost import tensorflow_hosts

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu", "data_parallel")


def _torch_hosts():
    return importlib.import_module("keras_vicreg.training.multihost.torch_hosts")


class TorchDataParallel:
    """PyTorch's data parallelism over the processes of a torchrun job, as `get_strategy` gives it.

    It holds nothing: `torch.distributed` is the state. `num_replicas_in_sync` is the number of
    processes (one device each), `scope()` a no-op, and `input_context()` the
    `tf.distribute.InputContext` with which each process reads its own shard of the input, batches
    of `global batch / processes` pairs (`keras_vicreg.data.two_view_dataset(...,
    input_context=...)`).
    """

    @property
    def num_replicas_in_sync(self):
        return _torch_hosts().process_count()

    def scope(self):
        return contextlib.nullcontext()

    def input_context(self):
        """This process's `tf.distribute.InputContext`: one input pipeline per process."""
        from keras_vicreg.training import multihost

        return multihost.input_context()


def _check_name(name, tpu, devices):
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if tpu is not None and name != "tpu":
        raise ValueError(
            "`tpu` (the TPU's name or address) only goes with strategy='tpu'. "
            f"Received: strategy={name!r}, tpu={tpu!r}"
        )
    if devices is not None and name != "mirrored":
        raise ValueError(
            "`devices` only goes with strategy='mirrored'. "
            f"Received: strategy={name!r}, devices={devices!r}"
        )


def get_strategy(name="default", *, tpu=None, devices=None):
    """The distribution for a strategy name, for the current Keras backend.

    Create it first thing in a program (before building models or running any TensorFlow op), then
    build, compile and fit inside `strategy_scope(strategy)`.

    Args:
        name: "default" (one device), "mirrored" (all local GPUs, or `devices`), "multi_worker"
            (`tf.distribute.MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG` environment
            variable), "tpu" (`tf.distribute.TPUStrategy`) or "data_parallel": on JAX,
            `DataParallel` over every process's devices, each process feeding its own rows
            (this joins the job: `multihost.jax_hosts.initialize`); on PyTorch, the processes of a
            torchrun job (this joins their process group: `torch_hosts.initialize`).
        tpu: for "tpu", the TPU's name or grpc address given to `TPUClusterResolver` ("local" on
            a TPU VM); None reads the `TPU_NAME` environment variable.
        devices: for "mirrored", the devices to mirror over, e.g. ["/cpu:0", "/cpu:1"]; None:
            every local GPU (TensorFlow) or every device JAX sees.

    Returns:
        TensorFlow: a `tf.distribute.Strategy`. JAX: a `keras.distribution.DataParallel` for
        "mirrored" and "data_parallel", None for "default". PyTorch: None for "default", a
        `TorchDataParallel` for "data_parallel".
    """
    _check_name(name, tpu, devices)
    backend = keras.backend.backend()
    if name == "data_parallel" and backend == "tensorflow":
        raise ValueError(
            "strategy='data_parallel' is the JAX and PyTorch backends' multi-process engine; on "
            "TensorFlow use 'multi_worker' (several machines, TF_CONFIG) or 'mirrored' (one). "
            f"Received: strategy={name!r}, KERAS_BACKEND={backend!r}"
        )
    if backend == "tensorflow":
        return _tf_strategy(name, tpu, devices)
    if backend == "jax" and name in ("default", "mirrored"):
        return None if name == "default" else data_parallel(devices)
    if backend == "jax" and name == "data_parallel":
        from keras_vicreg.training.multihost import jax_hosts

        jax_hosts.initialize()
        return jax_hosts.data_parallel()
    if backend == "jax":
        raise ValueError(
            "On the JAX backend use strategy='mirrored' (keras.distribution.DataParallel over "
            "every device JAX sees, TPU cores included) or, for several processes, "
            "'data_parallel' (after multihost.jax_hosts.initialize()). "
            f"Received: strategy={name!r}"
        )
    if name == "data_parallel":
        _torch_hosts().initialize()
        return TorchDataParallel()
    if name != "default":
        raise ValueError(
            "On the torch backend, train on several devices or hosts with one process each: "
            "`torchrun --nproc_per_node=P ...` and strategy='data_parallel'. "
            f"Received: strategy={name!r}"
        )
    return None


def _tf_strategy(name, tpu, devices):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tensorflow_hosts.multi_worker_strategy()  # TF_CONFIG checked first
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def data_parallel(devices=None):
    """JAX: `keras.distribution.DataParallel` over `devices` (default: every device JAX sees).

    Use it as a scope (`with data_parallel().scope(): ...`) or with
    `keras.distribution.set_distribution`: the batch is split across the devices and the step is one
    SPMD program on the global batch, so VICReg's loss and BatchNormalization see the global batch.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "keras.distribution.DataParallel is for the JAX backend; on TensorFlow use "
            f"get_strategy('mirrored'). Received: KERAS_BACKEND={keras.backend.backend()!r}"
        )
    return keras.distribution.DataParallel(devices=devices or keras.distribution.list_devices())


def strategy_scope(strategy):
    """The scope to build, compile and fit in, for what `get_strategy` returned (None: no-op)."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def num_replicas(strategy=None):
    """The number of replicas (devices) the global batch is split over.

    Args:
        strategy: what `get_strategy` returned; None: the TensorFlow strategy in scope, if any.
    """
    if strategy is not None and hasattr(strategy, "num_replicas_in_sync"):
        return strategy.num_replicas_in_sync
    if strategy is not None:
        return strategy.device_mesh.devices.size
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def check_global_batch_size(global_batch_size, strategy=None):
    """Raises a ValueError unless the global batch splits evenly over the replicas."""
    replicas = num_replicas(strategy)
    if global_batch_size % replicas or global_batch_size // replicas < 1:
        raise ValueError(
            f"The global batch size must be a multiple of the number of replicas ({replicas}), "
            "so that every replica gets the same number of rows; batch the dataset with "
            f"drop_remainder=True. Received: global_batch_size={global_batch_size}"
        )


def sync_batch_norm(model):
    """Makes every BatchNormalization layer in `model` synchronised across replicas, in place.

    For a model other than a `VICReg` (which does it itself under a multi-replica strategy or in a
    torchrun job of several processes): its statistics are then those of the global batch. The
    weights and the layers are kept. On TensorFlow `get_config` reports `synchronized=True`, so a
    saved model reloads synchronised; on PyTorch the layers keep the stock class and config
    (`keras_vicreg.models.torch_batch_norm`), so a saved model reloads plain. Call it before
    `compile`/`fit`, whose traced step keeps the setting it saw. Not on JAX: under DataParallel
    the statistics already are those of the global batch.

    Args:
        model: a Keras model or layer (nested models are converted too).

    Returns:
        The number of BatchNormalization layers now synchronised.
    """
    if keras.backend.backend() == "jax":
        raise ValueError(
            "Synchronised BatchNormalization is a TensorFlow and PyTorch option; on JAX, "
            "DataParallel already normalises over the global batch. "
            f"Received: KERAS_BACKEND={keras.backend.backend()!r}"
        )
    return batch_norm.synchronize(model)
