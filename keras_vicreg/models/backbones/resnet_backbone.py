"""ResNet backbones for VICReg, built offline from explicit arguments.

The keras-cv and keras-hub presets download weights and fail without internet, so every backbone here
is built from its architecture arguments and starts from random weights. The result maps images to the
globally average-pooled representation (2048 features for ResNet-50), which is what VICReg's expander
and every evaluation protocol consume.

The released VICReg backbones also include wider and deeper ResNets: ResNet-50 x2 and x4 multiply
every width (the stem's and each stage's; 4096 and 8192 features), ResNet-200 has (3, 24, 36, 3)
bottleneck blocks. keras-hub's `ResNetBackbone` insists on a first stage of 64 filters, so a wider
ResNet with the ImageNet stem composes that stem (the same layers and names) and keras-hub's stages.
"""

import re

import keras

_DEPTH_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
_FILTERS = (64, 128, 256, 512)
_STRIDES = (1, 2, 2, 2)
SOURCES = ("keras_hub", "keras_cv")
STEMS = ("imagenet", "small")

# The last BatchNormalization of each residual branch: "<stack>_block<i>_<k>_bn" with the highest k.
_BRANCH_BN = re.compile(r"^(?P<block>.*_block\d+)_(?P<index>[1-9])_bn$")


def _library_backbone(depth, source, preactivation, channels):
    """The keras-hub or keras-cv ResNet with its ImageNet stem, random weights, any image size."""
    basic = depth < 50
    blocks = list(_DEPTH_BLOCKS[depth])
    if source == "keras_hub":
        import keras_hub

        return keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=list(_FILTERS),
            stackwise_num_blocks=blocks,
            stackwise_num_strides=list(_STRIDES),
            block_type="basic_block" if basic else "bottleneck_block",
            use_pre_activation=preactivation,
            image_shape=(None, None, channels),
        )
    import keras_cv

    backbone_class = (
        keras_cv.models.ResNetV2Backbone if preactivation else keras_cv.models.ResNetBackbone
    )
    return backbone_class(
        stackwise_filters=list(_FILTERS),
        stackwise_blocks=blocks,
        stackwise_strides=list(_STRIDES),
        include_rescaling=False,
        block_type="basic_block" if basic else "block",
        input_shape=(None, None, channels),
    )


def _residual_stacks(x, depth, source, preactivation, filters):
    """The library's four residual stages, applied to a tensor (for the small stem).

    keras-hub and keras-cv expose their stages only as module-level functions; the backbone classes
    hard-wire the ImageNet stem (and keras-hub a first width of 64), so the small stem composes the
    stages itself, with the libraries' own layer names.
    """
    basic = depth < 50
    blocks = _DEPTH_BLOCKS[depth]
    if source == "keras_hub":
        from keras_hub.src.models.resnet import resnet_backbone as library

        for index in range(4):
            x = library.apply_stack(
                x,
                filters=filters[index],
                blocks=blocks[index],
                stride=_STRIDES[index],
                block_type="basic_block" if basic else "bottleneck_block",
                use_pre_activation=preactivation,
                first_shortcut=not basic or index > 0,
                name=f"stack{index}",
            )
    else:
        if preactivation:
            from keras_cv.src.models.backbones.resnet_v2 import resnet_v2_backbone as library
        else:
            from keras_cv.src.models.backbones.resnet_v1 import resnet_v1_backbone as library
        for index in range(4):
            x = library.apply_stack(
                x,
                filters=filters[index],
                blocks=blocks[index],
                stride=_STRIDES[index],
                block_type="basic_block" if basic else "block",
                first_shortcut=not basic or index > 0,
                name=f"v2_stack_{index}",
            )
    if preactivation:
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="post_bn")(x)
        x = keras.layers.Activation("relu", name="post_relu")(x)
    return x


def _small_stem_resnet(inputs, depth, source, preactivation, filters):
    """A 3x3 stride-1 convolution without max pooling, then the residual stages.

    32-pixel images (CIFAR, Fashion-MNIST) lose too much resolution to the ImageNet stem's stride-4
    downsampling; this is the stem of the small-scale references (solo-learn, lightly).
    """
    x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    if not preactivation:
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
    return _residual_stacks(x, depth, source, preactivation, filters)


