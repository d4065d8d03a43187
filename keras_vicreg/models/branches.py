"""The two branches of a VICReg model: checks, input shapes, copies, views, momentum encoder.

`VICReg` (`keras_vicreg.models.vicreg`) embeds view a through branch a and view b through branch b.
What it needs to check a branch, read its declared input, copy it with new weights, take a batch
apart into its two views and keep a momentum (EMA) encoder in step with branch a lives here, so that
the model itself reads as its forward pass, its loss and its config.
"""

import keras
from keras import ops


def check_layer(arg, layer):
    """Raises a ValueError unless `layer` (the argument `arg`) is a Keras layer or model."""
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            f"`{arg}` must be a keras.Model or keras layer mapping inputs to features. "
            f"Received: {arg}={layer!r}"
        )


def declared_input_shape(layer):
    """The input shape of a functional model built from `keras.Input`, else None."""
    inputs = getattr(layer, "inputs", None)
    return tuple(inputs[0].shape) if inputs else None


def is_shape_pair(shape):
    """Whether `shape` is a pair of shapes (one per branch) rather than one shape."""
    return (
        isinstance(shape, (tuple, list))
        and len(shape) == 2
        and all(isinstance(part, (tuple, list)) for part in shape)
    )


def fresh_copy(layer, name=None):
    """A layer of the same configuration as `layer`, with new weights (and `name`, if given)."""
    config = keras.saving.serialize_keras_object(layer)
    if name is not None:
        config["config"]["name"] = name
    return keras.saving.deserialize_keras_object(config)


def unpack_views(data):
    """Returns (view_a, view_b) from a batch of pairs, with a clear error for anything else."""
    if isinstance(data, (tuple, list)) and len(data) == 3 and data[1] is None and data[2] is None:
        data = data[0]  # train_on_batch passes (x, y, sample_weight)
    if isinstance(data, (tuple, list)) and len(data) == 1:
        data = data[0]  # Keras wraps x alone as (x,)
    if isinstance(data, dict) and {"view_a", "view_b"} <= set(data):
        return data["view_a"], data["view_b"]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise ValueError(
        "VICReg trains on pairs of views: give `fit` a dataset of (view_a, view_b) batches "
        "(see keras_vicreg.data). Received: a batch of structure "
        f"{keras.tree.map_structure(lambda t: tuple(getattr(t, 'shape', ())), data)}"
    )


def momentum_pairs(model, trainable_only):
    """(branch a variable, momentum encoder variable) pairs of a `VICReg`, in layer order."""
    online = model.backbone.weights + model.expander.weights
    target = model.backbone_b.weights + model.expander_b.weights
    return [(a, b) for a, b in zip(online, target) if a.trainable or not trainable_only]


def init_momentum_encoder(model):
    """Starts a `VICReg`'s momentum encoder at branch a's weights and makes it non-trainable."""
    for online, target in momentum_pairs(model, trainable_only=False):
        if tuple(online.shape) != tuple(target.shape):
            raise ValueError(
                "The momentum encoder must mirror branch a variable for variable. Received: "
                f"{online.path} of shape {online.shape} against {target.path} of shape "
                f"{target.shape}"
            )
        target.assign(ops.copy(online.value))  # a new buffer: JAX donates each once
        # Per variable, not per layer: a non-trainable layer would run its BatchNorm in
        # inference mode, and the momentum encoder uses batch statistics like branch a.
        target.trainable = False


def update_momentum_encoder(model):
    """Moves a `VICReg`'s momentum encoder towards branch a: `b = m * b + (1 - m) * a`."""
    momentum = model.momentum
    for online, target in momentum_pairs(model, trainable_only=True):
        target.assign(momentum * target.value + (1.0 - momentum) * online.value)
