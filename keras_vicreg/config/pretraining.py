"""The pretraining config: its keys and defaults, and validation.

`trainers/pretrain.py` reads an `ml_collections.ConfigDict` from a file in `configs/`. Each file
starts from `default_config()`, sets the numbers of its recipe and ends with
`keras_vicreg.config.common.finish_pretraining`, which computes the derived ones (`steps_per_epoch`,
`total_steps`, `optimizer.warmup_steps`) as `FieldReference`s, so that a command-line override such
as `--config.batch_size=256` updates them too, and applies `runlocal`. `validate` then checks
the resolved config before any data is read: an unknown or missing key, a value of the wrong type or
out of range, an unknown backbone, dataset or augmentation preset, or a batch that does not split
over the replicas is a `ValueError` naming every problem at once.

The keys (see `default_config` for the defaults):

    seed                       seeds the weights' initialisation, the data order and the views
    dataset                    a tfds name of `keras_vicreg.data.DATASETS`, "synthetic" (generated
                               images, for smoke tests) or a folder of class subfolders
    split, augmentation        None: the dataset's pretraining split and augmentation preset
    image_size                 side of the views, in pixels
    eval_image_size            side of the whole images the exported backbone reads (the
                               SavedModel's `serve`, the demo's table); None: `image_size`
    eval_crop_fraction         the centre crop of those images, as a fraction of the shorter side
                               (0.875: 224 of 256; 1.0: the whole image)
    num_examples               images in the split (checked against the dataset when it is read)
    shuffle_buffer             elements in tf.data's shuffle buffer
    in_memory                  decode the split once and keep it in memory (datasets of small
                               fixed-size images: Fashion-MNIST takes 47 MB, CIFAR-10 150 MB)
                               instead of reading and decoding its files every epoch
    photometric_device         "host": the pipeline augments the views whole; "accelerator": it
                               stops at the crop and resize (uint8), and the train step flips,
                               jitters, blurs, solarizes and normalises (`PhotometricAugmentation`)
    max_image_pixels           an image whose header declares more pixels is skipped, not decoded
    max_undecodable_fraction   the share of skipped images (undecodable or over max_image_pixels)
                               above which the run stops before training (`training.bad_images`)
    batch_size                 the global batch size, over all replicas
    epochs, steps_per_epoch, total_steps
    model.*                    backbone (a name of `keras_vicreg.backbones.NAMES`: ResNets, wide
                               ones, ViTs, ConvNeXt), expander and loss options of `VICReg`;
                               its switches (`keras_vicreg.config.model_options`):
    model.branch_b, model.backbone_b
                               "shared" weights, branch b's "own_weights", or its
                               "own_architecture" `backbone_b` (the flexibility table)
    model.predictor, model.stop_gradient_b, model.momentum, model.momentum_schedule,
    model.expander_batch_norm  the ablation table's PR, SG, ME (BYOL's cosine ramp to 1) and BN
    model.invariance, model.symmetric, model.gamma, model.eps
                               "mse" or "cosine" (BYOL, SimSiam) invariance, the loss averaged
                               over both directions, the variance term's target and epsilon
    optimizer.*                LARS or AdamW and their `WarmupCosine` schedule: name,
                               base_learning_rate (a number, or "auto": the paper's table by
                               batch size), weight_decay, warmup, LARS' momentum, eta and
                               clip_trust_ratio, AdamW's betas and epsilon, the exclusion from
                               weight decay by variable name (`config.optimizer_options`)
    mixed_precision            "float32", "mixed_bfloat16" or "mixed_float16"
    jit_compile                None (Keras' "auto"), True or False
    tf_intra_op_threads        TensorFlow's threads per op; None: its default (one per core). The
                               JAX and PyTorch backends ignore it: their ops do not run there
    checkpoint_every_steps, keep_checkpoints
    log_every_steps            progress lines and TensorBoard scalars
    summary_every_steps, summary_examples, summary_image_pairs
                               embedding statistics (per-feature std, effective rank) of a fixed
                               batch and pictures of augmented pairs in TensorBoard
    collapse_threshold, collapse_patience_steps, nan_check_weights
    online_eval.*              the online linear probe and held-out kNN (`config.online_eval`)
    peer_timeout_s             several processes: seconds without a finished step after which a
                               process decides a peer died and exits PEER_LOST (`training.watchdog`)
"""


