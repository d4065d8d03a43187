"""What every file of `configs/` shares: its argument, its derived numbers and `runlocal`.

A config file is big_vision's `get_config(arg)` returning an `ml_collections.ConfigDict`. Its
argument, the text after the colon in `--config=configs/imagenet_resnet50.py:1000ep,runlocal`, is
a comma-separated list of names; `parse_arg` reads it against what the file allows (one value per
group of choices, such as `100ep` / `1000ep`, and on/off flags such as `runlocal`), so that every
config answers an unknown name with the same ValueError naming the allowed ones.

A pretraining config sets its recipe (dataset size, batch, epochs, warmup epochs) and ends with
`finish_pretraining(config, arg)`: the derived numbers (`steps_per_epoch`, `total_steps`,
`optimizer.warmup_steps`) become `FieldReference`s of those keys, so that a command-line override
such as `--config.batch_size=512` or `--config.epochs=10` updates them; then `runlocal` shrinks the
recipe for a smoke run. The numbers are computed here and nowhere else, and so is the base
learning rate of `optimizer.base_learning_rate="auto"` (`auto_base_learning_rate`), which
`keras_vicreg.config.pretraining.validate` writes into the config.
"""

import ml_collections

RUNLOCAL = "runlocal"


def parse_arg(arg, *, flags=(), **choices):
    """A config's argument, checked: which value of each choice, which flags are on.

    Args:
        arg: the config's argument, `None`, `""` or names separated by commas (`"1000ep,runlocal"`).
        flags: names that are off unless given. `runlocal` is always one.
        **choices: `group=(default, other, ...)`: at most one of the names, the first when none is
            given, e.g. `epochs=("1000ep", "100ep")`.

    Returns:
        A frozen `ml_collections.ConfigDict`: each group's chosen name, and `True` or `False` for
        each flag (e.g. `args.epochs == "1000ep"`, `args.runlocal`).

    Raises:
        ValueError: a name that is neither a flag nor a choice, or two names of one group.
    """
    flags = (RUNLOCAL, *(name for name in flags if name != RUNLOCAL))
    group_of = {name: group for group, names in choices.items() for name in names}
    allowed = (*group_of, *flags)
    parsed = {group: None for group in choices}
    parsed.update({name: False for name in flags})
    for name in (part.strip() for part in (arg or "").split(",")):
        if not name:
            continue
        if name in flags:
            parsed[name] = True
        elif name in group_of:
            group = group_of[name]
            if parsed[group] not in (None, name):
                raise ValueError(
                    f"The config's argument takes one of {list(choices[group])}. "
                    f"Received: arg={arg!r}"
                )
            parsed[group] = name
        else:
            raise ValueError(
                f"The config's argument is a comma-separated list of {list(allowed)}. "
                f"Received: arg={arg!r}"
            )
    for group, names in choices.items():
        if parsed[group] is None:
            parsed[group] = names[0]
    return ml_collections.FrozenConfigDict(parsed)


def set_derived_numbers(config):
    """Sets `steps_per_epoch`, `total_steps` and `optimizer.warmup_steps` as references.

        steps_per_epoch        = num_examples // batch_size     (full batches: the rest is dropped)
        total_steps            = steps_per_epoch * epochs
        optimizer.warmup_steps = steps_per_epoch * optimizer.warmup_epochs

    Each is a `FieldReference` of the keys it is computed from: overriding `num_examples`,
    `batch_size`, `epochs` or `optimizer.warmup_epochs` (in the file or on the command line)
    recomputes it, and overriding a derived number itself replaces its formula by the value.

    Args:
        config: a pretraining config (see `keras_vicreg.config.pretraining.default_config`).

    Returns:
        `config`, changed in place.
    """
    config.steps_per_epoch = config.get_ref("num_examples") // config.get_ref("batch_size")
    config.total_steps = config.get_ref("steps_per_epoch") * config.get_ref("epochs")
    config.optimizer.warmup_steps = (
        config.get_ref("steps_per_epoch") * config.optimizer.get_ref("warmup_epochs")
    )
    return config


# The paper's base learning rate by batch size for 100 epochs of LARS (VICReg's appendix, as public
# reimplementations read it): (largest batch of the row, base rate). Beyond the last row: 0.3.
AUTO = "auto"
BASE_LEARNING_RATE_BY_BATCH = ((128, 0.8), (256, 0.5), (512, 0.4))
BASE_LEARNING_RATE_LARGER = 0.3


