r"""A tiny run for tests and smoke checks: a few steps on a few hundred generated images.

    python -m trainers.pretrain --config=configs/tiny.py --workdir=/tmp/vicreg_tiny

384 generated 16-pixel images, batches of 32, 2 epochs of 12 steps, a two-layer convnet and a
"32-32" expander, checkpoints every 5 steps and at the end of each epoch. No XLA: compiling would
take longer than training. Seconds on a CPU, on every backend.
"""

from keras_vicreg.config import common
from keras_vicreg.config import pretraining


def get_config(arg=None):
    """The tiny config; `arg="runlocal"` shrinks it further (see `keras_vicreg.config.common`)."""
    args = common.parse_arg(arg)
    config = pretraining.default_config()
    config.seed = 0
    config.dataset = "synthetic"
    config.augmentation = "small"
    config.image_size = 16
    config.num_examples = 384
    config.shuffle_buffer = 384
    config.batch_size = 32
    config.epochs = 2  # 12 steps each, 24 in all (12 of warmup)

    config.model.backbone = "convnet"
    config.model.filters = (8, 16, 16, 16)  # the convnet uses the first two widths
    config.model.expander = "32-32"
    config.model.sync_batch_norm = False

    config.optimizer.base_learning_rate = 0.3
    config.optimizer.warmup_epochs = 1
    config.optimizer.weight_decay = 1e-4

    config.jit_compile = False
    config.checkpoint_every_steps = 5
    config.keep_checkpoints = 10
    config.log_every_steps = 1
    config.summary_every_steps = 4
    config.summary_examples = 32
    config.summary_image_pairs = 2
    config.collapse_patience_steps = 10
    return common.finish_pretraining(config, args)
