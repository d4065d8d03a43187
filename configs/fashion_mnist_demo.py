r"""A CPU demo: a narrow ResNet-18 pretrained on Fashion-MNIST, offline.

    python -m trainers.pretrain --config=configs/fashion_mnist_demo.py \
        --workdir=$HOME/vicreg/fashion_mnist_demo

The data comes from Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist),
prepared once as tfds' `fashion_mnist` without internet (`keras_vicreg.data.prepare_fashion_mnist`).
Smoke-test with `--config=configs/fashion_mnist_demo.py:runlocal`.

The small-scale recipe of `cifar10_resnet18.py`, made for a CPU: one-channel 28-pixel views (the
"grayscale" preset: crop scale 0.2-1, flip, brightness and contrast jitter, solarization 0.1, no
blur), a ResNet-18 with the small stem at a quarter of the width (16-32-64-128, 128 features) and a
1024-1024-1024 expander; 10 epochs of 234 steps at batch 256, LARS at base learning rate 0.6.

Measured with `python -m trainers.demo` (configs/fashion_mnist_demo_eval.py, TensorFlow, the
shared 2-core CPU at a load average of 8-13): linear top-1 86.67% (kNN 81.57%) on the 10,000 test
images, against 83.67% for raw pixels and 66.71% for this backbone with random weights; 54 minutes
of wall time, 40.5 CPU-minutes, for the pretraining. Not yet the 90% the demo aims at.
"""

from keras_vicreg import pretrain_config


def get_config(arg=None):
    """The demo; `arg="runlocal"` shrinks it further (see `shrink_for_local_run`)."""
    config = pretrain_config.default_config()
    config.seed = 0
    config.dataset = "fashion_mnist"
    config.augmentation = None  # the dataset's preset: "grayscale"
    config.image_size = 28
    config.num_examples = 60_000  # Fashion-MNIST's training images
    config.shuffle_buffer = 60_000  # the whole training set (47 MB of 28x28 bytes)
    config.batch_size = 256
    config.epochs = 10

    config.model.backbone = "resnet18"
    config.model.source = "keras_hub"
    config.model.stem = "small"
    config.model.filters = (16, 32, 64, 128)
    config.model.zero_init_residual = True
    config.model.expander = "1024-1024-1024"
    config.model.sync_batch_norm = False
    config.model.covariance = "auto"

    config.optimizer.base_learning_rate = 0.6  # peak = 0.6 * batch / 256 (WarmupCosine)
    config.optimizer.warmup_epochs = 1
    config.optimizer.end_factor = 0.001
    config.optimizer.weight_decay = 1e-4

    config.mixed_precision = "float32"
    config.checkpoint_every_steps = 200
    config.log_every_steps = 20
    config.summary_every_steps = 100
    config.summary_examples = 256

    # Derived numbers, recomputed when num_examples, batch_size or epochs are overridden.
    config.steps_per_epoch = config.get_ref("num_examples") // config.get_ref("batch_size")  # 234
    config.total_steps = config.get_ref("steps_per_epoch") * config.get_ref("epochs")  # 2,340
    config.optimizer.warmup_steps = (
        config.get_ref("steps_per_epoch") * config.optimizer.get_ref("warmup_epochs")  # 234
    )
    if arg == "runlocal":
        pretrain_config.shrink_for_local_run(config)
    elif arg:
        raise ValueError(f'The config takes no argument or "runlocal". Received: arg={arg!r}')
    return config
