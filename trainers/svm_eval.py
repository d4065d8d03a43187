r"""VOC07 per-class linear SVMs on a frozen backbone's features (VISSL's protocol), results.json.

    python -m trainers.svm_eval --config=configs/voc07_svm.py \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_voc07_svm

`config.backbone` is a `.keras` file, an exported SavedModel or a torchvision-layout `.pth`. The
workdir gets results.json: `map`, `ap` (per class), `cost` (the chosen cost per class) and the
cross-validation APs (`keras_vicreg.evaluation.voc07.run_svm_eval`).
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.evaluation import voc07

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, e.g. configs/voc07_svm.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = voc07.run_svm_eval(_CONFIG.value, workdir=_WORKDIR.value, data_dir=_DATA_DIR.value)
    print(json.dumps({"map": record["map"], "ap": record["ap"]}, indent=2), flush=True)


if __name__ == "__main__":
    app.run(main)
