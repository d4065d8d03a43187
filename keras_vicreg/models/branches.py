"""The two branches of a VICReg model: checks, input shapes, copies, views, momentum encoder.

`VICReg` (`keras_vicreg.models.vicreg`) embeds view a through branch a and view b through branch b.
What it needs to check its branch options, read a branch's declared input, copy it with new
weights, take a batch apart into its two views, pair the embeddings the loss compares (one pair,
or two for a symmetrised loss) and keep a momentum (EMA) encoder, with BYOL's cosine ramp of its
rate, in step with branch a lives here, so that the model itself reads as its forward pass, its
loss and its config.
"""

import math

import keras
from keras import ops

from keras_vicreg import losses


def check_layer(arg, layer):
    """Raises a ValueError unless `layer` (the argument `arg`) is a Keras layer or model."""
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            f"`{arg}` must be a keras.Model or keras layer mapping inputs to features. "
            f"Received: {arg}={layer!r}"
        )


def check_options(*, backbone_b, expander_b, predictor, momentum, momentum_ramp_steps,
                  symmetric, invariance):
    """Raises a ValueError for a combination of `VICReg`'s branch options that cannot work."""
    if expander_b is not None and backbone_b is None:
        raise ValueError(
            "`expander_b` is the expander of branch b's own backbone: give `backbone_b` too, "
            "or leave `expander_b` unset to share branch a's. "
            f"Received: expander_b={expander_b!r}"
        )
    if momentum is not None and (isinstance(momentum, bool) or not 0.0 <= momentum < 1.0):
        raise ValueError(
            "`momentum` is the rate of the momentum encoder, in [0, 1) (e.g. 0.99), or None "
            f"for no momentum encoder. Received: momentum={momentum!r}"
        )
    if momentum is not None and backbone_b is not None:
        raise ValueError(
            "With `momentum`, branch b is a moving average of branch a, built by the model: "
            f"leave `backbone_b` unset. Received: backbone_b={backbone_b!r}"
        )
    if momentum_ramp_steps is not None and (
        momentum is None or isinstance(momentum_ramp_steps, bool)
        or not isinstance(momentum_ramp_steps, int) or momentum_ramp_steps < 1
    ):
        raise ValueError(
            "`momentum_ramp_steps` is the number of steps of the momentum's ramp to 1, a "
            "positive int, and needs `momentum` (its starting rate). Received: "
            f"momentum_ramp_steps={momentum_ramp_steps!r}, momentum={momentum!r}"
        )
    if symmetric and backbone_b is not None:
        raise ValueError(
            "A symmetrised loss feeds both views to both sides, which needs one network (shared "
            "weights) or a momentum encoder: leave `backbone_b` unset or `symmetric` False. "
            f"Received: symmetric={symmetric!r}, backbone_b={backbone_b!r}"
        )
    if predictor is not None and not isinstance(predictor, str):
        raise ValueError(
            'The predictor is given as a spec string such as "512-2048" (its last width being '
            f"the embedding width). Received: predictor={predictor!r}"
        )
    if invariance not in losses.INVARIANCES:
        raise ValueError(
            f"`invariance` must be one of {losses.INVARIANCES}. Received: invariance={invariance!r}"
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


def branch_model(model, branch, embeddings):
    """`VICReg.branch_model`: one branch of `model` as a functional `keras.Model`."""
    backbone, expander = model._branch(branch)
    shape = declared_input_shape(backbone)
    if not shape:
        raise ValueError(
            "Exporting a branch needs a backbone with a declared input (a functional "
            "keras.Model built from keras.Input). Received: a backbone without `inputs`, "
            f"backbone={backbone!r}"
        )
    inputs = keras.Input(batch_shape=shape, dtype=backbone.inputs[0].dtype)
    outputs = model._represent(backbone, inputs, training=False)
    if embeddings:
        outputs = expander(outputs, training=False)
    return keras.Model(inputs, outputs, name=f"branch_{branch}")


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


def embedding_pairs(model, data, training, keep=None):
    """The (online, target) pairs of embeddings a `VICReg`'s loss compares, for a batch of pairs.

    Online: branch a's embeddings, through the predictor if any. Target: branch b's, under
    stop-gradient with `stop_gradient_b` or a momentum encoder. One pair (view a online, view b
    target), or with `symmetric` two: (x_a online, x_b target) and (x_b online, x_a target), as
    BYOL and SimSiam symmetrise their loss. `keep`, a dict, gets branch a's pooled
    representation of view a under "features" (what the online probe reads).
    """
    view_a, view_b = unpack_views(data)
    stop = model.stop_gradient_b or model.momentum is not None
    keep = {} if keep is None else keep

    def embed_a(inputs):
        features = model._represent(model.backbone, inputs, training)
        keep.setdefault("features", features)  # view a's: embedded first
        return model.expander(features, training=training)

    def online(inputs):
        z = embed_a(inputs)
        return z if model.predictor is None else model.predictor(z, training=training)

    def target(z):
        return ops.stop_gradient(z) if stop else z

    if not model.symmetric:
        online_a = online(view_a)
        return [(online_a, target(model.embed(view_b, training=training, branch="b")))]
    if model.backbone_b is None:  # one network: its embeddings of each view are the targets
        z_a, z_b = embed_a(view_a), model.embed(view_b, training=training)
        p_a, p_b = (z_a, z_b) if model.predictor is None else (
            model.predictor(z_a, training=training), model.predictor(z_b, training=training))
        return [(p_a, target(z_b)), (p_b, target(z_a))]
    t_a = model.embed(view_a, training=training, branch="b")
    t_b = model.embed(view_b, training=training, branch="b")
    return [(online(view_a), target(t_b)), (online(view_b), target(t_a))]


def momentum_rate(base, step, ramp_steps):
    """BYOL's cosine ramp: `1 - (1 - base) * (cos(pi k / K) + 1) / 2` at step k of K, then 1."""
    progress = ops.minimum(ops.cast(step, "float32") / float(ramp_steps), 1.0)
    return 1.0 - (1.0 - base) * (ops.cos(math.pi * progress) + 1.0) / 2.0


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
    """Moves a `VICReg`'s momentum encoder towards branch a: `b = m * b + (1 - m) * a`.

    With `momentum_ramp_steps`, m is `momentum_rate` at the model's step count, which then
    advances by one.
    """
    momentum = model.momentum
    if model.momentum_ramp_steps is not None:
        step = model.momentum_step.value
        momentum = momentum_rate(model.momentum, step, model.momentum_ramp_steps)
        model.momentum_step.assign(step + 1)
    for online, target in momentum_pairs(model, trainable_only=True):
        target.assign(momentum * target.value + (1.0 - momentum) * online.value)
