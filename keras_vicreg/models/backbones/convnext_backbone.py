"""ConvNeXt backbones for VICReg: Keras Applications' ConvNeXt, built offline, pooled to (batch, d).

keras-hub has no ConvNeXt; `keras.applications.ConvNeXtTiny(weights=None, ...)` builds offline on
the three backends. Its preprocessing layer is left out (`include_preprocessing=False`): the
VICReg pipelines feed images already normalised. The features are the global average of the last
stage's map (768 for ConvNeXt-T), without the classifier head's LayerNormalization. No stochastic
depth: `ConvNeXtTiny` fixes its drop rate at 0.
"""

import keras

# name: (blocks per stage, widths per stage)
VARIANTS = {
    "convnext_test": ((1, 1, 1, 1), (8, 16, 32, 64)),  # for tests: seconds to build and run
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),  # ConvNeXt-T
}
MIN_IMAGE_SIZE = 32  # Keras Applications' smallest input side (four stride-2 or -4 stages)


def convnext(variant="convnext_tiny", *, input_shape=(224, 224, 3), name=None):
    """A ConvNeXt from images to globally average-pooled features, built offline.

    Args:
        variant: "convnext_tiny" (ConvNeXt-T: blocks (3, 3, 9, 3), widths 96 to 768) or
            "convnext_test" (one block per stage, widths 8 to 64: tests and smoke runs).
        input_shape: (height, width, channels); each side at least 32 pixels.
        name: the model's name; defaults to `variant`.

    Returns:
        A functional `keras.Model` of Keras Applications' ConvNeXt layers from images to
        (batch, widths[-1]) features; its `.keras` file loads with Keras alone.

    Example:
        >>> backbone = convnext("convnext_tiny", input_shape=(32, 32, 3))
        >>> backbone.output_shape
        (None, 768)
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {sorted(VARIANTS)}. Received: variant={variant!r}"
        )
    if len(input_shape) != 3 or any(side is not None and side < MIN_IMAGE_SIZE
                                    for side in input_shape[:2]):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) with sides of at least "
            f"{MIN_IMAGE_SIZE} pixels. Received: input_shape={tuple(input_shape)}"
        )
    depths, widths = VARIANTS[variant]
    options = dict(
        include_top=False, include_preprocessing=False, weights=None,
        input_shape=tuple(input_shape), pooling="avg", name=name or variant,
    )
    if variant == "convnext_tiny":
        return keras.applications.ConvNeXtTiny(**options)
    # The architecture function behind ConvNeXtTiny & co., for widths Keras does not name.
    from keras.src.applications.convnext import ConvNeXt

    return ConvNeXt(depths=list(depths), projection_dims=list(widths), **options)
