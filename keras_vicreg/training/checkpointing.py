"""Checkpoints every N steps and at each epoch end, and a `fit` that resumes where a run stopped.

`keras.callbacks.BackupAndRestore` (Keras 3.15) writes a backup every N batches, but restores only
the epoch number: a run killed in the middle of an epoch restarts that epoch from its first batch
with weights that have already seen part of it, so the resumed run differs from an uninterrupted
one. Here the resume point is the step (the number of batches trained on):

- `StepCheckpoint` saves the weights and the optimizer state (`model.save_weights`) under the step's
  number, every `every_steps` steps and at each epoch end, under a temporary name first, flushed
  to disk (the file and then its directory `fsync`ed, so that a host crash cannot leave a
  renamed but empty file), then renamed, keeping the last few (local paths and, through
  `tf.io.gfile`, cloud storage, whose objects appear whole or not at all). List it after
  `keras_vicreg.training.callbacks.NaNGuard`, which raises before non-finite weights are saved.
- `restore_latest` loads the newest checkpoint that loads, says on stderr which newer ones it
  skipped and why (an empty or truncated file), and returns its step.
- `resumable_fit` trains from that step to the end on `make_dataset(epoch, skip)`: the epoch's
  batches in a fixed order (a function of the seed and the epoch only), without the batches
  already trained on. With deterministic kernels (the default on CPU), a killed and resumed run
  then reaches the same weights as an uninterrupted one. An epoch whose dataset runs out before
  `steps_per_epoch` batches stops the run with `ShortEpochError` instead of training on and
  drifting off the epoch grid that resuming relies on.

The step counts batches, not optimizer updates: under `mixed_float16` a step with non-finite
gradients is skipped by the loss-scale optimizer (its `iterations` do not move), but its batch has
been consumed all the same.
"""

import os
import re
import sys
import warnings

import keras
import tensorflow as tf
from tensorflow.io import gfile

from keras_vicreg.training import durable_files
from keras_vicreg.training import multihost
from keras_vicreg.training import preemption
from keras_vicreg.training.durable_files import holds_finite_values  # noqa: F401
from keras_vicreg.training.durable_files import write_json_atomically  # noqa: F401

_NAME = re.compile(r"^ckpt-(\d+)\.weights\.h5$")
_TEMPORARY_PREFIX = durable_files.TEMPORARY_PREFIX


class ShortEpochError(RuntimeError):
    """An epoch's dataset held fewer batches than the epoch trains on."""


class NoLoadableCheckpointError(RuntimeError):
    """Checkpoints exist, and none of them loads."""


class OptimizerStateSkippedError(RuntimeError):
    """Keras loaded a checkpoint's weights but skipped its optimizer state (another optimizer or
    precision than the one that saved it): resuming would restart the step count and warmup."""


