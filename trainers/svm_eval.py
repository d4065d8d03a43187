r"""VOC07 per-class linear SVMs on a frozen backbone's features (VISSL's protocol), results.json.

    python -m trainers.svm_eval --config=configs/voc07_svm.py \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_voc07_svm

`config.backbone` is a `.keras` file, an exported SavedModel or a torchvision-layout `.pth`. The
workdir gets results.json: `map`, `ap` (per class), `cost` (the chosen cost per class) and the
cross-validation APs (`keras_vicreg.evaluation.voc07.run_svm_eval`).
"""

from absl import app

from keras_vicreg.evaluation import command_line
from keras_vicreg.evaluation import voc07

_FLAGS = command_line.define_config_flags("configs/voc07_svm.py")


def main(argv):
    command_line.run_config_protocol(voc07.run_svm_eval, _FLAGS, argv, ("map", "ap"))


if __name__ == "__main__":
    app.run(main)
