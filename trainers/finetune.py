r"""Semi-supervised fine-tuning of a pretrained backbone, from a config of `configs/`.

    python -m trainers.finetune --config=configs/finetune_imagenet.py:1pct \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_1pct \
        [--data_dir=~/tensorflow_datasets]

`--backbone` is a `.keras` file or a PyTorch state dict in torchvision's layout (the released
VICReg weights); its weights are trained. The workdir gets results.json (top-1 / top-5) and
tensorboard/; the protocol is `keras_vicreg.evaluation.runs.run_finetune`.
"""

from absl import app

from keras_vicreg.evaluation import command_line
from keras_vicreg.evaluation import runs

_FLAGS = command_line.define_flags(
    "configs/finetune_imagenet.py:1pct", "A .keras file or a .pth state dict."
)


def main(argv):
    command_line.run(runs.run_finetune, _FLAGS, argv)


if __name__ == "__main__":
    app.run(main)
