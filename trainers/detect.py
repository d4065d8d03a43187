r"""Object detection transfer: a RetinaNet around a (VICReg-pretrained) backbone, results.json.

    python -m trainers.detect --config=configs/detection.py:voc \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_detect_voc

`config.backbone` is a `.keras` file or a torchvision-layout `.pth` ("" for random weights). The
workdir gets results.json (`ap`, `ap50`, per class, the config) and TensorBoard logs
(`keras_vicreg.transfer.detection_run.run_detection`). Not the paper's detectron2 protocol: see
configs/detection.py.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.transfer import detection_run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, e.g. configs/detection.py:voc.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = detection_run.run_detection(_CONFIG.value, workdir=_WORKDIR.value,
                                         data_dir=_DATA_DIR.value)
    print(json.dumps({"ap50": record["ap50"], "ap": record["ap"]}, indent=2), flush=True)


if __name__ == "__main__":
    app.run(main)
