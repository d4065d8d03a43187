"""PyTorch's SGD as a Keras optimizer: coupled weight decay and a learning rate per variable group.

The released evaluations (facebookresearch/vicreg `evaluate.py`) train with `torch.optim.SGD`, whose
weight decay is added to the gradient before the momentum, and fine-tune with two parameter groups
(backbone and head) at different learning rates under one cosine schedule. Keras' `SGD` decays the
weights after the update and has one learning rate; this optimizer does what PyTorch does. Per
variable p with gradient g and the group's multiplier m:

    d  = g + weight_decay * p
    mu = momentum * mu + d
    p  = p - m * learning_rate * mu                    (nesterov: d + momentum * mu for mu)

Variables excluded with Keras' `exclude_from_weight_decay` get no decay, as VISSL's
`regularize_bn: False` leaves BatchNorm's scale and offset undecayed.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vicreg")
class GroupSGD(keras.optimizers.Optimizer):
    """SGD with momentum, coupled weight decay and per-variable learning-rate multipliers.

    Args:
        learning_rate: float, schedule or callable: the learning rate of multiplier 1.
        momentum: float in [0, 1). Defaults to 0.9.
        weight_decay: float >= 0, added to the gradient as in `torch.optim.SGD`. Defaults to 0.
        nesterov: Nesterov momentum as `torch.optim.SGD(nesterov=True)` computes it (VISSL's
            linear transfer recipes). Defaults to False.
        **kwargs: base optimizer arguments (`name`, `clipnorm`, ...); `weight_decay` is this
            optimizer's own, see above.

    Call `set_learning_rate_multiplier(variables, multiplier)` before the first update to give
    variables their own learning rate (the multipliers are not part of `get_config`).

    Example:
        >>> optimizer = GroupSGD(keras.optimizers.schedules.CosineDecay(0.08, 1000))
        >>> optimizer.set_learning_rate_multiplier(backbone.trainable_variables, 0.03 / 0.08)
    """

    def __init__(self, learning_rate, momentum=0.9, weight_decay=0.0, nesterov=False,
                 name="group_sgd", **kwargs):
        if isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        if weight_decay is None or weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
        if nesterov and not momentum:
            raise ValueError("Nesterov momentum needs `momentum` > 0 (as in torch.optim.SGD). "
                             f"Received: momentum={momentum}, nesterov={nesterov}")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self._multiplier_of = {}

    def set_learning_rate_multiplier(self, variables, multiplier):
        """Scales the learning rate of `variables` by `multiplier` (>= 0); call before building."""
        if self.built:
            raise ValueError(
                "Set learning-rate multipliers before the optimizer is built (before the first "
                f"update). Received: multiplier={multiplier} for a built optimizer"
            )
        if multiplier < 0:
            raise ValueError(f"`multiplier` must be >= 0. Received: multiplier={multiplier}")
        for variable in variables:
            self._multiplier_of[id(variable)] = float(multiplier)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._multipliers = [self._multiplier_of.get(id(v), 1.0) for v in variables]
        self.momentums = (
            self.add_optimizer_variables(variables, "momentum") if self.momentum else None
        )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype) * self._multipliers[index]
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(gradient, ops.multiply(variable, self.coupled_weight_decay))
        if self.momentums is not None:
            velocity = self.momentums[index]
            new_velocity = ops.add(ops.multiply(velocity, self.momentum), gradient)
            self.assign(velocity, new_velocity)
            if self.nesterov:
                gradient = ops.add(gradient, ops.multiply(new_velocity, self.momentum))
            else:
                gradient = new_velocity
        self.assign_sub(variable, ops.multiply(gradient, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.coupled_weight_decay,
                      nesterov=self.nesterov)
        return config


def multistep_schedule(learning_rate, milestones, steps_per_epoch, gamma=0.1):
    """The learning rate times `gamma` at each milestone epoch, as PyTorch's `MultiStepLR` stepped
    once per epoch (VISSL's linear transfer recipes).

    Keras calls the schedule with the number of updates done, so the update that opens epoch `m`
    (update `m * steps_per_epoch`, counted from 0) is the first at the decayed rate.
    """
    boundaries = [int(m) * steps_per_epoch - 1 for m in milestones]
    values = [learning_rate * gamma ** index for index in range(len(milestones) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
