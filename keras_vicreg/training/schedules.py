"""Learning-rate schedule of VICReg: linear warmup, then cosine decay, per step.

As in the VICReg release, the peak learning rate grows linearly with the global batch size,

    peak = base_learning_rate * batch_size / 256,

so that one base rate serves every batch size (base 0.2 at batch 2048 gives the paper's peak 1.6).
"""

import math
import numbers

import keras
from keras import ops


def _check_integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


def _check_real(name, value, minimum, maximum=math.inf):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not minimum <= value <= maximum
    ):
        raise ValueError(
            f"`{name}` must be a number in [{minimum}, {maximum}]. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="keras_vicreg")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to the batch-scaled peak, then cosine decay to a fraction of it.

    With `peak = base_learning_rate * batch_size / 256` and `end = end_factor * peak`:

        step < W:            lr = peak * step / W                         W = warmup_steps
        W <= step <= T:      lr = end + (peak - end) * (1 + cos(pi * t)) / 2,  T = total_steps
                             t = (step - W) / (T - W)
        step > T:            lr = end                      (from step W on where W = T)

    Evaluated at every optimizer step (the optimizer passes its iteration count), as in the VICReg
    release, not once per epoch.

    Args:
        base_learning_rate: float >= 0. Learning rate at batch size 256.
        total_steps: int >= 1. Steps of the whole run, warmup included.
        warmup_steps: int in [0, total_steps]. Steps of the linear warmup.
        batch_size: int >= 1. Global batch size (over all replicas). Defaults to `256`.
        end_factor: float in [0, 1]. Final learning rate as a fraction of the peak. Defaults to
            `0.001`.

    Example:

    ```python
    # The paper's ImageNet recipe: 1000 epochs of 625 steps at batch 2048, 10 warmup epochs.
    schedule = WarmupCosine(0.2, total_steps=625_000, warmup_steps=6_250, batch_size=2048)
    schedule.peak_learning_rate  # 1.6
    ```
    """

    def __init__(
        self, base_learning_rate, total_steps, warmup_steps, batch_size=256, end_factor=0.001
    ):
        _check_real("base_learning_rate", base_learning_rate, 0.0)
        _check_integer("total_steps", total_steps, 1)
        _check_integer("warmup_steps", warmup_steps, 0)
        _check_integer("batch_size", batch_size, 1)
        if warmup_steps > total_steps:
            raise ValueError(
                "`warmup_steps` cannot exceed `total_steps`. "
                f"Received: warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        _check_real("end_factor", end_factor, 0.0, 1.0)
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.batch_size = int(batch_size)
        self.end_factor = float(end_factor)

    @property
    def peak_learning_rate(self):
        """The learning rate at the end of the warmup: `base_learning_rate * batch_size / 256`."""
        return self.base_learning_rate * self.batch_size / 256.0

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        end = self.end_factor * peak
        # max(..., 1) keeps the division finite without warmup; its branch is then never selected.
        warmup = peak * step / max(self.warmup_steps, 1)
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps > 0:
            progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        else:
            # Warmup only: the run ends at the end of the warmup, so does the schedule.
            progress = ops.ones_like(step)
        cosine = end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "batch_size": self.batch_size,
            "end_factor": self.end_factor,
        }
