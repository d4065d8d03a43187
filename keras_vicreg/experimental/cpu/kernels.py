"""Switching a model between the experimental CPU kernels and Keras' stock layers, in place.

Both directions only change the classes of layers (`layer_classes.swap_class`): weights, names,
configs and the graph stay, so a model can train with the CPU kernels and be saved with stock
layers, and the two compute the same to float rounding.
"""

import keras

from keras_vicreg.experimental.cpu import layer_classes
from keras_vicreg.experimental.cpu.batch_norm import FusedBatchNormalization
from keras_vicreg.experimental.cpu.batch_norm import fuse_batch_norm
from keras_vicreg.experimental.cpu.conv import MatmulGradConv2D
from keras_vicreg.experimental.cpu.conv import use_matmul_filter_gradients


def use_cpu_kernels(model, *, batch_norm=True, conv=True):
    """Gives `model`'s layers the experimental CPU kernels, in place.

    Args:
        model: a Keras model or layer (nested models included).
        batch_norm: make every plain `BatchNormalization` a `FusedBatchNormalization`
            (TensorFlow's fused kernel on the TensorFlow backend, Keras' computation elsewhere).
        conv: make every plain stride-1 `Conv2D` a `MatmulGradConv2D` (filter gradients of small
            maps as one matrix product on a CPU with TensorFlow, Keras' Conv2D elsewhere).

    Returns:
        A dict with the number of layers converted, by kind: {"batch_norm": n, "conv": m}.
    """
    return {
        "batch_norm": fuse_batch_norm(model) if batch_norm else 0,
        "conv": use_matmul_filter_gradients(model) if conv else 0,
    }


def use_stock_layers(model):
    """Undoes `use_cpu_kernels`: Keras' own `BatchNormalization` and `Conv2D` classes again.

    A model saved afterwards loads with `keras.saving.load_model` and no keras_vicreg import.

    Returns:
        The number of layers changed back.
    """
    return layer_classes.swap_class(
        model, FusedBatchNormalization, keras.layers.BatchNormalization
    ) + layer_classes.swap_class(model, MatmulGradConv2D, keras.layers.Conv2D)
