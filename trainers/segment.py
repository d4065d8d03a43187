r"""Semantic segmentation transfer (keras-hub DeepLabV3 around the backbone), results.json.

    python -m trainers.segment --config=configs/segmentation.py:voc \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_seg_voc

`config.backbone` is a `.keras` file or a torchvision-layout `.pth` ("" for random weights). The
workdir gets results.json (`miou`, `iou` per class, `pixel_accuracy`, the confusion matrix, the
backbone and the config) and tensorboard/. Not the paper's protocol (detectron2 Mask R-CNN:
docs/reproducing.md); see `keras_vicreg.transfer.segmentation`.
"""

from absl import app

from keras_vicreg.evaluation import command_line
from keras_vicreg.transfer import segmentation

_FLAGS = command_line.define_config_flags("configs/segmentation.py:voc")


def main(argv):
    command_line.run_config_protocol(segmentation.run_segmentation, _FLAGS, argv,
                                     ("miou", "iou", "pixel_accuracy"))


if __name__ == "__main__":
    app.run(main)
