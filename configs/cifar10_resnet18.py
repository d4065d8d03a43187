r"""The small-scale reference recipe: ResNet-18 on CIFAR-10, 1000 epochs at batch 256.

    python -m trainers.pretrain --config=configs/cifar10_resnet18.py \
        --workdir=$HOME/vicreg/cifar10_r18 --data_dir=$HOME/tensorflow_datasets

tensorflow-datasets downloads CIFAR-10 on the first run. Smoke-test the recipe with
`--config=configs/cifar10_resnet18.py:runlocal`.

The setting of public VICReg reproductions (../shared/VICREG_REFERENCE.md), which reach 92.1%
linear top-1 on CIFAR-10: ResNet-18 with the CIFAR stem (3x3 stride-1 first convolution, no max
pooling), expander 2048-2048-2048, LARS at learning rate 0.3 for batch 256 with weight decay 1e-4,
symmetric augmentations at 32 pixels (crop scale 0.2-1, no blur, solarization 0.1: the "small"
preset). LARS is solo-learn's, which those numbers come from: trust coefficient eta 0.02 with
LARC's clipping (`clip_lr`), so that a layer's rate is min(eta * ||p|| / ||dp||, learning rate).
This deviates from the VICReg release (eta 0.001, no clipping), which trains far more slowly at
this scale: see `fashion_mnist_demo.py`. The warmup (10 epochs), the cosine floor and the momentum
are the ImageNet recipe's.
"""

from keras_vicreg.config import common
from keras_vicreg.config import pretraining


def get_config(arg=None):
    """The recipe; `arg="runlocal"` shrinks it for a smoke run (`keras_vicreg.config.common`)."""
    args = common.parse_arg(arg)
    config = pretraining.default_config()
    config.seed = 0
    config.dataset = "cifar10"
    config.augmentation = None  # the dataset's preset: "small"
    config.image_size = 32
    config.num_examples = 50_000  # CIFAR-10's training images
    config.shuffle_buffer = 50_000  # the whole training set
    config.batch_size = 256
    config.epochs = 1000  # 195 steps each, 195,000 in all (1,950 of warmup)

    config.model.backbone = "resnet18"
    config.model.source = "keras_hub"
    config.model.stem = "small"
    config.model.filters = (64, 128, 256, 512)
    config.model.zero_init_residual = True
    config.model.expander = "2048-2048-2048"
    config.model.sync_batch_norm = True
    config.model.covariance = "auto"
    config.model.sim_coeff = 25.0
    config.model.std_coeff = 25.0
    config.model.cov_coeff = 1.0

    config.optimizer.base_learning_rate = 0.3  # peak = 0.3 * 256 / 256 = 0.3 (WarmupCosine)
    config.optimizer.warmup_epochs = 10
    config.optimizer.end_factor = 0.001
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.eta = 0.02  # solo-learn's; the VICReg release: 1e-3, unclipped
    config.optimizer.clip_trust_ratio = True

    config.mixed_precision = "float32"  # "mixed_bfloat16" or "mixed_float16" on accelerators
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.log_every_steps = 50
    config.summary_every_steps = 1000
    config.summary_examples = 256
    return common.finish_pretraining(config, args)
