"""Every backbone by name, as `config.model.backbone` names it, built offline from its arguments.

The names the pretraining config accepts, and one `build` that turns a name and an image shape
into the model, so that the binaries, the configs' validation and a second branch of another
architecture (VICReg's flexibility table: ResNet-50 beside ViT-S) all read one table:

    convnet                                  the two-layer test convnet (`convnet.convnet`)
    resnet18 ... resnet152, resnet200        `resnet_backbone.resnet(depth)`
    resnet50x2, resnet50x4, resnet200x2      the released wide ones (`width_multiplier` 2, 4)
    vit_tiny, vit_s16, vit_b16               `vit_backbone.vit(name)`
    convnext_tiny                            `convnext_backbone.convnext(name)`
"""

import re

from keras_vicreg.models.backbones import convnext_backbone as convnext_lib
from keras_vicreg.models.backbones import vit_backbone as vit_lib
from keras_vicreg.models.backbones.convnet import convnet
from keras_vicreg.models.backbones.resnet_backbone import resnet

RESNETS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200",
    "resnet50x2", "resnet50x4", "resnet200x2",
)
VITS = ("vit_tiny", "vit_s16", "vit_b16")
CONVNEXTS = ("convnext_tiny",)
NAMES = ("convnet", *RESNETS, *VITS, *CONVNEXTS)
_RESNET = re.compile(r"^resnet(?P<depth>\d+)(?:x(?P<width>\d+))?$")


def resnet_depth_and_width(name):
    """(depth, width_multiplier) of a ResNet name: "resnet200x2" -> (200, 2)."""
    match = _RESNET.match(name)
    if name not in RESNETS or not match:
        raise ValueError(f"`name` must be one of {RESNETS}. Received: name={name!r}")
    return int(match["depth"]), int(match["width"] or 1)


def image_size_problem(name, image_size):
    """Why `name` cannot be built on square images of `image_size` pixels, or None."""
    if name in VITS:
        patch = vit_lib.VARIANTS[name][0]
        if image_size % patch:
            return f"{name} needs an image_size that is a multiple of its patch size {patch}"
    if name in CONVNEXTS and image_size < convnext_lib.MIN_IMAGE_SIZE:
        return f"{name} needs an image_size of at least {convnext_lib.MIN_IMAGE_SIZE}"
    return None


def build(
    name,
    input_shape,
    *,
    source="keras_hub",
    stem="small",
    filters=(64, 128, 256, 512),
    zero_init_residual=True,
    vit_pooling="class_token",
    model_name=None,
):
    """The backbone `name` on images of `input_shape`, from images to (batch, d) features.

    Args:
        name: one of `NAMES`.
        input_shape: (height, width, channels).
        source, stem, filters, zero_init_residual: the ResNet options (`resnet_backbone.resnet`);
            `filters` are also the convnet's widths (its first two).
        vit_pooling: "class_token" or "mean" for the ViTs (`vit_backbone.vit`'s `pooling`).
        model_name: the Keras model's name; None: the builder's default (a second branch's
            backbone needs a name of its own).

    Returns:
        A functional `keras.Model`.
    """
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {NAMES}. Received: name={name!r}")
    if name == "convnet":
        return convnet(filters, input_shape, name=model_name or "convnet")
    if name in VITS:
        return vit_lib.vit(name, input_shape=input_shape, pooling=vit_pooling, name=model_name)
    if name in CONVNEXTS:
        return convnext_lib.convnext(name, input_shape=input_shape, name=model_name)
    depth, width = resnet_depth_and_width(name)
    return resnet(
        depth,
        source=source,
        stem=stem,
        zero_init_residual=zero_init_residual,
        input_shape=input_shape,
        filters=tuple(filters),
        width_multiplier=width,
        name=model_name,
    )
