r"""Semi-supervised fine-tuning on 10% of ImageNet's labels, as released with VICReg.

    python -m trainers.finetune --config=configs/finetune_imagenet_10pct.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_10pct [--data_dir=...]

The released recipe (facebookresearch/vicreg `evaluate.py --weights finetune --train-perc 10`):
the SimCLR 10% subset (tfds `imagenet2012_subset/10pct`), 20 epochs, batch 256, SGD momentum 0.9,
no weight decay, one cosine for backbone lr 0.01 and head lr 0.1. Paper: 69.5 top-1 / 89.5 top-5.
`:runlocal` shrinks it for a smoke run (`--config.dataset=/path/to/folder`).
"""

from keras_vicreg.evaluation import runs


def get_config(arg=None):
    """The 10% fine-tuning recipe; `arg="runlocal"` shrinks it."""
    config = runs.default_config()
    config.dataset = "imagenet2012_subset/10pct"
    config.batch_size = 256
    config.epochs = 20
    config.weight_decay = 0.0
    config.backbone_learning_rate = 0.01
    config.head_learning_rate = 0.1
    if arg == "runlocal":
        runs.shrink_for_local_run(config)
    elif arg:
        raise ValueError(f'The config takes no argument or "runlocal". Received: arg={arg!r}')
    return config
