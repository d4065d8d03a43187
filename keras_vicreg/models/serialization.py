"""A `VICReg`'s Keras config: its constructor arguments as plain data, and back.

Layers (backbones, expanders given as layers, the online probe, the photometric augmentation) are
serialised with `keras.saving`; expanders given as spec strings stay strings. A momentum encoder's
backbone is a copy of branch a's, made again by the constructor, so it is not saved.
"""

import keras

# The arguments that hold Keras objects, deserialised before the constructor sees them.
_OBJECTS = ("backbone", "expander", "backbone_b", "expander_b", "online_probe", "photometric")


def vicreg_config(model, config):
    """`config` (the `keras.Model` part) updated with `model`'s constructor arguments."""
    serialize = keras.saving.serialize_keras_object
    config.update(
        backbone=serialize(model.backbone),
        expander=model.expander_spec or serialize(model.expander),
        backbone_b=(
            None
            if model.backbone_b is None or model.momentum is not None
            else serialize(model.backbone_b)
        ),
        expander_b=(
            None
            if not model._own_expander_b
            else model.expander_b_spec or serialize(model.expander_b)
        ),
        predictor=model.predictor_spec,
        stop_gradient_b=model.stop_gradient_b,
        momentum=model.momentum,
        momentum_ramp_steps=model.momentum_ramp_steps,
        expander_batch_norm=model.expander_batch_norm,
        sync_batch_norm=model.sync_batch_norm,
        symmetric=model.symmetric,
        online_probe=serialize(model.online_probe),
        photometric=serialize(model.photometric),
        **model.loss_options,
    )
    return config


def vicreg_kwargs(config):
    """The constructor arguments of a `vicreg_config`, Keras objects deserialised."""
    config = dict(config)
    for key in _OBJECTS:
        if isinstance(config.get(key), dict):
            config[key] = keras.saving.deserialize_keras_object(config[key])
    return config
