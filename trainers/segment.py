r"""Semantic segmentation transfer (keras-hub DeepLabV3 around the backbone), results.json.

    python -m trainers.segment --config=configs/segmentation.py:voc \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_seg_voc

`config.backbone` is a `.keras` file or a torchvision-layout `.pth` ("" for random weights). The
workdir gets results.json (`miou`, `iou` per class, `pixel_accuracy`, the confusion matrix, the
backbone and the config) and tensorboard/. Not the paper's protocol (detectron2 Mask R-CNN:
docs/reproducing.md); see `keras_vicreg.transfer.segmentation`.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.transfer import segmentation

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, e.g. configs/segmentation.py:voc.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = segmentation.run_segmentation(
        _CONFIG.value, workdir=_WORKDIR.value, data_dir=_DATA_DIR.value
    )
    print(json.dumps({"miou": record["miou"], "iou": record["iou"],
                      "pixel_accuracy": record["pixel_accuracy"]}, indent=2), flush=True)


if __name__ == "__main__":
    app.run(main)
