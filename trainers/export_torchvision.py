r"""Writes a pretrained ResNet backbone as a torchvision-layout PyTorch state dict (for detectron2).

    python -m trainers.export_torchvision --backbone=/tmp/vicreg/export/backbone.keras \
        --output=/tmp/vicreg/resnet50.pth

`--backbone` is a `.keras` file of a keras-hub ResNet (or of a `VICReg` model, whose backbone is
taken); the output holds torchvision's keys ("conv1.weight", "layer1.0.bn1.running_mean", ...,
no "fc"), as `keras_vicreg.models.backbones.torchvision.save_torchvision_resnet` writes them.
docs/reproducing.md turns it into detectron2 weights. Any Keras backend; torch must be installed.
"""

import os

from absl import app
from absl import flags

from keras_vicreg.evaluation import runs
from keras_vicreg.models.backbones import torchvision

_BACKBONE = flags.DEFINE_string("backbone", None, "A .keras file of a ResNet backbone.",
                                required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The .pth file to write.", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not (_BACKBONE.value.endswith(".keras") and os.path.isfile(_BACKBONE.value)):
        raise app.UsageError(f"--backbone must be an existing .keras file. Received: "
                             f"--backbone={_BACKBONE.value!r}")
    torchvision.check_export_path(_OUTPUT.value)
    backbone = runs.load_backbone(_BACKBONE.value, image_size=None)
    layout = torchvision.save_torchvision_resnet(backbone, _OUTPUT.value)
    print(f"Wrote {_OUTPUT.value}: a torchvision ResNet with {layout}", flush=True)


if __name__ == "__main__":
    app.run(main)
