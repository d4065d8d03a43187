r"""VICReg's ResNet-50 on ImageNet at batch 2048: `:1000ep` (the default) or `:100ep`.

    python -m trainers.pretrain --config=configs/imagenet_resnet50.py:1000ep \
        --workdir=$HOME/vicreg/r50_1000ep --strategy=mirrored \
        --data_dir=$HOME/tensorflow_datasets --manual_dir=$HOME/imagenet_tars

ImageNet must be downloaded by hand once (see `keras_vicreg.data.check_imagenet_manual_dir`; pass
`--manual_dir` to the tar files). Arguments combine with commas; `runlocal` shrinks the recipe for
a smoke run: `--config=configs/imagenet_resnet50.py:1000ep,runlocal`.

Bardes, Ponce and LeCun, ICLR 2022, and its released code (../shared/VICREG_REFERENCE.md):
torchvision-layout ResNet-50 (keras-hub, stride on the 3x3 convolution, last BN of each block
zero-initialised), expander 8192-8192-8192, loss coefficients 25 / 25 / 1, LARS (momentum 0.9,
eta 0.001, weight decay 1e-6, biases and BN excluded), base learning rate scaled by batch / 256,
10 warmup epochs, cosine to 0.001 of the peak, evaluated every step; the asymmetric BYOL
augmentations at 224 pixels; BatchNormalization synchronised across replicas. The argument picks
the row:

    1000ep   the headline recipe (73.2% linear top-1): 1000 epochs, base learning rate 0.2
             (peak 1.6). The default, since it is the paper's result.
    100ep    the paper's ablations: 100 epochs, base learning rate 0.3 (peak 2.4). The ablations
             ran at batch 512 or 2048; `--config.batch_size=512` gives the former (every derived
             number follows).
"""

from keras_vicreg.config import common
from keras_vicreg.config import pretraining

# The rows: epochs and base learning rate.
_EPOCHS = {
    "1000ep": dict(epochs=1000, base_learning_rate=0.2),  # peak = 0.2 * 2048 / 256 = 1.6
    "100ep": dict(epochs=100, base_learning_rate=0.3),  # peak = 0.3 * 2048 / 256 = 2.4
}


def get_config(arg=None):
    """The recipe; `arg` is `1000ep` (default) or `100ep`, with `runlocal` (see `common`)."""
    args = common.parse_arg(arg, epochs=tuple(_EPOCHS))
    row = _EPOCHS[args.epochs]
    config = pretraining.default_config()
    config.seed = 0
    config.dataset = "imagenet2012"
    config.augmentation = None  # the dataset's preset: "imagenet", the paper's asymmetric views
    config.image_size = 224
    config.num_examples = 1_281_167  # ImageNet-1k's training images
    config.shuffle_buffer = 10_000
    config.batch_size = 2048
    config.epochs = row["epochs"]  # 625 steps per epoch

    config.model.backbone = "resnet50"
    config.model.source = "keras_hub"
    config.model.stem = "imagenet"
    config.model.filters = (64, 128, 256, 512)
    config.model.zero_init_residual = True
    config.model.expander = "8192-8192-8192"
    config.model.sync_batch_norm = True
    config.model.covariance = "auto"  # the Gram form (same value) at 2048 rows per replica group
    config.model.sim_coeff = 25.0
    config.model.std_coeff = 25.0
    config.model.cov_coeff = 1.0

    config.optimizer.base_learning_rate = row["base_learning_rate"]  # WarmupCosine
    config.optimizer.warmup_epochs = 10
    config.optimizer.end_factor = 0.001
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-6
    config.optimizer.eta = 1e-3

    # The release trained in float16 with loss scaling on V100s ("mixed_float16" reproduces that);
    # bfloat16 needs no loss scaling on TPUs and recent GPUs. The loss stays in float32.
    config.mixed_precision = "mixed_bfloat16"
    config.checkpoint_every_steps = 250
    config.keep_checkpoints = 3
    config.log_every_steps = 50
    config.summary_every_steps = 625
    config.summary_examples = 256
    return common.finish_pretraining(config, args)
