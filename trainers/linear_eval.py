r"""Linear evaluation (and linear transfer) of a pretrained backbone, from a config of `configs/`.

    python -m trainers.linear_eval --config=configs/linear_eval_imagenet.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_linear \
        [--data_dir=~/tensorflow_datasets] [--config.precompute_features=True]

`--backbone` is a `.keras` file, a SavedModel exported by `keras_vicreg.export` or a PyTorch
state dict in torchvision's layout (the released VICReg weights). The workdir gets results.json
(top-1 / top-5, or mAP for multi-label datasets) and tensorboard/.
"""

from keras_vicreg.evaluation import runs
from trainers.evaluation_binary import run_binary

if __name__ == "__main__":
    run_binary(
        runs.run_linear_eval,
        config_example="configs/linear_eval_imagenet.py",
        backbone_help="A .keras file, an exported SavedModel or a .pth state dict.",
    )
