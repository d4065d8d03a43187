r"""Semi-supervised fine-tuning on 1% or 10% of ImageNet's labels, as released with VICReg.

    python -m trainers.finetune --config=configs/finetune_imagenet.py:1pct \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_1pct [--data_dir=...]

The released recipe (facebookresearch/vicreg `evaluate.py --weights finetune --train-perc 1` or
`10`): the SimCLR subsets of the labels (tfds `imagenet2012_subset/1pct`, `/10pct`), 20 epochs,
batch 256, SGD momentum 0.9, no weight decay, one cosine for the backbone's and the head's learning
rates. The argument picks the row:

    1pct    backbone lr 0.03, head lr 0.08. Paper: 54.8 top-1 / 79.4 top-5. The default (the
            first row of the paper's table).
    10pct   backbone lr 0.01, head lr 0.1. Paper: 69.5 top-1 / 89.5 top-5.

Arguments combine with commas; `runlocal` shrinks the recipe for a smoke run on a folder:
`--config=configs/finetune_imagenet.py:10pct,runlocal --config.dataset=/path/to/folder`.
"""

from keras_vicreg.config import common
from keras_vicreg.evaluation import runs

# The rows: the subset of the labels and the two learning rates.
_LABELS = {
    "1pct": dict(dataset="imagenet2012_subset/1pct", backbone_learning_rate=0.03,
                 head_learning_rate=0.08),
    "10pct": dict(dataset="imagenet2012_subset/10pct", backbone_learning_rate=0.01,
                  head_learning_rate=0.1),
}


def get_config(arg=None):
    """The fine-tuning recipe; `arg` is `1pct` (default) or `10pct`, with `runlocal`."""
    args = common.parse_arg(arg, labels=tuple(_LABELS))
    config = runs.default_config()
    config.batch_size = 256
    config.epochs = 20
    config.weight_decay = 0.0
    config.update(_LABELS[args.labels])
    if args.runlocal:
        runs.shrink_for_local_run(config)
    return config