def newest_finite_checkpoint(directory):
    """(step, path) of the newest checkpoint whose values are all finite, or None."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            if holds_finite_values(path):
                return step, path
        except OSError:  # unreadable: not a candidate
            continue
    return None


def checkpoint_path(directory, step):
    """The path of the checkpoint of `step` in `directory`."""
    return os.path.join(directory, f"ckpt-{step:09d}.weights.h5")


def list_checkpoints(directory):
    """The complete checkpoints in `directory` as a sorted list of (step, path)."""
    if not gfile.isdir(directory):
        return []
    found = []
    for name in gfile.listdir(directory):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def latest_checkpoint(directory):
    """(step, path) of the newest checkpoint file in `directory`, or None (whether it loads is
    `restore_latest`'s to find out)."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def _build_optimizer(model):
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def restore_latest(model, directory):
    """Loads the newest checkpoint of `directory` that loads into a compiled, built model.

    Partial files left by a kill during a save are removed. The optimizer is built first, so that
    its state (momentum buffers, iteration count, loss scale) is restored with the weights. A
    checkpoint that does not load (empty, truncated, not a weights file) or holds NaN or infinite
    values (saved with the weight check off) is skipped for the next older one, and each skip is
    printed to stderr with its reason; the skipped files stay, for a
    look, and are pruned as newer checkpoints are written.

    Args:
        model: a compiled `keras.Model` whose variables exist.
        directory: the checkpoint directory.

    Returns:
        The step of the restored checkpoint, 0 when there is none.

    Raises:
        NoLoadableCheckpointError: when there are checkpoints and none of them loads (rather than
            starting over and pruning them).
    """
    if not model.built:
        raise ValueError(
            "Build the model before restoring a checkpoint, e.g. with a backbone that declares its "
            f"input shape. Received: an unbuilt model {model.name!r}"
        )
    if gfile.isdir(directory):
        for name in gfile.listdir(directory):
            if name.startswith(_TEMPORARY_PREFIX):
                gfile.remove(os.path.join(directory, name))
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        return 0
    _build_optimizer(model)
    skipped = []
    for step, path in reversed(checkpoints):
        try:
            if durable_files.is_local(path) and not holds_finite_values(path):
                raise ValueError("it holds NaN or infinite values")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with multihost.local_scope():
                    model.load_weights(path)
        except Exception as error:  # noqa: BLE001  (h5py, Keras and OS errors alike)
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            skipped.append(f"{path} ({reason})")
            print(f"Skipping checkpoint {path}: it does not load ({reason}).",
                  file=sys.stderr, flush=True)
            continue
        for warning in caught:
            if "Skipping variable loading for optimizer" in str(warning.message):
                raise OptimizerStateSkippedError(
                    f"{path} holds an optimizer state that this model's optimizer cannot take "
                    f"({warning.message}): the config's optimizer or precision differs from the "
                    "run that saved it. Resume with that config, or start over in another workdir."
                )
        if skipped:
            print(f"Resuming from the older checkpoint {path} after skipping {len(skipped)}.",
                  file=sys.stderr, flush=True)
        return step
    raise NoLoadableCheckpointError(
        f"None of the {len(checkpoints)} checkpoints in {directory} loads: "
        + "; ".join(skipped)
        + ". Move them away to start the run over, or restore a copy."
    )


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the weights and optimizer state every `every_steps` steps and at each epoch end.

    Files are named by the step (batches trained on since the start of the run) and written
    atomically; the newest `keep` are kept. A step is saved once even when it is both a multiple
    of `every_steps` and an epoch end.

    Args:
        directory: where to write `ckpt-<step>.weights.h5`.
        every_steps: int >= 1, the interval in steps.
        initial_step: the step the run (re)starts from, e.g. `restore_latest`'s result.
        keep: int >= 1, how many checkpoints to keep.
        stop_signal: a `preemption.PreemptionSignal` (or anything with a `received` attribute):
            once it has received a signal, the step that just ended is saved and
            `preemption.Preempted` is raised, ending `fit`. Its `received` is read once per step
            (a `preemption.AgreedStopSignal` answers it with a collective).
        write: False on the processes of a multi-process job other than process 0: they count
            the steps and stop with the others, and write nothing.
    """

    def __init__(self, directory, every_steps, initial_step=0, keep=3, stop_signal=None,
                 write=True):
        super().__init__()
        for name, value in (("every_steps", every_steps), ("keep", keep)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
        if isinstance(initial_step, bool) or not isinstance(initial_step, int) or initial_step < 0:
            raise ValueError(
                f"`initial_step` must be an int >= 0. Received: initial_step={initial_step!r}"
            )
        self.directory = directory
        self.every_steps = every_steps
        self.keep = keep
        self.step = initial_step
        self._saved_step = initial_step
        self.stop_signal = stop_signal
        self.write = write

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        received = None if self.stop_signal is None else self.stop_signal.received
        if received is not None or self.step % self.every_steps == 0:
            self.save()
        if received is not None:
            raise preemption.Preempted(self.step, received)

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self):
        """Writes the checkpoint of the current step (unless already written) and prunes."""
        if self.step == self._saved_step:  # saved already, or the step the run restarted from
            return
        if not self.write:
            self._saved_step = self.step
            if keras.backend.backend() == "tensorflow":
                _save_and_discard(self.model)
            return
        gfile.makedirs(self.directory)
        final = checkpoint_path(self.directory, self.step)
        partial = os.path.join(self.directory, _TEMPORARY_PREFIX + os.path.basename(final))
        with multihost.local_scope():
            self.model.save_weights(partial, overwrite=True)
        durable_files.fsync(partial)
        gfile.rename(partial, final, overwrite=True)
        durable_files.fsync(self.directory)
        self._saved_step = self.step
        for _, path in list_checkpoints(self.directory)[: -self.keep]:
            gfile.remove(path)


def _save_and_discard(model):
    """What a TensorFlow worker other than 0 does where worker 0 saves: the same save, discarded.

    Keras' saving creates variables (reference objects it lists attributes of, every time), and
    under MultiWorkerMirroredStrategy creating a variable is a collective (worker 0 broadcasts its
    initial value) that every worker must join in the same order; so every worker saves, and only
    worker 0 keeps the file (as Keras 2's ModelCheckpoint had the other workers write to a
    temporary directory).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        model.save_weights(os.path.join(directory, "discarded.weights.h5"))


class _EpochLengthGuard(keras.callbacks.Callback):
    """Raises `ShortEpochError` at the end of an epoch that trained on fewer batches than due.

    Listed before the other callbacks, so that a short epoch ends the run before a checkpoint is
    written off the epoch grid. It covers datasets that `_exact_epoch` cannot wrap (distributed
    datasets); Keras itself only warns that the input "ran out of data".

    Args:
        skip: the batches of the first epoch trained before (a resumed run's partial epoch).
        steps_per_epoch: the batches of an epoch.
    """

    def __init__(self, skip, steps_per_epoch):
        super().__init__()
        self.done, self.steps_per_epoch, self.epoch = skip, steps_per_epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.done < self.steps_per_epoch:
            raise ShortEpochError(_short_epoch_message(epoch, self.done, self.steps_per_epoch))
        self.done = 0


def _short_epoch_message(epoch, seen, due):
    return (
        f"Epoch {epoch + 1} yielded {seen} of its {due} batches: its dataset ran out (images "
        "that could not be decoded are dropped, listed in the workdir's undecodable_images.json "
        "where the source was scanned, or the split is smaller than num_examples says). The run "
        "stops here, at the last full step, so that checkpoints stay on the epoch grid; fix the "
        "data, or num_examples / steps_per_epoch, and run again."
    )


def _exact_epoch(dataset, steps):
    """`dataset` cut to `steps` batches, raising at its end if it holds fewer."""
    return dataset.take(steps).apply(tf.data.experimental.assert_cardinality(steps))


class _StopAtEpoch(keras.callbacks.Callback):
    """Ends `fit` once epoch `last` (counted from 1) is done, so that `fit` can be told the run's
    real number of epochs (for progress bars and callbacks) and still cover only some of them."""

    def __init__(self, last):
        super().__init__()
        self.last = last

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.last:
            self.model.stop_training = True


def resumable_fit(
    model,
    make_dataset,
    *,
    epochs,
    steps_per_epoch,
    initial_step=0,
    callbacks=(),
    verbose=0,
    epochs_per_fit=16,
):
    """Trains from `initial_step` to `epochs * steps_per_epoch` on each epoch's own dataset.

    Epoch `e` reads `make_dataset(e, skip)`: its batches in a fixed order, the first `skip` of them
    left out (non-zero only for the epoch a run resumes in). Keras sees the real epoch numbers
    (`initial_epoch`), so progress bars and epoch-level callbacks read as in one `fit`.

    A partly trained epoch gets a `fit` of its own. The whole epochs after it are `tf.data`
    datasets concatenated up to `epochs_per_fit` at a time, each group one `fit` reading one
    iterator: with a `fit` per epoch, training waits between epochs while the finished epoch's
    iterator is torn down and a new one started (docs/performance.md). Other datasets (such as
    `tf.distribute` distributed ones, which cannot be concatenated) get a `fit` per epoch.

    Args:
        model: a compiled `keras.Model`, restored to `initial_step` (see `restore_latest`).
        make_dataset: `make_dataset(epoch, skip)` -> the epoch's dataset (a `tf.data.Dataset`, a
            `tf.distribute` distributed dataset, or whatever `fit` takes) without its first `skip`
            batches; it must hold at least `steps_per_epoch - skip` batches.
        epochs: the number of epochs of the whole run.
        steps_per_epoch: the steps of each epoch.
        initial_step: the step to start from.
        callbacks: `fit` callbacks, used for every epoch (a `StepCheckpoint` among them last).
        verbose: `fit`'s verbosity.
        epochs_per_fit: the most whole epochs one `fit` covers (>= 1).

    Returns:
        The step reached: `epochs * steps_per_epoch`.
    """
    total = epochs * steps_per_epoch
    if not 0 <= initial_step <= total:
        raise ValueError(
            f"`initial_step` must be in [0, epochs * steps_per_epoch = {total}]: a checkpoint from "
            f"a longer run? Received: initial_step={initial_step}"
        )
    if epochs_per_fit < 1:
        raise ValueError(
            f"`epochs_per_fit` must be >= 1. Received: epochs_per_fit={epochs_per_fit}"
        )
    epoch, skip = divmod(initial_step, steps_per_epoch)
    while epoch < epochs:
        dataset = make_dataset(epoch, skip)
        last = epoch + 1
        if isinstance(dataset, tf.data.Dataset):
            # Each epoch exactly its batches, so that the next starts where it should; a short
            # one raises where it runs out instead of lending the next epoch's batches.
            dataset = _exact_epoch(dataset, steps_per_epoch - skip)
            while not skip and last < min(epoch + epochs_per_fit, epochs):
                dataset = dataset.concatenate(_exact_epoch(make_dataset(last, 0), steps_per_epoch))
                last += 1
        guard = _EpochLengthGuard(skip, steps_per_epoch)
        try:
            model.fit(
                dataset,
                initial_epoch=epoch,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch - skip,
                callbacks=[guard] + list(callbacks) + [_StopAtEpoch(last)],
                verbose=verbose,
            )
        except (tf.errors.InvalidArgumentError, tf.errors.FailedPreconditionError) as error:
            if "expected to contain" not in str(error):
                raise
            raise ShortEpochError(
                _short_epoch_message(guard.epoch, guard.done, steps_per_epoch)
            ) from None
        epoch, skip = last, 0
    return total
