"""The one "pool a feature map" helper: a backbone as a model from images to (batch, d) features.

Backbones may end in a feature map (batch, h, w, d) or in pooled features (batch, d), and under
mixed precision they compute in float16 or bfloat16. What serves, exports or evaluates a backbone
wants one thing: float32 features of shape (batch, d). `pooled_features` makes that model once, so
that export, evaluation and transfer pool the same way (a global average, as VICReg's own
`call` does).
"""

import keras

from keras_vicreg.models.vicreg import VICReg


def pooled_features(model):
    """A functional model from the backbone's inputs to float32 features of shape (batch, d).

    A 4-D output (batch, h, w, d) is globally average-pooled (a `GlobalAveragePooling2D` named
    "avg_pool"); a low-precision output (a mixed-precision backbone) is cast to float32 (a linear
    `Activation` named "features_float32"). The new model shares the backbone's layers and weights
    and keeps its name. A backbone that already returns float32 (batch, d) features is returned
    as it is.

    Args:
        model: a functional `keras.Model` (built from `keras.Input`), or a `VICReg` model, whose
            backbone is taken.

    Returns:
        A `keras.Model` from the backbone's inputs to (batch, d) float32 features.
    """
    if isinstance(model, VICReg):
        model = model.backbone
    if not isinstance(model, keras.Model) or not model.inputs:
        raise ValueError(
            "`model` must be a functional keras.Model, or a VICReg model whose backbone is one. "
            f"Received: model={model!r}"
        )
    if len(model.outputs) != 1:
        raise ValueError(
            "`model` must have one output, its features or feature map. "
            f"Received: {len(model.outputs)} outputs, model={model.name!r}"
        )
    if len(model.output_shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(model.outputs[0])
        model = keras.Model(model.input, pooled, name=model.name)
    if len(model.output_shape) != 2:
        raise ValueError(
            "`model` must return features (batch, d) or a feature map (batch, h, w, d). "
            f"Received: output shape {model.output_shape}"
        )
    if keras.backend.standardize_dtype(model.outputs[0].dtype) != "float32":
        # A mixed-precision backbone computes in float16 / bfloat16; serve float32 features.
        as_float32 = keras.layers.Activation("linear", dtype="float32", name="features_float32")
        model = keras.Model(model.input, as_float32(model.outputs[0]), name=model.name)
    return model