def _imagenet_stem_resnet(inputs, depth, filters):
    """keras-hub's ImageNet stem at any width, then its stages (keras-hub takes only 64 filters).

    The layers and names are those of `keras_hub.models.ResNetBackbone`: a 7x7 stride-2
    convolution after an explicit zero padding of 3 (PyTorch's padding), BatchNormalization, ReLU,
    then a 3x3 stride-2 max pooling after a zero padding of 1.
    """
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(filters[0], 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    return _residual_stacks(x, depth, "keras_hub", False, filters)


def zero_init_residual_branches(model):
    """Sets to zero the gamma of the last BatchNormalization of every residual branch.

    Each block then starts as the identity, as in the released VICReg code (torchvision's
    `zero_init_residual=True`). Returns the number of layers changed; pre-activation blocks end in a
    convolution and have none.
    """
    last_bn = {}
    for layer in _all_layers(model):
        match = _BRANCH_BN.match(layer.name)
        if isinstance(layer, keras.layers.BatchNormalization) and match:
            block, index = match.group("block"), int(match.group("index"))
            if index > last_bn.get(block, (0, None))[0]:
                last_bn[block] = (index, layer)
    for _, layer in last_bn.values():
        layer.gamma.assign(keras.ops.zeros(layer.gamma.shape, dtype=layer.gamma.dtype))
    return len(last_bn)


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def resnet(
    depth,
    *,
    source="keras_hub",
    stem="imagenet",
    preactivation=False,
    zero_init_residual=True,
    input_shape=(224, 224, 3),
    filters=_FILTERS,
    width_multiplier=1,
    name=None,
):
    """A ResNet mapping images to its globally average-pooled features, built offline.

    Args:
        depth: 18, 34, 50, 101, 152 or 200.
        source: "keras_hub" (torchvision's "v1.5" layout with the stride on the 3x3 convolution, the
            layout of the released VICReg models) or "keras_cv" (the Keras Applications layout with the
            stride on the first 1x1 convolution of a bottleneck).
        stem: "imagenet" (7x7 stride-2 convolution and max pooling) or "small" (3x3 stride-1
            convolution without max pooling, for 32-pixel images).
        preactivation: use ResNet v2 pre-activation blocks (keras-hub `use_pre_activation=True`,
            keras-cv `ResNetV2Backbone`).
        zero_init_residual: start every residual block as the identity (see
            `zero_init_residual_branches`); has no effect on pre-activation blocks.
        input_shape: (height, width, channels) of the images; height and width may be None.
        filters: the base width of each of the four stages; (64, 128, 256, 512) is the standard
            ResNet, narrower ones such as (16, 32, 64, 128) make fast CPU experiments.
        width_multiplier: multiplies `filters` (and the ImageNet stem's 64): 2 and 4 are the
            released ResNet-50 x2 and x4 (torchvision's `widen`; 4096 and 8192 features).
        name: the model's name; defaults to e.g. "resnet50_keras_hub" ("resnet50x2_keras_hub").

    Returns:
        A functional `keras.Model` from images to features of width filters[3] for depths 18 and
        34, and 4 * filters[3] for 50 and deeper (512 and 2048 for the standard widths), times
        `width_multiplier`. Its layers
        are Keras', keras-hub's or keras-cv's own, so its `.keras` file loads with those libraries
        alone; `keras_vicreg.experimental.cpu.use_cpu_kernels` swaps in faster CPU kernels.

    Example:
        >>> backbone = resnet(18, stem="small", input_shape=(32, 32, 3))
        >>> backbone.output_shape
        (None, 512)
    """
    if depth not in _DEPTH_BLOCKS:
        raise ValueError(f"`depth` must be one of {sorted(_DEPTH_BLOCKS)}. Received: depth={depth}")
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}. Received: source={source!r}")
    if stem not in STEMS:
        raise ValueError(f"`stem` must be one of {STEMS}. Received: stem={stem!r}")
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    if len(filters) != 4 or min(filters) <= 0:
        raise ValueError(
            "`filters` must be four positive stage widths such as (64, 128, 256, 512). "
            f"Received: filters={tuple(filters)}"
        )
    if not isinstance(width_multiplier, int) or width_multiplier < 1:
        raise ValueError(
            "`width_multiplier` must be a positive int (2 for ResNet-50 x2). "
            f"Received: width_multiplier={width_multiplier!r}"
        )
    standard = tuple(filters) == _FILTERS and width_multiplier == 1
    if stem == "imagenet" and not standard and (source != "keras_hub" or preactivation):
        raise ValueError(
            "Only the keras-hub post-activation ResNet takes other widths with the ImageNet stem; "
            f"use source=\"keras_hub\" or stem=\"small\". Received: filters={tuple(filters)}, "
            f"width_multiplier={width_multiplier}, source={source!r}, "
            f"preactivation={preactivation}"
        )
    filters = tuple(width * width_multiplier for width in filters)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    if stem == "small":
        x = _small_stem_resnet(inputs, depth, source, preactivation, filters)
    elif standard:
        x = _library_backbone(depth, source, preactivation, input_shape[-1])(inputs)
    else:
        x = _imagenet_stem_resnet(inputs, depth, filters)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    wide = f"x{width_multiplier}" if width_multiplier > 1 else ""
    model = keras.Model(inputs, outputs, name=name or f"resnet{depth}{wide}_{source}")
    if zero_init_residual and not preactivation:
        zero_init_residual_branches(model)
    return model

