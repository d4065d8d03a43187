"""The backbone a transfer run starts from: a pretrained file, or a random ResNet to compare with.

Detection (`detection_run`) and segmentation (`segmentation`) read the same config keys for it:
`backbone` (a `.keras` file or a torchvision-layout `.pth`, read by
`keras_vicreg.evaluation.runs.load_backbone`; "" for random weights), `backbone_depth`,
`backbone_stem`, `backbone_filters` and `image_size`.
"""

from keras_vicreg.evaluation import runs
from keras_vicreg.models.backbones import resnet_backbone


def load_or_build(config, *, input_shape=(None, None, 3)):
    """The config's backbone: loaded from `config.backbone`, or a random keras-hub-layout ResNet.

    Args:
        config: a detection or segmentation config.
        input_shape: the random ResNet's input shape (a loaded backbone keeps its own).

    Raises:
        ValueError: if the backbone does not take 3-channel images (both heads read RGB).
    """
    if config.backbone:
        backbone = runs.load_backbone(config.backbone, image_size=config.image_size,
                                      depth=config.backbone_depth, stem=config.backbone_stem)
    else:
        backbone = resnet_backbone.resnet(
            config.backbone_depth, stem=config.backbone_stem,
            filters=tuple(config.backbone_filters), input_shape=input_shape,
        )
    channels = backbone.inputs[0].shape[-1]
    if channels != 3:
        raise ValueError(
            "Detection and segmentation read RGB images: the backbone must take 3 channels. "
            f"Received: backbone={config.backbone!r} with {channels}-channel inputs"
        )
    return backbone
