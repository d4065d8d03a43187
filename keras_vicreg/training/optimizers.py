"""LARS, the optimizer VICReg was trained with, as a Keras 3 optimizer in `keras.ops`; Keras'
AdamW with the same exclusion rule; and that rule, by variable name.

Keras has no LARS. This one follows You, Gitman and Ginsburg, "Large Batch Training of Convolutional
Networks" (arXiv:1708.03888, 2017), in the variant of the VICReg release (facebookresearch/vicreg),
which produced the published numbers. Per variable p with gradient g:

    dp = g + weight_decay * p                       coupled decay, before the trust ratio
    q  = eta * ||p|| / ||dp||                       q = 1 where ||p|| = 0 or ||dp|| = 0
    q  = min(q / learning_rate, 1)                  only with clip_trust_ratio=True (LARC)
    dp = q * dp
    mu = momentum * mu + dp
    p  = p - learning_rate * mu

Variables excluded from adaptation (by default every 1-D variable: biases, BatchNorm gamma and beta)
skip both the decay and the trust ratio: for them the update is plain SGD with momentum.

`clip_trust_ratio=True` is the "clip" mode of LARC (NVIDIA Apex), which solo-learn's small-scale
VICReg recipes use (`clip_lr`, with eta 0.02): a variable's rate becomes min(q, learning_rate), so
the schedule caps the layer-wise rate instead of multiplying it. The VICReg release does not clip.

Which variables skip weight decay (and, with LARS, the trust ratio): the release excludes every
1-D parameter (`p.ndim == 1`), which on its ResNets is exactly the biases and the BatchNorm gamma
and beta. `EXCLUDE_FROM_DECAY` names those by `variable.path` instead, and adds what a ViT has and
a ResNet lacks: the class token (1, 1, d), the position embeddings (N, d) and the attention's
query, key and value biases (heads, head_dim), which the 1-D rule would decay and trust-scale. On
a ResNet, the convnet and the expander both rules select the same variables
(tests/test_optimizers.py); on a ViT this deviates from the release, which has no ViT. `LARS`
itself keeps the release's 1-D rule as its default (`exclude_from_adaptation=None`).
"""

import re

import keras
from keras import ops


# Regular expressions searched in `variable.path` (keras-hub's layer and variable names): biases,
# normalisation scales and offsets, a ViT's class token and position embeddings.
EXCLUDE_FROM_DECAY = (
    r"(^|/)bias$",
    r"(^|/)(gamma|beta)$",
    r"(^|/)class_token$",
    r"(^|/)position_embedding/",
)


def check_patterns(name, patterns):
    """`patterns` as a list after checking that each compiles; a ValueError naming `name` if not.

    Args:
        name: the argument's name, for the message.
        patterns: a list or tuple of regular expressions (a plain substring such as "bias" works).
    """
    if isinstance(patterns, str) or not all(isinstance(pattern, str) for pattern in patterns):
        raise ValueError(
            f"`{name}` must be None or a list of regular expressions (strings). "
            f"Received: {name}={patterns!r}"
        )
    patterns = list(patterns)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"Invalid regular expression in `{name}` ({error}). Received: {name}={patterns!r}"
            ) from error
    return patterns


def matches(variable, patterns):
    """Whether one of the regular expressions `patterns` is found (`re.search`) in `variable.path`.
    """
    return any(re.search(pattern, variable.path) for pattern in patterns)


