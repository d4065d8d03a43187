r"""Weighted kNN classification (k 200, temperature 0.07) of a pretrained backbone's features.

    python -m trainers.knn_eval --config=configs/linear_eval_imagenet.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_knn \
        [--data_dir=~/tensorflow_datasets]

`--backbone` is a `.keras` file, a SavedModel exported by `keras_vicreg.export` or a PyTorch
state dict in torchvision's layout (the released VICReg weights). The workdir gets results.json
(top-1 / top-5) and tensorboard/. The config's `k` and `temperature` set the protocol,
`keras_vicreg.evaluation.runs.run_knn`.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.evaluation import runs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, e.g. configs/linear_eval_imagenet.py.", lock_config=True
)
_BACKBONE = flags.DEFINE_string(
    "backbone", None, "A .keras file, an exported SavedModel or a .pth state dict.", required=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = runs.run_knn(
        _CONFIG.value, backbone_path=_BACKBONE.value, workdir=_WORKDIR.value,
        data_dir=_DATA_DIR.value,
    )
    print(json.dumps(record["results"], indent=2), flush=True)


if __name__ == "__main__":
    app.run(main)
