"""The pretraining config's VICReg switches: a second branch, predictor, stop-gradient, momentum
encoder, expander BatchNorm and the loss variants, with their defaults and validation.

They are the options of `keras_vicreg.VICReg` that make the rows of the paper's flexibility and
ablation tables (configs/paper_flexibility.py, configs/paper_ablations.py); the defaults are
VICReg's own setting, one network of shared weights. `keras_vicreg.config.pretraining` adds them
to `config.model` and calls `problems` when it validates a config; `keras_vicreg.training.recipe`
passes them to the model. The keys, under `config.model`:

    branch_b             "shared" (one network), "own_weights" (branch b: the same architecture
                         with its own weights, the paper's DW) or "own_architecture" (branch b:
                         `backbone_b`, the paper's DA); both branches read the same images
    backbone_b           with "own_architecture": branch b's backbone name; its widths, stem and
                         source are those of `backbone`'s keys. None otherwise
    predictor            None, or an MLP spec on branch a's embeddings ("512-2048"), its last
                         width the expander's
    stop_gradient_b      no gradient through branch b's embeddings (SimSiam's stop-gradient)
    momentum             None, or the starting rate of a momentum encoder as branch b (BYOL: 0.996)
    momentum_schedule    "cosine": BYOL's ramp of the rate from `momentum` to 1 over
                         `total_steps`; "constant": the rate stays `momentum`
    expander_batch_norm  BatchNorm in the expander's hidden layers
    invariance           "mse" (VICReg's) or "cosine" (BYOL's and SimSiam's 2 - 2 cos)
    symmetric            both views through both sides, the loss averaged over the two directions
    gamma, eps           the variance term's target std and the epsilon under its square root
"""

from ml_collections import config_dict

from keras_vicreg import losses
from keras_vicreg.config.checks import at_least
from keras_vicreg.config.checks import choice
from keras_vicreg.models import expander as expander_lib

BRANCH_B = ("shared", "own_weights", "own_architecture")
MOMENTUM_SCHEDULES = ("cosine", "constant")


def add_defaults(model):
    """Adds the switches' keys, at VICReg's own setting, to `config.model` (a ConfigDict)."""
    model.branch_b = "shared"
    model.backbone_b = config_dict.placeholder(str)
    model.predictor = config_dict.placeholder(str)
    model.stop_gradient_b = False
    model.momentum = config_dict.placeholder(float)
    model.momentum_schedule = "cosine"
    model.expander_batch_norm = True
    model.invariance = "mse"
    model.symmetric = False
    model.gamma = 1.0
    model.eps = 1e-4
    return model


def _last_width(spec):
    return expander_lib.parse_spec(spec)[-1]


def problems(flat, found, backbones):
    """Appends to `found` what is wrong with the switches of a flattened config.

    Args:
        flat: {dotted key: value} (`checks.flatten`), with every key present.
        found: the list of problems being gathered.
        backbones: the backbone names `config.model.backbone` may take (branch b's too).
    """
    key = "config.model."
    branch_b, backbone_b = flat[key + "branch_b"], flat[key + "backbone_b"]
    choice(found, key + "branch_b", branch_b, BRANCH_B, "how branch b relates to branch a")
    if branch_b == "own_architecture":
        choice(found, key + "backbone_b", backbone_b, backbones,
               'branch b\'s backbone (with branch_b="own_architecture")')
    elif backbone_b is not None:
        found.append(
            f'{key}backbone_b names branch b\'s own architecture: set branch_b="own_architecture" '
            f"too, or leave it None. Received: {key}backbone_b={backbone_b!r}, "
            f"{key}branch_b={branch_b!r}"
        )
    predictor = flat[key + "predictor"]
    if predictor is not None:
        try:
            width = _last_width(predictor)
        except ValueError as error:
            found.append(f"{key}predictor: {error}")
        else:
            try:
                embedding = _last_width(flat[key + "expander"])
            except ValueError:
                embedding = width  # the expander's own problem is reported on its own
            if width != embedding:
                found.append(
                    f"{key}predictor must end at the embedding width, the expander's last "
                    f"width {embedding}: e.g. \"{max(embedding // 4, 1)}-{embedding}\". "
                    f"Received: {key}predictor={predictor!r}"
                )
    momentum = flat[key + "momentum"]
    if momentum is not None and not 0.0 <= momentum < 1.0:
        found.append(
            f"{key}momentum is the momentum encoder's starting rate, in [0, 1) (BYOL: 0.996), "
            f"or None for no momentum encoder. Received: {key}momentum={momentum!r}"
        )
    if momentum is not None and branch_b != "shared":
        found.append(
            f"{key}momentum makes branch b a moving average of branch a: it needs "
            f'branch_b="shared". Received: {key}branch_b={branch_b!r}'
        )
    choice(found, key + "momentum_schedule", flat[key + "momentum_schedule"],
           MOMENTUM_SCHEDULES, "the momentum's schedule")
    if flat[key + "symmetric"] and branch_b != "shared":
        found.append(
            f"{key}symmetric feeds both views to both sides, which needs one network or a "
            f'momentum encoder: branch_b="shared". Received: {key}branch_b={branch_b!r}'
        )
    choice(found, key + "invariance", flat[key + "invariance"], losses.INVARIANCES,
           "an invariance term")
    at_least(found, key + "gamma", flat[key + "gamma"], 0.0, strict=True)
    at_least(found, key + "eps", flat[key + "eps"], 0.0)


def model_kwargs(model, total_steps):
    """The `keras_vicreg.VICReg` keyword arguments of the switches of `config.model`.

    Branch b's backbone is the caller's to build (`branch_b`, `backbone_b`); the momentum's
    cosine ramp runs over `total_steps`.
    """
    ramp = model.momentum is not None and model.momentum_schedule == "cosine"
    return dict(
        predictor=model.predictor,
        stop_gradient_b=model.stop_gradient_b,
        momentum=model.momentum,
        momentum_ramp_steps=total_steps if ramp else None,
        expander_batch_norm=model.expander_batch_norm,
        invariance=model.invariance,
        symmetric=model.symmetric,
        gamma=model.gamma,
        eps=model.eps,
    )
