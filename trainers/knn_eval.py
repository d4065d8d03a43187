r"""Weighted kNN classification (k 200, temperature 0.07) of a pretrained backbone's features.

    python -m trainers.knn_eval --config=configs/linear_eval_imagenet.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_knn \
        [--data_dir=~/tensorflow_datasets]

`--backbone` is a `.keras` file, a SavedModel exported by `keras_vicreg.export` or a PyTorch
state dict in torchvision's layout (the released VICReg weights). The workdir gets results.json
(top-1 / top-5) and tensorboard/. The config's `k` and `temperature` set the protocol,
`keras_vicreg.evaluation.runs.run_knn`.
"""

from absl import app

from keras_vicreg.evaluation import command_line
from keras_vicreg.evaluation import runs

_FLAGS = command_line.define_flags(
    "configs/linear_eval_imagenet.py", "A .keras file, an exported SavedModel or a .pth state dict."
)


def main(argv):
    command_line.run(runs.run_knn, _FLAGS, argv)


if __name__ == "__main__":
    app.run(main)
