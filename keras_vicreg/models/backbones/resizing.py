"""A backbone built for one input size, read at another: the same layers on a new input.

Training builds a backbone on a fixed image size (Keras compiles a known shape faster), yet its
convolutions and global pooling take any size. Evaluating or serving it at another size (FixRes:
objects at test time as large as in the training crops) needs the same weights behind an input of
that size; `at_image_size` gives that without a copy of the weights.
"""

import keras


def at_image_size(backbone, image_size):
    """`backbone` on square images of `image_size` pixels, its layers (and weights) shared.

    Args:
        backbone: a functional `keras.Model` on images (batch, height, width, channels).
        image_size: the side of the new input, in pixels.

    Returns:
        `backbone` itself when its input already has that size or any size; otherwise a functional
        model of the same name whose layers are `backbone`'s own (training one trains the other).
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(
            f"`image_size` must be a positive number of pixels. Received: image_size={image_size!r}"
        )
    if not isinstance(backbone, keras.Model) or not backbone.inputs or len(backbone.inputs) != 1:
        raise ValueError(
            "`backbone` must be a functional keras.Model with one image input. "
            f"Received: backbone={backbone!r}"
        )
    shape = tuple(backbone.input_shape)
    if len(shape) != 4:
        raise ValueError(
            "`backbone` must take images (batch, height, width, channels). "
            f"Received: input shape {shape}"
        )
    if shape[1:3] in ((None, None), (image_size, image_size)):
        return backbone
    inputs = keras.Input(
        shape=(image_size, image_size, shape[3]), dtype=backbone.inputs[0].dtype,
        name=backbone.inputs[0].name,
    )
    if isinstance(backbone.input, (list, tuple)):  # a model built as keras.Model([x], y)
        inputs = type(backbone.input)([inputs])
    # clone_model re-runs the graph on the new input; returning each layer itself shares it.
    return keras.models.clone_model(backbone, input_tensors=inputs, clone_function=lambda l: l)
