"""Training callbacks for VICReg pretraining, backend-neutral.

- `NaNGuard` stops a run at the first non-finite loss (or weight) before any checkpoint listed
  after it can save the broken weights: long VICReg runs at large learning rates, in mixed
  precision especially, are known to diverge late.
- `CollapseMonitor` warns when the embeddings' per-feature std stays near 0: a collapse shows there
  first while the covariance term quietly goes to 0 as well.
- `LearningRateLogger` puts the learning rate into the logs, so `CSVLogger`, `TensorBoard` and
  `History` record the warmup and cosine per step.

Order matters: callbacks see the logs in list order, and one that raises stops those after it.
Put `NaNGuard` and `LearningRateLogger` before `ModelCheckpoint`, `BackupAndRestore`, `CSVLogger`
and `TensorBoard`.
"""

import math
import numbers
import warnings

import keras
from keras import ops


class NonFiniteTrainingError(FloatingPointError):
    """Raised by `NaNGuard` when a logged value or a weight is NaN or infinite.

    Attributes:
        step: the optimizer step count when the guard fired (steps applied so far, so the step
            that produced the bad value is the `step`-th).
    """

    def __init__(self, message, step):
        super().__init__(message)
        self.step = step


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or Inf in the logs or the weights, naming the step.

    Unlike `keras.callbacks.TerminateOnNaN`, which only sets `model.stop_training` (the epoch still
    ends and `ModelCheckpoint` or `BackupAndRestore` then save the non-finite weights over the last
    good ones), this callback raises `NonFiniteTrainingError` from `on_train_batch_end`: no later
    callback runs for that batch and no epoch-end hook runs at all, so checkpoints listed *after*
    the guard keep their last finite state and a restarted run resumes from it.

    The weights are checked as well as the logs because a step can have a finite loss and
    non-finite gradients: its update breaks the weights, and a checkpoint saved at that step would
    hold them although the loss only turns NaN one step later. The check is one compiled sum over
    the weights per step (a `tf.function` or `jax.jit`; PyTorch sums eagerly), small next to a
    training step (docs/performance.md); turn it off with `check_weights=False` where that matters.

    Args:
        check_weights: bool. Also check every model weight after each step. Defaults to `True`.

    Example:

    ```python
    callbacks = [NaNGuard(), keras.callbacks.BackupAndRestore(backup_dir)]
    try:
        model.fit(dataset, epochs=100, callbacks=callbacks)
    except NonFiniteTrainingError as error:
        print(f"diverged at step {error.step}")
    ```
    """

    def __init__(self, check_weights=True):
        super().__init__()
        if not isinstance(check_weights, bool):
            raise ValueError(
                f"`check_weights` must be a bool. Received: check_weights={check_weights!r}"
            )
        self.check_weights = check_weights
        self._epoch = 0
        self._sum_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {
            name: value
            for name, value in (logs or {}).items()
            if isinstance(value, numbers.Real) and not math.isfinite(value)
        }
        if not bad and self.check_weights:
            bad = self._non_finite_weights()
        if bad:
            self._stop(batch, bad)

    def on_train_begin(self, logs=None):
        self._sum_weights = None  # the model's weights may have changed since the last fit

    def _non_finite_weights(self):
        weights = self.model.weights
        # One sum over all weights needs a single device-to-host transfer; it is non-finite when
        # any weight is (NaN and opposite infinities both give NaN).
        if self._sum_weights is None:
            self._sum_weights = _compiled_sum(weights)
        if math.isfinite(float(ops.convert_to_numpy(self._sum_weights()))):
            return {}
        return {
            weight.path: "non-finite"
            for weight in weights
            if not bool(ops.convert_to_numpy(ops.all(ops.isfinite(weight))))
        }

    def _stop(self, batch, bad):
        optimizer = getattr(self.model, "optimizer", None)
        step = None if optimizer is None else int(ops.convert_to_numpy(optimizer.iterations))
        found = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise NonFiniteTrainingError(
            f"NaNGuard: non-finite values at training step {step} (epoch {self._epoch}, batch "
            f"{batch}): {found}. Training stopped before the callbacks listed after NaNGuard "
            "(checkpoints) ran for this step, so they keep the last finite weights. Lower the "
            "learning rate, keep the loss in float32, or check the data for NaNs.",
            step,
        )


def _compiled_sum(variables):
    """A function of no argument returning the float32 sum of `variables`' current values.

    Compiled where the backend compiles (one graph instead of an op per variable, much faster:
    docs/performance.md); op by op on PyTorch, whose eager ops are cheap.
    """

    def total(values):
        return sum(ops.sum(ops.cast(value, "float32")) for value in values)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(total)
    elif backend == "jax":
        import jax

        compiled = jax.jit(total)
    else:
        compiled = total
    return lambda: compiled([variable.value for variable in variables])


class CollapseMonitor(keras.callbacks.Callback):
    """Warns when a logged embedding statistic stays below a threshold for too long.

    VICReg's variance term keeps the per-feature std of the embeddings near `gamma` (1 by
    default); a std that stays near 0 means the embeddings have collapsed to a point, which the
    loss alone hides because the covariance term goes to 0 as well. The warning is issued once per
    collapse and again only after the statistic has recovered and dropped again.

    Args:
        monitor: str. Name of the logged value. Defaults to `"std"`, the mean per-feature std that
            `keras_vicreg.VICReg` logs.
        threshold: float. Values strictly below it count as collapsed. Defaults to `0.05`.
        patience: int >= 1. Consecutive collapsed batches (or epochs) before warning. Defaults
            to `100`.
        frequency: `"batch"` or `"epoch"`. When to read the value. Defaults to `"batch"`.

    Attributes:
        collapsed: bool, whether the statistic is currently in a reported collapse.
    """

    def __init__(self, monitor="std", threshold=0.05, patience=100, frequency="batch"):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"`patience` must be an integer >= 1. Received: patience={patience!r}")
        if frequency not in ("batch", "epoch"):
            raise ValueError(
                f"`frequency` must be 'batch' or 'epoch'. Received: frequency={frequency!r}"
            )
        self.monitor = monitor
        self.threshold = float(threshold)
        self.patience = patience
        self.frequency = frequency
        self.collapsed = False
        self._count = 0
        self._missing_reported = False

    def on_train_batch_end(self, batch, logs=None):
        if self.frequency == "batch":
            self._update(logs, f"batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        if self.frequency == "epoch":
            self._update(logs, f"epoch {epoch}")

    def _update(self, logs, where):
        value = (logs or {}).get(self.monitor)
        if not isinstance(value, numbers.Real):
            if not self._missing_reported:
                self._missing_reported = True
                warnings.warn(
                    f"CollapseMonitor: `{self.monitor}` is not in the training logs, so collapse "
                    f"is not monitored. Logged: {sorted(logs or {})}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        if value >= self.threshold:
            self._count = 0
            self.collapsed = False
            return
        self._count += 1
        if self._count >= self.patience and not self.collapsed:
            self.collapsed = True
            warnings.warn(
                f"CollapseMonitor: `{self.monitor}` = {value:.3g} has stayed below "
                f"{self.threshold} for {self._count} {self.frequency}es (now at {where}): the "
                "embeddings are collapsing. Check the variance coefficient, the learning rate and "
                "the augmentations.",
                RuntimeWarning,
                stacklevel=2,
            )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of each step to the logs as `"learning_rate"`.

    The value is read before the step, so it is the rate that step used (the optimizer evaluates
    a schedule at its iteration count). At the end of an epoch the logs get the rate of the
    epoch's last step. List this callback before `CSVLogger` or `TensorBoard`: callbacks share one
    logs dict, in list order.
    """

    def __init__(self):
        super().__init__()
        self._learning_rate = None

    def on_train_batch_begin(self, batch, logs=None):
        learning_rate = self.model.optimizer.learning_rate
        self._learning_rate = float(ops.convert_to_numpy(learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self._learning_rate is not None:
            logs["learning_rate"] = self._learning_rate

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._learning_rate is not None:
            logs["learning_rate"] = self._learning_rate
