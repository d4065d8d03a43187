r"""A CPU demo: a narrow ResNet-18 pretrained on Fashion-MNIST, offline.

    python -m trainers.pretrain --config=configs/fashion_mnist_demo.py \
        --workdir=$HOME/vicreg/fashion_mnist_demo

The data comes from Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist),
prepared once as tfds' `fashion_mnist` without internet (`keras_vicreg.data.prepare_fashion_mnist`).
Smoke-test with `--config=configs/fashion_mnist_demo.py:runlocal`.

The small-scale recipe of `cifar10_resnet18.py`, made for a CPU: one-channel 28-pixel views (the
"grayscale" preset: crop scale 0.2-1, flip, brightness and contrast jitter, solarization 0.1, no
blur), a narrow ResNet-18 with the small stem (widths 16-32-64-256: 256 features, most of the
compute in the last stage) and a 1024-1024-1024 expander; 9 epochs of 234 steps at batch 256, LARS
at base learning rate 0.3 with solo-learn's trust coefficient eta 0.02 (unclipped), and
`mixed_bfloat16` where the CPU has bfloat16 instructions (float32 elsewhere). The split is decoded
once and augmented a batch at a time (`in_memory`), and TensorFlow runs two ops side by side on one
thread each (`tf_intra_op_threads`), which suits 2 cores.

Deviation: the release's LARS (eta 0.001) moves the weights 20 times less per step; after 2
epochs it gave 83.2% linear top-1 against 86.8% with eta 0.02 (both 128 features;
docs/results.md lists the other settings tried).

Measured with `python -m trainers.demo` (configs/fashion_mnist_demo_eval.py, TensorFlow, bfloat16):
docs/results.md has the figures, docs/performance.md the times. The epochs are what fits in the
20 minutes the demo aims at (docs/performance.md); a tenth epoch gave no better figure (90.72%
against 90.75% linear top-1 at 44 pixels).
"""

from keras_vicreg.config import common
from keras_vicreg.config import pretraining


def get_config(arg=None):
    """The demo; `arg="runlocal"` shrinks it further (see `keras_vicreg.config.common`)."""
    args = common.parse_arg(arg)
    config = pretraining.default_config()
    config.seed = 0
    config.dataset = "fashion_mnist"
    config.augmentation = None  # the dataset's preset: "grayscale"
    config.image_size = 28
    config.num_examples = 60_000  # Fashion-MNIST's training images
    config.shuffle_buffer = 60_000  # the whole training set (47 MB of 28x28 bytes)
    config.in_memory = True  # decoded once, not read from the files and decoded every epoch
    config.batch_size = 256
    config.epochs = 9  # 234 steps each, 2,106 in all (234 of warmup)
    # Test time: whole images enlarged to 44 pixels (FixRes; configs/fashion_mnist_demo_eval.py
    # says why), read so by the demo's table and by the exported SavedModel's `serve`.
    config.eval_image_size = 44
    config.eval_crop_fraction = 1.0

    config.model.backbone = "resnet18"
    config.model.source = "keras_hub"
    config.model.stem = "small"
    config.model.filters = (16, 32, 64, 256)  # 256 features
    config.model.zero_init_residual = True
    config.model.expander = "1024-1024-1024"
    # Fused BatchNorm and matmul filter gradients (keras_vicreg.experimental.cpu): they pay on a
    # small CPU with TensorFlow, and the exported files hold stock Keras layers all the same.
    config.model.experimental_cpu_kernels = True
    config.model.sync_batch_norm = False
    config.model.covariance = "auto"

    config.optimizer.base_learning_rate = 0.3  # peak = 0.3 * batch / 256 (WarmupCosine)
    config.optimizer.warmup_epochs = 1
    config.optimizer.end_factor = 0.001
    config.optimizer.weight_decay = 1e-4
    # solo-learn's trust coefficient, 20x the release's 1e-3, without LARC's clipping.
    config.optimizer.eta = 0.02
    config.optimizer.clip_trust_ratio = False

    # Faster where the CPU has bfloat16 instructions (docs/performance.md; the loss stays in
    # float32); elsewhere bfloat16 would be emulated, slower than float32.
    config.mixed_precision = "mixed_bfloat16" if pretraining.cpu_has_bfloat16() else "float32"
    # One thread per op, two ops side by side: faster on 2 cores than two threads per op
    # (docs/performance.md).
    config.tf_intra_op_threads = 1
    config.checkpoint_every_steps = 200
    config.log_every_steps = 20
    config.summary_every_steps = 100
    config.summary_examples = 256
    # The online probe trains on every step (the labels ride beside the views, unused by
    # VICReg); the held-out kNN and probe every 3 epochs and at the end keep the demo's time.
    config.online_eval.every_steps = 702
    return common.finish_pretraining(config, args)
