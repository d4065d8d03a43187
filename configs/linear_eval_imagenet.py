r"""Linear evaluation of a frozen backbone on ImageNet, as released with VICReg; transfer variants.

    python -m trainers.linear_eval --config=configs/linear_eval_imagenet.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_linear [--data_dir=...]

The released recipe (facebookresearch/vicreg `evaluate.py --weights freeze --lr-head 0.02`): frozen
backbone in inference mode, Dense head N(0, 0.01), SGD momentum 0.9, weight decay 1e-6, lr 0.02 at
batch 256, 100 epochs, cosine; random resized crop 224 + flip for training, resize 256 + centre crop
224 for validation. Paper: 73.2 top-1 / 91.1 top-5 for the released ResNet-50.

`:precompute` embeds the centre crops once and sweeps the head's learning rate (fast, no
augmentation). Transfer (the same head recipe, not the paper's per-dataset ones): `:places365_small`
(tfds has Places365, not the paper's Places205), `:voc2007` (multi-label, mean average precision,
trained on train+validation, tested on test), `:i_naturalist2018`;
at most one of them (`:imagenet2012`, the default, names ImageNet itself). Arguments combine with
commas; `:runlocal` shrinks everything for a smoke run on a folder:
`--config=configs/linear_eval_imagenet.py:runlocal --config.dataset=/path/to/folder`.

`:places365_small` and `:i_naturalist2018` are NOT VISSL's recipes behind the paper's Places205 and
iNat18 numbers: `configs/linear_eval_places205.py` and `configs/linear_eval_inaturalist18.py` are.
`:voc2007` is NOT comparable with the paper's VOC07 number (86.6): it trains a sigmoid linear head
by SGD and scores a non-interpolated mAP, where the paper follows VISSL's per-class linear SVMs with
cross-validated costs; `configs/voc07_svm.py` (`trainers/svm_eval.py`) runs that protocol.
"""

from keras_vicreg.config import common
from keras_vicreg.evaluation import runs

# The transfer rows: the dataset and its splits (the default row is ImageNet's own).
_TRANSFER = {
    "imagenet2012": dict(),
    "places365_small": dict(dataset="places365_small", val_split="validation"),
    "voc2007": dict(dataset="voc/2007", train_split="train+validation", val_split="test"),
    "i_naturalist2018": dict(dataset="i_naturalist2018", val_split="validation"),
}


def get_config(arg=None):
    """The ImageNet linear evaluation; `arg`: a transfer dataset, `precompute`, `runlocal`."""
    args = common.parse_arg(arg, flags=("precompute",), dataset=tuple(_TRANSFER))
    config = runs.default_config()
    config.dataset = "imagenet2012"
    config.batch_size = 256
    config.epochs = 100
    config.learning_rate = 0.02  # released evaluate.py --lr-head 0.02, at batch 256
    config.momentum = 0.9
    config.weight_decay = 1e-6
    config.learning_rates = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # used with :precompute
    config.update(_TRANSFER[args.dataset])
    config.precompute_features = args.precompute
    if args.runlocal:
        runs.shrink_for_local_run(config)
    return config