def auto_base_learning_rate(batch_size):
    """The paper's base learning rate for a global batch of `batch_size` (LARS, 100 epochs).

    The table lists 128 -> 0.8, 256 -> 0.5, 512 -> 0.4 and "larger" -> 0.3. Its last row makes
    every batch above 512 take the next row's rate, so each listed batch is read as the upper end
    of its row: a batch takes the row of the smallest listed batch >= it (<= 128: 0.8,
    129..256: 0.5, 257..512: 0.4, above: 0.3). Between two rows this picks the lower of the two
    rates, the safer side for LARS' divergence; below 128 it keeps the smallest row's 0.8 rather
    than extrapolating the table's rise. The peak is then `base * batch_size / 256`
    (`keras_vicreg.training.schedules.WarmupCosine`).

    Args:
        batch_size: int >= 1, the global batch.

    Returns:
        The base learning rate, a float.
    """
    for largest_batch, rate in BASE_LEARNING_RATE_BY_BATCH:
        if batch_size <= largest_batch:
            return rate
    return BASE_LEARNING_RATE_LARGER


def base_learning_rate(config):
    """`config.optimizer.base_learning_rate` as a number: the table's for "auto"."""
    value = config.optimizer.base_learning_rate
    return auto_base_learning_rate(config.batch_size) if value == AUTO else value


def shrink_for_local_run(config):
    """The `runlocal` variant of a pretraining recipe: same dataset and method, a few small steps.

    Keeps the dataset, the augmentation and the loss, and shrinks everything that costs time: images
    of at most 64 pixels, batch 16, two epochs of three steps, a "64-64" expander, narrow ResNet
    widths with the small stem, frequent checkpoints and summaries, a small held-out evaluation
    (`online_eval`). Call it after
    `set_derived_numbers`: `total_steps` and `optimizer.warmup_steps` then follow the three steps.

    Args:
        config: a pretraining config with its derived numbers.

    Returns:
        `config`, changed in place.
    """
    config.image_size = min(config.image_size, 64)
    config.batch_size = 16
    config.epochs = 2
    config.steps_per_epoch = 3
    config.shuffle_buffer = 64
    config.model.stem = "small"
    config.model.filters = (8, 16, 32, 64)
    config.model.expander = "64-64"
    config.optimizer.warmup_epochs = 1
    config.checkpoint_every_steps = 2
    config.log_every_steps = 1
    config.summary_every_steps = 2
    config.summary_examples = 16
    config.summary_image_pairs = 2
    if "online_eval" in config:  # a held-out evaluation of seconds, at steps 3 and 6
        config.online_eval.every_steps = 3
        config.online_eval.held_out_examples = min(config.online_eval.held_out_examples, 256)
        config.online_eval.bank_examples = min(config.online_eval.bank_examples, 512)
    return config


def paper_100_epoch_recipe(config):
    """The 100-epoch ImageNet recipe every row of the paper's flexibility and ablation tables
    shares (configs/imagenet_resnet50.py's `100ep`): ResNet-50, batch 2048, LARS at base learning
    rate 0.3 with 10 warmup epochs, bfloat16. A row sets its own switches on top.

    Returns:
        `config` (from `pretraining.default_config()`), changed in place.
    """
    config.seed = 0
    config.dataset = "imagenet2012"
    config.augmentation = None  # the dataset's preset: "imagenet", the paper's asymmetric views
    config.image_size = 224
    config.num_examples = 1_281_167
    config.batch_size = 2048
    config.epochs = 100
    config.model.backbone = "resnet50"
    config.model.stem = "imagenet"
    config.optimizer.base_learning_rate = 0.3
    config.optimizer.warmup_epochs = 10
    config.optimizer.weight_decay = 1e-6
    config.optimizer.eta = 1e-3
    config.mixed_precision = "mixed_bfloat16"
    config.checkpoint_every_steps = 250
    config.summary_every_steps = 625
    return config


def generated_images_for_local_run(config):
    """`runlocal` of the paper's rows: generated 32-pixel images instead of ImageNet, the two-layer
    convnet for the ResNet-50, float32 and no compilation, so that six steps take seconds."""
    config.dataset = "synthetic"
    config.augmentation = "small"
    config.image_size = 32
    config.num_examples = 256
    config.model.backbone = "convnet"
    config.mixed_precision = "float32"
    config.jit_compile = False  # compiling would take longer than the six steps
    return config


def canvases_for_local_run(config):
    """`runlocal` of the dense transfer configs (detection, segmentation): 48-pixel Fashion-MNIST
    canvases (512 to train, 128 to test) and a narrow ResNet-18 with the small stem."""
    config.dataset = "canvases"
    config.backbone_depth = 18
    config.backbone_stem = "small"
    config.backbone_filters = (8, 16, 32, 64)
    config.image_size = 48
    config.canvas_train = 512
    config.canvas_test = 128
    return config


def finish_pretraining(config, args):
    """The end of every pretraining config: the derived numbers, then `runlocal` if asked.

    Args:
        config: the recipe, its own numbers set.
        args: what `parse_arg` returned.

    Returns:
        `config`, changed in place.
    """
    set_derived_numbers(config)
    if args.runlocal:
        shrink_for_local_run(config)
    return config


def cpu_has_bfloat16():
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), which oneDNN then uses."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = file.read()
    except OSError:  # not Linux: assume not
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
