"""The pretraining config's optimizer: LARS or AdamW and their `WarmupCosine` schedule, with their
defaults and validation.

`keras_vicreg.config.pretraining` adds these keys to `config.optimizer` and calls `problems` when
it validates a config; `keras_vicreg.training.recipe` builds the optimizer from them. The keys,
under `config.optimizer`:

    name                 "lars" (the release's) or "adamw" (Keras' AdamW, e.g. for a ViT)
    base_learning_rate   the rate at batch 256 (peak = base * batch_size / 256), or "auto": the
                         paper's table by batch size for LARS at 100 epochs, 128 -> 0.8,
                         256 -> 0.5, 512 -> 0.4, larger -> 0.3, a batch taking the row of the
                         smallest listed batch >= it (`common.auto_base_learning_rate`);
                         `validate` writes the number into the config
    warmup_epochs, warmup_steps, end_factor
                         the linear warmup and the cosine's end, as a fraction of the peak
    weight_decay         LARS' coupled decay, or AdamW's decoupled one (lr * wd * p)
    momentum, eta, clip_trust_ratio
                         LARS only: momentum, trust coefficient, LARC's clipping
    beta_1, beta_2, epsilon
                         AdamW only
    exclude_from_decay   regular expressions searched in each variable's path: the matched
                         variables skip the weight decay and LARS' trust ratio. The default,
                         `training.optimizers.EXCLUDE_FROM_DECAY` (biases, normalisation, a ViT's
                         class token and position embeddings), selects the release's 1-D
                         variables on a ResNet; () excludes nothing

A key of the other optimizer set away from its default is an error, not silently ignored.
"""

from ml_collections import config_dict

from keras_vicreg.config import common
from keras_vicreg.config.checks import at_least
from keras_vicreg.config.checks import choice
from keras_vicreg.training import optimizers

OPTIMIZERS = ("lars", "adamw")
# The keys only one optimizer reads, with their defaults.
ONLY_FOR = {
    "lars": {"momentum": 0.9, "eta": 1e-3, "clip_trust_ratio": False},
    "adamw": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},  # torch.optim.AdamW's defaults
}


def add_defaults(optimizer):
    """Adds the optimizer's keys, at the released recipe's setting, to `config.optimizer`."""
    optimizer.name = "lars"
    # A number or "auto": typed object, so that both pass the types and the command line.
    optimizer.base_learning_rate = config_dict.FieldReference(0.3, field_type=object)
    optimizer.warmup_epochs = 10
    optimizer.warmup_steps = config_dict.placeholder(int)
    optimizer.end_factor = 0.001
    optimizer.weight_decay = 1e-6
    for defaults in ONLY_FOR.values():
        for key, value in defaults.items():
            setattr(optimizer, key, value)
    optimizer.exclude_from_decay = optimizers.EXCLUDE_FROM_DECAY


def problems(flat, found):
    """Appends to `found` a message for each invalid `config.optimizer.*` value of `flat` (the
    config flattened to "config.optimizer.key" names)."""
    name = flat["config.optimizer.name"]
    choice(found, "config.optimizer.name", name, OPTIMIZERS, "an optimizer")
    _rate_problems(flat, found, name)
    for other, defaults in ONLY_FOR.items():
        if other == name or name not in OPTIMIZERS:
            continue
        for key, default in defaults.items():
            value = flat[f"config.optimizer.{key}"]
            if value != default:
                found.append(
                    f"config.optimizer.{key} is read by {other!r} only; with "
                    f"config.optimizer.name={name!r} it would be ignored: leave it at {default!r} "
                    f"or set config.optimizer.name={other!r}. Received: "
                    f"config.optimizer.{key}={value!r}"
                )
    for key in ("config.optimizer.beta_1", "config.optimizer.beta_2"):
        if not 0.0 <= flat[key] < 1.0:
            found.append(f"{key} must be in [0, 1). Received: {key}={flat[key]!r}")
    at_least(found, "config.optimizer.epsilon", flat["config.optimizer.epsilon"], 0.0, strict=True)
    try:
        optimizers.check_patterns("exclude_from_decay", flat["config.optimizer.exclude_from_decay"])
    except ValueError as error:
        found.append(f"config.optimizer.exclude_from_decay: {error}")
    at_least(found, "config.optimizer.weight_decay", flat["config.optimizer.weight_decay"], 0.0)
    at_least(found, "config.optimizer.eta", flat["config.optimizer.eta"], 0.0, strict=True)
    at_least(found, "config.optimizer.warmup_steps", flat["config.optimizer.warmup_steps"], 0)
    warmup_steps, total = flat["config.optimizer.warmup_steps"], flat["config.total_steps"]
    if None not in (warmup_steps, total) and warmup_steps > total:
        found.append(
            f"config.optimizer.warmup_steps must be at most total_steps={total}. "
            f"Received: config.optimizer.warmup_steps={warmup_steps}"
        )
    for key in ("config.optimizer.momentum", "config.optimizer.end_factor"):
        value = flat[key]
        if not 0.0 <= value <= 1.0:
            found.append(f"{key} must be in [0, 1]. Received: {key}={value!r}")
    warmup, epochs = flat["config.optimizer.warmup_epochs"], flat["config.epochs"]
    if not 0 <= warmup <= epochs:
        found.append(
            f"config.optimizer.warmup_epochs must be in [0, epochs={epochs}]. "
            f"Received: config.optimizer.warmup_epochs={warmup!r}"
        )


def _rate_problems(flat, found, name):
    rate = flat["config.optimizer.base_learning_rate"]
    if rate == common.AUTO:
        if name == "adamw":
            found.append(
                f"config.optimizer.base_learning_rate={common.AUTO!r} is the paper's table for "
                "LARS; it does not apply to AdamW: set a number (e.g. 0.001, the rate at batch "
                "256). Received: config.optimizer.base_learning_rate='auto' with "
                "config.optimizer.name='adamw'"
            )
    elif isinstance(rate, bool) or not isinstance(rate, (int, float)):
        found.append(
            f"config.optimizer.base_learning_rate must be a number > 0 or {common.AUTO!r} (the "
            f"paper's table by batch size). Received: config.optimizer.base_learning_rate={rate!r}"
        )
    else:
        at_least(found, "config.optimizer.base_learning_rate", rate, 0.0, strict=True)
