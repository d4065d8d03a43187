"""A two-layer convnet backbone, `config.model.backbone = "convnet"`: for tests and smoke runs.

A ResNet takes minutes to compile and train even at the smallest widths; this one takes seconds, so
end-to-end tests of the pretraining binary (`configs/tiny.py`: kill, resume, divergence) stay fast.
It has the pieces those tests need to pin: convolutions, BatchNormalization with moving statistics,
global pooling to a feature vector.
"""

import keras


def convnet(filters, input_shape, name="convnet"):
    """Two stride-2 3x3 convolutions, each with BatchNormalization and ReLU, then global pooling.

    Args:
        filters: the widths of the two convolutions (the first two values are used; a config's
            four ResNet stage widths work as they are).
        input_shape: (height, width, channels) of the images; height and width may be None.
        name: the model's name (a second branch's needs its own).

    Returns:
        A functional `keras.Model` named `name` from images to (batch, filters[1]) features.
    """
    filters = tuple(filters)
    if len(filters) < 2 or not all(isinstance(width, int) and width > 0 for width in filters[:2]):
        raise ValueError(
            f"`filters` must start with two positive widths. Received: filters={filters}"
        )
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for index, width in enumerate(filters[:2]):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn_{index}")(x)
        x = keras.layers.ReLU(name=f"relu_{index}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)
