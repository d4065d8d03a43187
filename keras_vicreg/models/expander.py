"""The VICReg expander (the "projector"): an MLP described by a spec string such as "8192-8192-8192".

Every layer but the last is Dense (with bias) -> BatchNormalization -> ReLU; the last is a Dense layer
without bias, with no BatchNormalization and no activation, as in the released code. BatchNormalization
uses PyTorch's defaults (epsilon 1e-5, momentum 0.1, which is Keras momentum 0.9).
"""

import importlib

import keras


def parse_spec(spec):
    """Returns the layer widths of a spec string, e.g. "8192-8192-8192" -> (8192, 8192, 8192)."""
    if not isinstance(spec, str):
        raise ValueError(
            'The expander spec must be a string of positive widths joined by "-", such as '
            f'"8192-8192-8192". Received: spec={spec!r}'
        )
    widths = []
    for part in spec.split("-"):
        if not part.strip().isdigit() or int(part) <= 0:
            raise ValueError(
                'The expander spec must be positive integer widths joined by "-", such as '
                f'"8192-8192-8192" or "2048". Received: spec={spec!r}'
            )
        widths.append(int(part))
    return tuple(widths)


def build_expander(spec, *, batch_norm=True, synchronized=False, name="expander"):
    """Builds the expander MLP from its spec string.

    Args:
        spec: widths joined by "-", e.g. "8192-8192-8192" (the paper) or "2048-2048-2048".
        batch_norm: put BatchNormalization after each hidden Dense layer (the paper's default; the
            ablation without it is `batch_norm=False`).
        synchronized: synchronise the BatchNormalization statistics across replicas
            (TensorFlow distribution strategies, and on PyTorch the processes of a torchrun job:
            `torch_batch_norm.synchronize`; the released code uses SyncBatchNorm).
        name: the model's name.

    Returns:
        A `keras.Sequential` mapping representations to embeddings of the last width.
    """
    widths = parse_spec(spec)
    layers = []
    for index, width in enumerate(widths[:-1]):
        layers.append(keras.layers.Dense(width, name=f"dense_{index}"))
        if batch_norm:
            layers.append(_batch_norm(synchronized, f"bn_{index}"))
        layers.append(keras.layers.ReLU(name=f"relu_{index}"))
    layers.append(keras.layers.Dense(widths[-1], use_bias=False, name=f"dense_{len(widths) - 1}"))
    return keras.Sequential(layers, name=name)


def _batch_norm(synchronized, name):
    """BatchNormalization with PyTorch's defaults, synchronised across replicas if asked."""
    # Keras refuses synchronized=True outside TensorFlow; PyTorch synchronises its own way.
    on_torch = keras.backend.backend() == "torch"
    layer = keras.layers.BatchNormalization(
        epsilon=1e-5, momentum=0.9, synchronized=synchronized and not on_torch, name=name
    )
    if synchronized and on_torch:
        importlib.import_module("keras_vicreg.models.torch_batch_norm").synchronize(layer)
    return layer
