"""LARS, the optimizer VICReg was trained with, as a Keras 3 optimizer in `keras.ops`.

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
"""

import re

import keras
from keras import ops


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
            if isinstance(exclude_from_adaptation, str) or not all(
                isinstance(pattern, str) for pattern in exclude_from_adaptation
            ):
                raise ValueError(
                    "`exclude_from_adaptation` must be None or a list of regular expressions "
                    f"(strings). Received: exclude_from_adaptation={exclude_from_adaptation!r}"
                )
            exclude_from_adaptation = list(exclude_from_adaptation)
            for pattern in exclude_from_adaptation:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise ValueError(
                        f"Invalid regular expression in `exclude_from_adaptation` ({error}). "
                        f"Received: exclude_from_adaptation={exclude_from_adaptation!r}"
                    ) from error
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
        return any(re.search(pattern, variable.path) for pattern in self.exclude_from_adaptation)

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
