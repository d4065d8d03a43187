r"""Linear evaluation (and linear transfer) of a pretrained backbone, from a config of `configs/`.

    python -m trainers.linear_eval --config=configs/linear_eval_imagenet.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_linear \
        [--data_dir=~/tensorflow_datasets] [--config.precompute_features=True]

`--backbone` is a `.keras` file, a SavedModel exported by `keras_vicreg.export` or a PyTorch
state dict in torchvision's layout (the released VICReg weights). The workdir gets results.json
(top-1 / top-5, or mAP for multi-label datasets) and tensorboard/; the protocol is
`keras_vicreg.evaluation.runs.run_linear_eval`.
"""

from absl import app

from keras_vicreg.evaluation import command_line
from keras_vicreg.evaluation import runs

_FLAGS = command_line.define_flags(
    "configs/linear_eval_imagenet.py", "A .keras file, an exported SavedModel or a .pth state dict."
)


def main(argv):
    command_line.run(runs.run_linear_eval, _FLAGS, argv)


if __name__ == "__main__":
    app.run(main)
