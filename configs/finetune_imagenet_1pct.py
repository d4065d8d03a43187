r"""Semi-supervised fine-tuning on 1% of ImageNet's labels, as released with VICReg.

    python -m trainers.finetune --config=configs/finetune_imagenet_1pct.py \
        --backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_1pct [--data_dir=...]

The released recipe (facebookresearch/vicreg `evaluate.py --weights finetune --train-perc 1`):
the SimCLR 1% subset (tfds `imagenet2012_subset/1pct`), 20 epochs, batch 256, SGD momentum 0.9, no
weight decay, one cosine for backbone lr 0.03 and head lr 0.08. Paper: 54.8 top-1 / 79.4 top-5.
`:runlocal` shrinks it for a smoke run (`--config.dataset=/path/to/folder`).
"""

from keras_vicreg.evaluation import runs


def get_config(arg=None):
    """The 1% fine-tuning recipe; `arg="runlocal"` shrinks it."""
    config = runs.default_config()
    config.dataset = "imagenet2012_subset/1pct"
    config.batch_size = 256
    config.epochs = 20
    config.weight_decay = 0.0
    config.backbone_learning_rate = 0.03
    config.head_learning_rate = 0.08
    if arg == "runlocal":
        runs.shrink_for_local_run(config)
    elif arg:
        raise ValueError(f'The config takes no argument or "runlocal". Received: arg={arg!r}')
    return config
