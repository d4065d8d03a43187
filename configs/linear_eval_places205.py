r"""Linear transfer to Places205 with VISSL's recipe, behind the paper's 54.3 top-1.

    python -m trainers.linear_eval --config=configs/linear_eval_places205.py \
        --config.dataset=/data/places205 --backbone=/tmp/vicreg/export/backbone.keras \
        --workdir=/tmp/vicreg_places205

Places205 is not in tensorflow-datasets: `config.dataset` is a folder of `train/<class>/<image>`
and `val/<class>/<image>` files (205 classes; VISSL's `places205_folder`). The recipe
(`keras_vicreg.evaluation.vissl_linear`, from VISSL's
`eval_resnet_8gpu_transfer_places205_linear.yaml`): res5 average-pooled 6 x 6 at stride 1,
BatchNorm, Linear; SGD with Nesterov momentum 0.9, weight decay 5e-4 (none on BatchNorm),
learning rate 0.01 at batch 256, x 0.1 at epochs 4, 8 and 12 of 14; RandomResizedCrop 224 + flip
to train, resize 256 + centre crop 224 to test. `configs/linear_eval_imagenet.py:places365_small`
is the released ImageNet head recipe on tfds' Places365, not comparable with the paper.
`:runlocal` shrinks everything for a smoke run on a small folder.
"""

from keras_vicreg.config import common
from keras_vicreg.evaluation import runs
from keras_vicreg.evaluation import vissl_linear


def get_config(arg=None):
    """VISSL's Places205 linear recipe; `arg="runlocal"`: small everything."""
    args = common.parse_arg(arg)
    config = vissl_linear.apply_recipe(runs.default_config(), "places205")
    config.dataset = ""  # a folder: --config.dataset=/path/to/places205
    config.train_split = "train"
    config.val_split = "val"
    if args.runlocal:
        runs.shrink_for_local_run(config)
        config.epochs, config.milestones = 2, (1,)
    return config