import ml_collections
from ml_collections import config_dict

from keras_vicreg.config import checks
from keras_vicreg.config import model_options
from keras_vicreg.config import online_eval
from keras_vicreg.config import optimizer_options
from keras_vicreg.config.checks import at_least
from keras_vicreg.config.checks import choice
from keras_vicreg.config.common import cpu_has_bfloat16  # noqa: F401  (configs call it here)
from keras_vicreg.data import transforms
from keras_vicreg.config import common
from keras_vicreg.models import backbones
from keras_vicreg.models import expander as expander_lib
from keras_vicreg import losses
from keras_vicreg.data import pretraining as data_pretraining
from keras_vicreg.data import sources

SYNTHETIC = "synthetic"
BACKBONES = backbones.NAMES
MIXED_PRECISION = ("float32", "mixed_bfloat16", "mixed_float16")
PHOTOMETRIC_DEVICES = data_pretraining.PHOTOMETRIC_DEVICES


def default_config():
    """The defaults of every key; a config file starts here and sets its recipe.

    The derived keys `steps_per_epoch`, `total_steps` and `optimizer.warmup_steps` are placeholders
    that `keras_vicreg.config.common.set_derived_numbers` fills with references, so that they follow
    command-line overrides of `batch_size`, `epochs` or `num_examples`.

    Returns:
        An unlocked `ml_collections.ConfigDict`.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dataset = "cifar10"
    config.split = config_dict.placeholder(str)
    config.augmentation = config_dict.placeholder(str)
    config.image_size = 32
    config.eval_image_size = config_dict.placeholder(int)  # None: image_size
    config.eval_crop_fraction = 224.0 / 256.0
    config.num_examples = 50_000
    config.shuffle_buffer = 10_000
    config.in_memory = False
    config.photometric_device = "host"  # or "accelerator": in the train step
    config.max_image_pixels = 50_000_000  # data.image_headers.MAX_IMAGE_PIXELS: why that many
    config.max_undecodable_fraction = 0.01
    config.batch_size = 256
    config.epochs = 100
    config.steps_per_epoch = config_dict.placeholder(int)
    config.total_steps = config_dict.placeholder(int)

    config.model = ml_collections.ConfigDict()
    config.model.backbone = "resnet18"
    config.model.source = "keras_hub"
    config.model.stem = "small"
    config.model.filters = (64, 128, 256, 512)
    config.model.zero_init_residual = True
    config.model.vit_pooling = "class_token"  # or "mean" of the patch tokens (the ViTs only)
    # keras_vicreg.experimental.cpu: fused BatchNorm and matmul filter gradients, for small CPUs.
    config.model.experimental_cpu_kernels = False
    config.model.expander = "2048-2048-2048"
    config.model.sync_batch_norm = True
    config.model.covariance = "auto"
    config.model.sim_coeff = 25.0
    config.model.std_coeff = 25.0
    config.model.cov_coeff = 1.0
    model_options.add_defaults(config.model)  # branch b, predictor, momentum, loss variants

    config.optimizer = ml_collections.ConfigDict()
    optimizer_options.add_defaults(config.optimizer)  # LARS, the released recipe

    config.mixed_precision = "float32"
    config.jit_compile = config_dict.placeholder(bool)
    config.tf_intra_op_threads = config_dict.placeholder(int)
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.log_every_steps = 50
    config.summary_every_steps = 500
    config.summary_examples = 256
    config.summary_image_pairs = 4
    config.collapse_threshold = 0.05
    config.collapse_patience_steps = 200
    config.nan_check_weights = True
    config.peer_timeout_s = 600.0
    online_eval.add_defaults(config)
    return config


def eval_image_size(config):
    """The side of the whole images the exported backbone reads: `config.eval_image_size`, or the
    pretraining `config.image_size` when that is None."""
    return config.image_size if config.get("eval_image_size") is None else config.eval_image_size


def _data_problems(flat, problems):
    dataset = flat["config.dataset"]
    if dataset != SYNTHETIC and not sources.is_folder(dataset):
        try:
            sources.dataset_spec(dataset)
        except ValueError:
            problems.append(
                f"config.dataset must be a tfds name of {sorted(sources.DATASETS)}, "
                f"{SYNTHETIC!r} (generated images) or an existing folder of class subfolders. "
                f"Received: config.dataset={dataset!r}"
            )
    if dataset == SYNTHETIC and flat["config.augmentation"] is None:
        problems.append(
            f"config.augmentation must name a preset for dataset={SYNTHETIC!r}, one of "
            f"{sorted(transforms.AUGMENTATIONS)}. Received: config.augmentation=None"
        )
    augmentation = flat["config.augmentation"]
    if augmentation is not None:
        choice(problems, "config.augmentation", augmentation, sorted(transforms.AUGMENTATIONS),
                "an augmentation preset (or None for the dataset's)")
    choice(problems, "config.photometric_device", flat["config.photometric_device"],
           PHOTOMETRIC_DEVICES, "where the views' photometric half runs")
    for key in ("config.image_size", "config.num_examples", "config.batch_size",
                "config.epochs", "config.checkpoint_every_steps", "config.keep_checkpoints",
                "config.log_every_steps", "config.summary_every_steps"):
        at_least(problems, key, flat[key], 1)
    if flat["config.eval_image_size"] is not None:
        at_least(problems, "config.eval_image_size", flat["config.eval_image_size"], 1)
    crop_fraction = flat["config.eval_crop_fraction"]
    if not 0.0 < crop_fraction <= 1.0:
        problems.append(
            "config.eval_crop_fraction must be in (0, 1]. "
            f"Received: config.eval_crop_fraction={crop_fraction!r}"
        )
    at_least(problems, "config.max_image_pixels", flat["config.max_image_pixels"], 1)
    fraction = flat["config.max_undecodable_fraction"]
    if not 0.0 <= fraction <= 1.0:
        problems.append("config.max_undecodable_fraction must be in [0, 1]. "
                        f"Received: config.max_undecodable_fraction={fraction!r}")
    if not flat["config.peer_timeout_s"] > 0:
        problems.append(f"config.peer_timeout_s must be > 0 (seconds). Received: "
                        f"config.peer_timeout_s={flat['config.peer_timeout_s']}")
    if flat["config.tf_intra_op_threads"] is not None:
        at_least(problems, "config.tf_intra_op_threads", flat["config.tf_intra_op_threads"], 1)
    for key in ("config.shuffle_buffer", "config.summary_image_pairs"):
        at_least(problems, key, flat[key], 0)
    at_least(problems, "config.summary_examples", flat["config.summary_examples"], 2)
    examples, summary = flat["config.num_examples"], flat["config.summary_examples"]
    if isinstance(examples, int) and isinstance(summary, int) and summary > examples:
        problems.append(
            "config.summary_examples must be at most num_examples: the TensorBoard pictures and "
            f"statistics use the first summary_examples images of the data ({examples}). "
            f"Received: config.summary_examples={summary}"
        )
    seed = flat["config.seed"]
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        problems.append(
            "config.seed must be an int in [0, 2**32) (it seeds NumPy, Python and the backend). "
            f"Received: config.seed={seed!r}"
        )
    steps, examples, batch = (
        flat["config.steps_per_epoch"], flat["config.num_examples"], flat["config.batch_size"]
    )
    at_least(problems, "config.steps_per_epoch", steps, 1)
    at_least(problems, "config.total_steps", flat["config.total_steps"], 1)
    total, epochs = flat["config.total_steps"], flat["config.epochs"]
    if None not in (steps, total, epochs) and total != steps * epochs:
        problems.append(
            "config.total_steps is derived, steps_per_epoch * epochs = "
            f"{steps} * {epochs} = {steps * epochs}: change --config.epochs (or "
            f"--config.steps_per_epoch) instead. Received: config.total_steps={total}"
        )
    if None not in (steps, examples, batch) and batch > 0 and steps > examples // batch:
        problems.append(
            f"config.steps_per_epoch must be at most num_examples // batch_size = "
            f"{examples} // {batch} = {examples // batch} (the full batches of an epoch). "
            f"Received: config.steps_per_epoch={steps}"
        )


def _model_problems(flat, problems):
    choice(problems, "config.model.backbone", flat["config.model.backbone"], BACKBONES,
            "a backbone")
    choice(problems, "config.model.source", flat["config.model.source"], backbones.SOURCES,
            "a ResNet source")
    choice(problems, "config.model.stem", flat["config.model.stem"], backbones.STEMS,
            "a ResNet stem")
    choice(problems, "config.model.vit_pooling", flat["config.model.vit_pooling"],
            backbones.VIT_POOLINGS, "a ViT pooling")
    backbone, size = flat["config.model.backbone"], flat["config.image_size"]
    if backbone in BACKBONES and isinstance(size, int):
        problem = backbones.catalog.image_size_problem(backbone, size)
        if problem:
            problems.append(f"config.image_size: {problem}. Received: config.image_size={size}")
    filters = flat["config.model.filters"]
    if len(filters) != 4 or not all(isinstance(f, int) and f > 0 for f in filters):
        problems.append(
            "config.model.filters must be four positive stage widths such as (64, 128, 256, 512). "
            f"Received: config.model.filters={tuple(filters)}"
        )
    try:
        expander_lib.parse_spec(flat["config.model.expander"])
    except ValueError as error:
        problems.append(f"config.model.expander: {error}")
    try:
        losses.resolve_covariance_method(flat["config.model.covariance"], None, 0)
    except ValueError as error:
        problems.append(f"config.model.covariance: {error}")
    for key in ("config.model.sim_coeff", "config.model.std_coeff", "config.model.cov_coeff"):
        at_least(problems, key, flat[key], 0.0)
    model_options.problems(flat, problems, BACKBONES)


def _training_problems(flat, problems, num_replicas):
    choice(problems, "config.mixed_precision", flat["config.mixed_precision"], MIXED_PRECISION,
            "a dtype policy")
    at_least(problems, "config.collapse_threshold", flat["config.collapse_threshold"], 0.0)
    at_least(problems, "config.collapse_patience_steps", flat["config.collapse_patience_steps"], 1)
    batch = flat["config.batch_size"]
    if isinstance(batch, int) and batch > 0 and batch % num_replicas:
        problems.append(
            f"config.batch_size (the global batch) must be a multiple of the number of replicas, "
            f"{num_replicas}, so that every replica gets as many rows: e.g. "
            f"{max(num_replicas, batch - batch % num_replicas)}. "
            f"Received: config.batch_size={batch}"
        )


def validate(config, num_replicas=1):
    """Checks a resolved pretraining config; raises one ValueError listing every problem.

    A valid `optimizer.base_learning_rate="auto"` is then replaced by its number
    (`common.auto_base_learning_rate` of `batch_size`), and `online_eval.probe="auto"` by a bool,
    so that the printed and saved config show what the run does.

    Reads no data: a folder given as `dataset` is only checked to exist, and `num_examples` is
    compared with the dataset's size later, when the dataset is opened.

    Args:
        config: an `ml_collections.ConfigDict` (after command-line overrides).
        num_replicas: the number of replicas the global batch is split over.

    Returns:
        `config`, unchanged but for "auto".
    """
    unresolved = []
    flat = checks.flatten(config, unresolved=unresolved)
    problems = checks.key_problems(flat, default_config(), "pretraining")
    if not problems:  # the value checks below assume every key with its type
        problems += unresolved
        _data_problems(flat, problems)
        _model_problems(flat, problems)
        optimizer_options.problems(flat, problems)
        _training_problems(flat, problems, num_replicas)
        online_eval.problems(flat, problems)
    if problems:
        raise ValueError(
            f"Invalid pretraining config ({len(problems)} problem"
            f"{'s' if len(problems) > 1 else ''}):\n  - " + "\n  - ".join(problems)
        )
    if config.optimizer.base_learning_rate == common.AUTO:
        config.optimizer.base_learning_rate = common.base_learning_rate(config)
    online_eval.resolve(config)
    return config

