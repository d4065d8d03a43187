"""VICReg's loss on the global batch when a TensorFlow strategy or torchrun splits the batch.

VICReg's variance and covariance are statistics of the whole batch; computed over each replica's
own rows they would silently change the method. `VICReg.compute_terms` therefore gathers every
replica's embeddings (`cross_replica_gather`) and takes the loss of the global batch
(`global_batch_vicreg_loss`), each replica computing only its own block of rows of the covariance.
The replicas are a TensorFlow strategy's, or on PyTorch the processes of a `torch.distributed`
group (`torch_global_batch`, one process per replica). On one device and on JAX (one SPMD program
over the global batch), both are plain `vicreg_loss`. This is the model's half of distribution;
choosing and scoping a strategy is `keras_vicreg.training.distribute`'s.
"""

import importlib
import inspect

import keras
import tensorflow as tf

from keras_vicreg import losses

# The keyword options of vicreg_loss and their defaults, read from its signature (one definition).
_VICREG_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(losses.vicreg_loss).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


def _multi_replica_context():
    """The TensorFlow replica context when inside one with several replicas, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _torch_group():
    """`torch_global_batch` when a `torch.distributed` group of several processes runs, else None.

    Imported on the torch backend only, so that other backends never import torch.
    """
    if keras.backend.backend() != "torch":
        return None
    group = importlib.import_module("keras_vicreg.models.torch_global_batch")
    return group if group.distributed() else None


def cross_replica_gather(z):
    """The rows of every replica, concatenated in replica order; `z` itself outside replicas.

    Under a TensorFlow strategy with several replicas (inside `strategy.run`, which is where
    `train_step` runs), each replica gets the whole global batch. The gradient of the gather is the
    adjoint of that copy: the upstream gradients of every replica are summed (all-reduce) and each
    replica keeps the rows it contributed. On PyTorch with several processes
    (`torch_global_batch.gather`), the same across processes. On one device, and on JAX (whose SPMD
    program already sees the global batch), it is the identity.

    Args:
        z: this replica's rows, shape (n, ...).

    Returns:
        The global batch, shape (sum of the replicas' n, ...).
    """
    torch_group = _torch_group()
    if torch_group is not None:
        return torch_group.gather(z)
    context = _multi_replica_context()
    if context is None:
        return z
    replicas = context.num_replicas_in_sync

    @tf.custom_gradient
    def gather(local):
        rows = tf.shape(local)[:1]
        # The all-gather loses the static shape. Where this replica's rows are static, the global
        # batch is `replicas` times as long (checked at run time: an uneven split raises instead of
        # mis-slicing), which keeps N static for the loss and for XLA.
        rows_static = local.shape[0]
        gathered = tf.ensure_shape(
            context.all_gather(local, axis=0),
            [None if rows_static is None else replicas * rows_static, *local.shape[1:]],
        )

        def grad(upstream):
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, upstream)
            # This replica's first row: the rows of the replicas before it (static shapes, for XLA).
            before = tf.range(replicas) < context.replica_id_in_sync_group
            start = tf.reduce_sum(tf.where(before, context.all_gather(rows, axis=0), 0))
            begin = [start] + [0] * (local.shape.rank - 1)
            return tf.slice(summed, begin, tf.shape(local))

        return gathered, grad

    return gather(z)


def global_batch_vicreg_loss(z_a, z_b, **options):
    """`losses.vicreg_loss` of the gathered embeddings, the covariance split over the replicas.

    Outside a multi-replica TensorFlow context or a `torch.distributed` group of several processes
    this is `losses.vicreg_loss(z_a, z_b, **options)`. Inside one, `z_a` and `z_b` are the global
    batch (see `cross_replica_gather`), every replica
    computes the invariance and variance terms on it (O(N d)), and only its own block of rows of the
    covariance term (`losses.covariance_loss_block`); the blocks' shares are summed across
    replicas. Every replica returns the same terms, equal to those of one device on the global
    batch.

    Args:
        z_a: the first view's embeddings of the global batch, shape (N, d).
        z_b: the second view's, same shape.
        **options: the keyword arguments of `losses.vicreg_loss`.

    Returns:
        The dict of `losses.vicreg_loss`.
    """
    torch_group = _torch_group()
    context = None if torch_group is not None else _multi_replica_context()
    if torch_group is None and context is None:
        return losses.vicreg_loss(z_a, z_b, **options)
    unknown = set(options) - set(_VICREG_DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown vicreg_loss options {sorted(unknown)}; the options are "
            f"{sorted(_VICREG_DEFAULTS)}. Received: options={options!r}"
        )
    options = {**_VICREG_DEFAULTS, **options}
    gamma, eps, method = options["gamma"], options["eps"], options["covariance"]
    invariance = losses.invariance_term(z_a, z_b, options["invariance"])
    variance = (losses.variance_loss(z_a, gamma, eps) + losses.variance_loss(z_b, gamma, eps)) / 2.0
    if torch_group is not None:
        block, blocks = torch_group.rank_and_size()
    else:
        block, blocks = context.replica_id_in_sync_group, context.num_replicas_in_sync
    share = losses.covariance_loss_block(z_a, block, blocks, method) + losses.covariance_loss_block(
        z_b, block, blocks, method
    )
    if torch_group is not None:
        covariance = torch_group.all_reduce_sum(share)
    else:
        covariance = context.all_reduce(tf.distribute.ReduceOp.SUM, share)
    loss = (
        options["sim_coeff"] * invariance
        + options["std_coeff"] * variance
        + options["cov_coeff"] * covariance
    )
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}
