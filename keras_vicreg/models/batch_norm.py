"""Synchronised BatchNormalization: every BatchNormalization of a model on the global batch.

Under a TensorFlow strategy with several replicas, a BatchNormalization layer normalises each
replica's rows with that replica's own statistics unless it is `synchronized`; VICReg then trains a
different model than on one device (the released code converts every BatchNorm to SyncBatchNorm).
`VICReg(sync_batch_norm=None)` resolves "auto" here, when the model is built: synchronised under a
TensorFlow strategy of more than one replica, or in a torch.distributed job of more than one
process (whose layers get the moments of `torch_batch_norm`). Under JAX's `DataParallel` the step
is one SPMD program on the global batch, whose statistics already are global.
"""

import importlib

import keras


def resolve(sync_batch_norm):
    """The `sync_batch_norm` setting in effect: True or False as given; None (auto): whether the
    TensorFlow strategy in scope has more than one replica, or the torch.distributed job more
    than one process (False on JAX)."""
    if sync_batch_norm is not None and not isinstance(sync_batch_norm, bool):
        raise ValueError(
            "`sync_batch_norm` must be None (auto: synchronised under a TensorFlow strategy of "
            f"several replicas), True or False. Received: sync_batch_norm={sync_batch_norm!r}"
        )
    if sync_batch_norm is not None:
        return sync_batch_norm
    if keras.backend.backend() == "torch":
        return importlib.import_module("keras_vicreg.models.torch_global_batch").distributed()
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync > 1


def synchronize(model):
    """Sets `synchronized = True` on every BatchNormalization layer in `model` (nested ones too).

    The weights and the layers are kept, and `get_config` then reports `synchronized=True`; a
    traced step keeps the setting it saw, so call it before the first `fit`.

    Returns:
        The number of BatchNormalization layers now synchronised.
    """
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        if keras.backend.backend() == "torch":  # Keras' torch layer refuses `synchronized`
            importlib.import_module("keras_vicreg.models.torch_batch_norm").synchronize(layer)
        else:
            layer.synchronized = True
    return len(layers)
