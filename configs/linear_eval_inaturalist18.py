r"""Linear transfer to iNaturalist 2018 with VISSL's recipe, behind the paper's 47.0 top-1.

    python -m trainers.linear_eval --config=configs/linear_eval_inaturalist18.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_inat18 \
        [--data_dir=~/tensorflow_datasets]

tfds `i_naturalist2018` (8142 classes; prepare it first: `tfds build i_naturalist2018`), trained on
train and tested on validation. The recipe (`keras_vicreg.evaluation.vissl_linear`, from VISSL's
`eval_resnet_8gpu_transfer_inaturalist18_linear.yaml`): res5 average-pooled 6 x 6 at stride 1,
BatchNorm, Linear; SGD with Nesterov momentum 0.9, weight decay 5e-4 (none on BatchNorm),
learning rate 0.01 at batch 256, x 0.1 at epochs 24, 48 and 72 of 84; RandomResizedCrop 224 + flip
to train, resize 256 + centre crop 224 to test. `configs/linear_eval_imagenet.py:i_naturalist2018`
is the released ImageNet head recipe, not comparable with the paper. `:runlocal` shrinks
everything for a smoke run (`--config.dataset=/path/to/folder`).
"""

from keras_vicreg.config import common
from keras_vicreg.evaluation import runs
from keras_vicreg.evaluation import vissl_linear


def get_config(arg=None):
    """VISSL's iNat18 linear recipe; `arg="runlocal"`: small everything."""
    args = common.parse_arg(arg)
    config = vissl_linear.apply_recipe(runs.default_config(), "inaturalist18")
    config.dataset = "i_naturalist2018"
    config.train_split = "train"
    config.val_split = "validation"
    if args.runlocal:
        runs.shrink_for_local_run(config)
        config.epochs, config.milestones = 2, (1,)
    return config