@keras.saving.register_keras_serializable(package="keras_vicreg")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum and coupled weight decay.

    Keras has no LARS. This implements the update of You et al., "Large Batch Training of
    Convolutional Networks" (2017), as released with VICReg (Bardes, Ponce and LeCun, ICLR 2022):
    the weight decay is added to the gradient *before* the layer-wise trust ratio, so LARS keeps its
    own `weight_decay` argument and the base class's decoupled decay is never used.

    Works on every backend, inside `jit`, and wrapped in `keras.optimizers.LossScaleOptimizer` for
    `mixed_float16` (the wrapper unscales the gradients before they reach `update_step`).

    Args:
        learning_rate: float, `keras.optimizers.schedules.LearningRateSchedule` or callable. The
            global learning rate, typically `keras_vicreg.training.schedules.WarmupCosine`.
        momentum: float in [0, 1]. Momentum of the velocity. Defaults to `0.9`.
        weight_decay: float >= 0. Coupled weight decay, added to the gradient of every variable
            that is not excluded. Defaults to `1e-6`.
        eta: float > 0. Trust coefficient: the update of a variable is scaled to
            `eta * ||p|| / ||dp||` of its norm. Defaults to `1e-3`.
        clip_trust_ratio: bool. LARC's clipping: the trust ratio becomes
            `min(q / learning_rate, 1)`, so that a variable's effective rate is
            `min(q, learning_rate)`. Defaults to `False` (the VICReg release's LARS).
        exclude_from_adaptation: `None` or a list of regular expressions (a plain substring such as
            `"bias"` works). With `None`, every 1-D variable is excluded from weight decay and from
            the trust ratio. With a list, exactly the variables whose `variable.path` matches one of
            the patterns (`re.search`) are excluded, and the 1-D rule no longer applies.
        **kwargs: base optimizer arguments (`name`, `clipnorm`, `global_clipnorm`, `clipvalue`,
            `use_ema`, `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`). `weight_decay` is LARS's own, see above.

    Example:

    ```python
    schedule = keras_vicreg.WarmupCosine(0.2, total_steps=100_000, warmup_steps=1_000,
                                                   batch_size=2048)
    optimizer = keras_vicreg.LARS(schedule, weight_decay=1e-6)
    ```
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=1e-6,
        eta=1e-3,
        exclude_from_adaptation=None,
        clip_trust_ratio=False,
        **kwargs,
    ):
        if isinstance(momentum, bool) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be a float in [0, 1]. Received: momentum={momentum}")
        if weight_decay is None or weight_decay < 0:
            raise ValueError(
                f"`weight_decay` must be a float >= 0. Received: weight_decay={weight_decay}"
            )
        if not eta > 0:
            raise ValueError(f"`eta` must be a float > 0. Received: eta={eta}")
        if not isinstance(clip_trust_ratio, bool):
            raise ValueError(
                "`clip_trust_ratio` must be True or False. "
                f"Received: clip_trust_ratio={clip_trust_ratio!r}"
            )
        if exclude_from_adaptation is not None:
            exclude_from_adaptation = check_patterns(
                "exclude_from_adaptation", exclude_from_adaptation
            )
        # The base class would apply `weight_decay` as decoupled decay; LARS's decay is coupled.
        super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.exclude_from_adaptation = exclude_from_adaptation
        self.clip_trust_ratio = clip_trust_ratio

    def is_excluded(self, variable):
        """Whether `variable` skips weight decay and the trust ratio.

        Args:
            variable: a model variable.

        Returns:
            `True` for the variables matched by `exclude_from_adaptation`, or, where it is `None`,
            for every 1-D variable.
        """
        if self.exclude_from_adaptation is None:
            return len(variable.shape) == 1
        return matches(variable, self.exclude_from_adaptation)

    def build(self, variables):
        """Creates one momentum buffer per variable and fixes which variables are excluded.

        Args:
            variables: list of the model variables to optimize.
        """
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        # Decided once here, from static shapes and paths, so `update_step` traces no branch on it.
        self._excluded = [self.is_excluded(variable) for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        """Applies one LARS update to `variable`."""
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        update = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        if not self._excluded[index]:
            update = update + ops.cast(self.lars_weight_decay, dtype) * variable
            param_norm = ops.sqrt(ops.sum(ops.square(variable)))
            update_norm = ops.sqrt(ops.sum(ops.square(update)))
            # The safe denominator keeps the unused branch of `where` finite.
            safe_update_norm = ops.where(update_norm > 0, update_norm, ops.ones_like(update_norm))
            trust_ratio = ops.where(
                ops.logical_and(param_norm > 0, update_norm > 0),
                ops.cast(self.eta, dtype) * param_norm / safe_update_norm,
                ops.ones_like(param_norm),
            )
            if self.clip_trust_ratio:
                # min(q / lr, 1), selected so that lr = 0 gives 1 rather than a division by zero.
                trust_ratio = ops.where(
                    trust_ratio < learning_rate, trust_ratio / ops.maximum(learning_rate, 1e-30),
                    ops.ones_like(trust_ratio),
                )
            update = trust_ratio * update
        momentum = self.momentums[index]
        self.assign(momentum, ops.cast(self.momentum, dtype) * momentum + update)
        self.assign_sub(variable, learning_rate * momentum)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "eta": self.eta,
                "exclude_from_adaptation": self.exclude_from_adaptation,
                "clip_trust_ratio": self.clip_trust_ratio,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vicreg")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW, with the variables to leave undecayed chosen by regular expressions on paths.

    Keras' `exclude_from_weight_decay(var_names=...)` searches `variable.name`, which in Keras 3 is
    the last part of the path only ("embeddings", "bias"), and its choice is not part of
    `get_config`. This subclass takes the patterns as an argument, searches `variable.path` (so
    that `"position_embedding/"` can be told from other embeddings), hands the matched variables
    to Keras' own `exclude_from_weight_decay(var_list=...)` when it is built, and saves the
    patterns in its config. The update itself is Keras' AdamW: decoupled decay
    `p -= learning_rate * weight_decay * p`, with the scheduled learning rate, then Adam.

    Args:
        learning_rate, weight_decay, beta_1, beta_2, epsilon and the base optimizer arguments:
            those of `keras.optimizers.AdamW`.
        exclude_from_decay: `None` (every variable is decayed) or a list of regular expressions
            searched in `variable.path`, e.g. `EXCLUDE_FROM_DECAY`.

    Example:

    ```python
    optimizer = AdamW(1e-3, weight_decay=0.05, exclude_from_decay=EXCLUDE_FROM_DECAY)
    ```
    """

    def __init__(self, learning_rate=0.001, weight_decay=0.004, exclude_from_decay=None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        if exclude_from_decay is not None:
            exclude_from_decay = check_patterns("exclude_from_decay", exclude_from_decay)
        self.exclude_from_decay = exclude_from_decay

    def is_excluded(self, variable):
        """Whether `variable` skips the weight decay: its path matches `exclude_from_decay`."""
        return self.exclude_from_decay is not None and matches(variable, self.exclude_from_decay)

    def build(self, variables):
        """Hands the excluded variables to `exclude_from_weight_decay`, then builds Keras' AdamW.
        """
        if self.built:
            return
        self.exclude_from_weight_decay(
            var_list=[variable for variable in variables if self.is_excluded(variable)]
        )
        super().build(variables)

    def get_config(self):
        config = super().get_config()
        config["exclude_from_decay"] = self.exclude_from_decay
        return config
