"""A backbone's multi-scale feature maps, as the `pyramid_outputs` model keras-hub's heads take.

The package's backbones (`keras_vicreg.models.backbones.resnet`, a `.keras` file, a torchvision
`.pth` through `keras_vicreg.evaluation.runs.load_backbone`) map images to pooled features.
keras-hub's `RetinaNetBackbone` instead wants an image encoder with `pyramid_outputs`, a dict
from "P<level>" to the feature map of stride 2**level. `pyramid_encoder` builds that model from
the backbone's own layers (the weights are shared, not copied), so fine-tuning the detector
fine-tunes the pretrained backbone:

- a backbone holding a keras-hub `ResNetBackbone` (the ImageNet stem at standard widths) already
  has `pyramid_outputs`, which the encoder outputs;
- otherwise the last block of each residual stage ("stack<i>_block<j>_out", keras-hub's names,
  or keras-cv's "v2_stack_<i>_block<j>_out"; a pre-activation ResNet's last stage ends at
  "post_relu") is an output, and its level is read from the stride a probe image shows, so the
  small stem (strides 1, 2, 4, 8) and the ImageNet stem (4, 8, 16, 32) both get honest levels.
"""

import math
import re

import keras

_STAGE_OUTPUT = re.compile(r"^(?:v2_)?stack_?(?P<stage>\d)_block(?P<block>\d+)_out$")
_PROBE_SIDE = 256


def pyramid_encoder(backbone):
    """A `keras.Model` from images to {"P<level>": feature map} with a `pyramid_outputs` dict.

    Args:
        backbone: a functional ResNet from `keras_vicreg.models.backbones.resnet` (or read back
            from its `.keras` file or a torchvision state dict); a `VICReg` model's `.backbone`.

    Returns:
        A functional `keras.Model` sharing the backbone's layers, whose `pyramid_outputs`
        attribute maps each stage's level to its symbolic output (what `RetinaNetBackbone` reads).

    Raises:
        ValueError: the backbone has no residual stages to read (e.g. the tiny convnet, or an
            exported SavedModel, whose layers are not reachable).
    """
    for layer in [backbone, *getattr(backbone, "layers", ())]:
        if getattr(layer, "pyramid_outputs", None):  # keras-hub's ResNetBackbone, maybe nested
            return _encoder(layer.inputs, dict(layer.pyramid_outputs), backbone.name)
    stages = {}
    for layer in getattr(backbone, "layers", ()):
        match = _STAGE_OUTPUT.match(layer.name)
        if match:
            stage, block = int(match.group("stage")), int(match.group("block"))
            if block >= stages.get(stage, (-1, None))[0]:
                stages[stage] = (block, layer.output)
    if not stages:
        raise ValueError(
            "Detection and segmentation heads need a ResNet's stage outputs (layers named "
            "'stack<i>_block<j>_out'); build the backbone with keras_vicreg.backbones.resnet or "
            "load its .keras file or .pth state dict (not an exported SavedModel). "
            f"Received: backbone={getattr(backbone, 'name', backbone)!r}"
        )
    outputs = [stages[stage][1] for stage in sorted(stages)]
    names = {layer.name for layer in backbone.layers}
    if "post_relu" in names:  # a pre-activation ResNet normalises its last stage afterwards
        outputs[-1] = backbone.get_layer("post_relu").output
    probe = keras.Model(backbone.inputs, outputs)
    levels = _levels(probe, backbone.inputs[0].shape)
    return _encoder(backbone.inputs, {f"P{level}": out for level, out in zip(levels, outputs)},
                    backbone.name)


def _encoder(inputs, pyramid_outputs, name):
    """A model from images to the {"P<level>": map} dict, holding it as `pyramid_outputs`."""
    encoder = keras.Model(inputs, pyramid_outputs, name=f"{name}_pyramid")
    encoder.pyramid_outputs = pyramid_outputs
    return encoder


def _levels(model, input_shape):
    """log2 of each output's stride, from the shapes a probe input gives."""
    side = input_shape[1] or _PROBE_SIDE
    channels = input_shape[-1]
    shapes = model.compute_output_shape((1, side, side, channels))
    levels = []
    for shape in shapes:
        stride = side / shape[1]
        level = round(math.log2(stride))
        if 2**level != stride:
            raise ValueError(
                "A stage's stride must be a power of two; give the backbone an input side "
                f"divisible by 32. Received: input side {side}, feature side {shape[1]}"
            )
        levels.append(level)
    return levels


def deepest_level(encoder):
    """The largest level of an encoder's "P<level>" outputs (its output stride is 2**level)."""
    return max(int(key[1:]) for key in encoder.pyramid_outputs)
