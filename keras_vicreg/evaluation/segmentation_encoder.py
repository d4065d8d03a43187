"""A pretrained ResNet's feature pyramid: the image encoder a keras-hub DeepLabV3 needs.

`keras_hub.models.DeepLabV3Backbone` takes an `image_encoder` with a `pyramid_outputs` property,
a dict from "P<k>" to the feature map of stride 2**k (keras-hub's convention). This package's
backbones (`keras_vicreg.backbones.resnet`, `keras_vicreg.evaluation.runs.load_backbone`) map
images to *pooled* features instead: a functional `keras.Model` that either nests a keras-hub
`ResNetBackbone` (the standard widths with the ImageNet stem, whose `pyramid_outputs` are P2..P5)
or lays keras-hub's stages out itself (the small stem, other widths), their last blocks named
"stack<i>_block<j>_out". `pyramid_encoder` finds those stage outputs and returns a model of them
sharing the backbone's layers (and so its pretrained weights), without the global pooling.
"""

import re

import keras

_BLOCK_OUT = re.compile(r"^stack(?P<stack>\d)_block(?P<block>\d+)_out$")
_STAGE_STRIDE_LOG2 = {"imagenet": (2, 3, 4, 5), "small": (0, 1, 2, 3)}


def pyramid_encoder(backbone):
    """The backbone's four stage outputs as a model with keras-hub's `pyramid_outputs`.

    Args:
        backbone: a keras-hub-layout ResNet from `keras_vicreg.backbones.resnet(...,
            source="keras_hub")`, `load_backbone` (a `.keras` file or a torchvision `.pth`), or a
            `keras_hub.models.ResNetBackbone` itself. Its layers are shared, not copied.

    Returns:
        A functional `keras.Model` from images to a dict {"P<k>": feature map of stride 2**k},
        whose `pyramid_outputs` attribute is that dict of symbolic tensors (P2..P5 with the
        ImageNet stem, P0..P3 with the small stem, which does not downsample).

    Raises:
        ValueError: for a backbone without keras-hub ResNet stages (a keras-cv ResNet, the
            convnet, a ViT, a SavedModel's `TFSMLayer`): name what to use instead.
    """
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            f"`backbone` must be a keras.Model. Received: backbone of type {type(backbone)}"
        )
    nested = _nested_pyramid(backbone)
    if nested is not None:
        inputs, outputs = nested.inputs, dict(nested.pyramid_outputs)
    else:
        inputs, outputs = backbone.inputs, _stage_outputs(backbone)
    encoder = keras.Model(inputs, outputs, name=f"{backbone.name}_pyramid")
    encoder.pyramid_outputs = outputs
    return encoder


def deepest_level(encoder):
    """The largest k of the encoder's "P<k>" keys (its output stride is 2**k)."""
    return max(int(key[1:]) for key in encoder.pyramid_outputs)


def _nested_pyramid(model):
    """The model itself or a layer of it that has `pyramid_outputs` (a keras-hub backbone)."""
    if getattr(model, "pyramid_outputs", None):
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and getattr(layer, "pyramid_outputs", None):
            return layer
    return None


def _stage_outputs(model):
    """{"P<k>": output of the last block of each of the four stacks} of a flat keras-hub ResNet."""
    names = {layer.name for layer in model.layers}
    last = {}
    for layer in model.layers:
        match = _BLOCK_OUT.match(layer.name)
        if match:
            stack, block = int(match["stack"]), int(match["block"])
            if block >= last.get(stack, (-1, None))[0]:
                last[stack] = (block, layer)
    if sorted(last) != [0, 1, 2, 3] or not ({"pool1_pool", "stem_conv"} & names):
        raise ValueError(
            "Segmentation needs the feature maps of a keras-hub-layout ResNet (four stacks of "
            "'stack<i>_block<j>_out' layers and an ImageNet or small stem): build it with "
            "keras_vicreg.backbones.resnet(..., source='keras_hub') or load a .keras file or "
            "torchvision .pth of one (an exported SavedModel gives pooled features only). "
            f"Received: backbone {model.name!r} with stacks {sorted(last)}"
        )
    levels = _STAGE_STRIDE_LOG2["imagenet" if "pool1_pool" in names else "small"]
    outputs = {f"P{level}": last[stack][1].output for stack, level in enumerate(levels)}
    if "post_relu" in names:  # pre-activation blocks: the last stage's normalised output
        outputs[f"P{levels[-1]}"] = model.get_layer("post_relu").output
    return outputs
