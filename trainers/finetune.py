r"""Semi-supervised fine-tuning of a pretrained backbone, from a config of `configs/`.

    python -m trainers.finetune --config=configs/finetune_imagenet_1pct.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_1pct \
        [--data_dir=~/tensorflow_datasets]

`--backbone` is a `.keras` file or a PyTorch state dict in torchvision's layout (the released
VICReg weights); its weights are trained. The workdir gets results.json (top-1 / top-5) and
tensorboard/.
"""

from keras_vicreg.evaluation import runs
from trainers.evaluation_binary import run_binary

if __name__ == "__main__":
    run_binary(
        runs.run_finetune,
        config_example="configs/finetune_imagenet_1pct.py",
        backbone_help="A .keras file or a .pth state dict.",
    )
