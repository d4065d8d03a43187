"""Tests of keras_vicreg.training.checkpointing: step checkpoints and a fit that resumes mid-epoch."""

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vicreg import LARS
from keras_vicreg import VICReg
from keras_vicreg import WarmupCosine
from keras_vicreg.training import checkpointing
from keras_vicreg.training import durable_files
from keras_vicreg.training import preemption

pytestmark = pytest.mark.backend_neutral

STEPS_PER_EPOCH, EPOCHS, BATCH = 4, 2, 8


class Interrupt(Exception):
    """Stands for a kill: raised after a given step, before the checkpoint callback runs."""


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise Interrupt()


def make_dataset(epoch, skip):
    """Pairs of views in an order that depends on the epoch only."""
    rng = np.random.default_rng(1000 + epoch)
    images = rng.normal(size=(STEPS_PER_EPOCH * BATCH, 8, 8, 3)).astype("float32")
    noisy = images + 0.1 * rng.normal(size=images.shape).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, noisy)).batch(BATCH).skip(skip)


def make_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = VICReg(keras.Model(inputs, x), "16-8")
    schedule = WarmupCosine(0.5, total_steps=STEPS_PER_EPOCH * EPOCHS, warmup_steps=2)
    model.compile(optimizer=LARS(schedule), jit_compile=False)
    return model


def state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights + model.optimizer.variables]


def assert_same_training(expected, actual):
    """Two runs' weights and optimizer variables equal to a few float32 ulps.

    Not bit for bit: with op determinism on and oneDNN off, TensorFlow's CPU kernels still rounded
    a few elements one ulp apart between two runs in one process, once in several CI runs, and
    later steps carry it (2.5e-6 relative, 7.5e-9 absolute). A resume that redoes, skips or loses
    a step, or the optimizer's momentum, is off by a whole update: orders of magnitude more.
    Restores, which copy, are still compared bit for bit.
    """
    for a, b in zip(expected, actual, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def run(directory, seed=0, interrupt_after=None, every_steps=3):
    model = make_model(seed)
    start = checkpointing.restore_latest(model, directory)
    callbacks = [checkpointing.StepCheckpoint(directory, every_steps, initial_step=start, keep=20)]
    if interrupt_after is not None:
        callbacks.insert(0, InterruptAfter(interrupt_after))
    try:
        checkpointing.resumable_fit(
            model, make_dataset, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
            initial_step=start, callbacks=callbacks,
        )
    except Interrupt:
        pass
    return model, start


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(model, checkpoint directory) of a run of 2 epochs of 4 steps, checkpoints every 3 steps."""
    directory = str(tmp_path_factory.mktemp("uninterrupted"))
    model, _ = run(directory)
    return model, directory


def test_checkpoints_every_n_steps_and_at_each_epoch_end(uninterrupted):
    steps = [step for step, _ in checkpointing.list_checkpoints(uninterrupted[1])]
    assert steps == [3, 4, 6, 8]


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model = make_model(0)
    checkpoint = checkpointing.StepCheckpoint(str(tmp_path), every_steps=1, keep=2)
    checkpointing.resumable_fit(
        model, make_dataset, epochs=1, steps_per_epoch=STEPS_PER_EPOCH, callbacks=[checkpoint]
    )
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000003.weights.h5", "ckpt-000000004.weights.h5"]


def test_a_run_interrupted_mid_epoch_resumes_and_reaches_the_uninterrupted_weights(
    tmp_path, uninterrupted
):
    # Killed during step 7 of 8: the newest checkpoint is step 6, in the middle of epoch 2.
    run(str(tmp_path), interrupt_after=7)
    assert checkpointing.latest_checkpoint(str(tmp_path))[0] == 6
    resumed, start = run(str(tmp_path), seed=1)  # another initialisation: the restore must win

    assert start == 6
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == STEPS_PER_EPOCH * EPOCHS
    assert_same_training(state(uninterrupted[0]), state(resumed))


def test_the_tolerance_tells_a_run_one_step_short(tmp_path, uninterrupted):
    short, _ = run(str(tmp_path), interrupt_after=7)  # the last step is missing
    with pytest.raises(AssertionError):
        assert_same_training(state(uninterrupted[0]), state(short))


def test_restoring_restores_the_weights_and_the_optimizer_state(uninterrupted):
    trained, directory = uninterrupted
    restored = make_model(seed=1)
    assert checkpointing.restore_latest(restored, directory) == STEPS_PER_EPOCH * EPOCHS
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == STEPS_PER_EPOCH * EPOCHS
    for a, b in zip(state(trained), state(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_checkpoint_restores_nothing_and_partial_files_are_removed(tmp_path):
    partial = tmp_path / ".partial-ckpt-000000005.weights.h5"
    partial.write_bytes(b"cut short by a kill")
    model = make_model(0)
    before = state(model)
    assert checkpointing.restore_latest(model, str(tmp_path)) == 0
    assert not partial.exists()
    for a, b in zip(before, state(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resuming_past_the_end_is_an_error():
    with pytest.raises(ValueError, match="initial_step"):
        checkpointing.resumable_fit(
            make_model(0), make_dataset, epochs=1, steps_per_epoch=4, initial_step=5
        )


@pytest.mark.parametrize("kwargs", [{"every_steps": 0}, {"every_steps": 2, "keep": 0},
                                    {"every_steps": 2, "initial_step": -1}])
def test_step_checkpoint_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match="Received"):
        checkpointing.StepCheckpoint(str(tmp_path), **kwargs)


def make_longer_dataset(epoch, skip):
    """Like `make_dataset`, with 2 batches more than an epoch trains on."""
    rng = np.random.default_rng(2000 + epoch)
    images = rng.normal(size=((STEPS_PER_EPOCH + 2) * BATCH, 8, 8, 3)).astype("float32")
    noisy = images + 0.1 * rng.normal(size=images.shape).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, noisy)).batch(BATCH).skip(skip)


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.fits, self.epochs = 0, []

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append((epoch, self.params["epochs"], self.params["steps"]))


@pytest.mark.parametrize("dataset_fn", [make_dataset, make_longer_dataset])
def test_one_fit_over_several_epochs_trains_as_a_fit_per_epoch(dataset_fn):
    results = {}
    for epochs_per_fit in (1, 16):
        model, recorder = make_model(0), EpochRecorder()
        checkpointing.resumable_fit(
            model, dataset_fn, epochs=3, steps_per_epoch=STEPS_PER_EPOCH, callbacks=[recorder],
            epochs_per_fit=epochs_per_fit,
        )
        results[epochs_per_fit] = state(model), recorder
    assert results[1][1].fits == 3 and results[16][1].fits == 1
    for _, recorder in results.values():  # the run's epoch numbers and length, either way
        assert recorder.epochs == [(0, 3, STEPS_PER_EPOCH), (1, 3, STEPS_PER_EPOCH),
                                   (2, 3, STEPS_PER_EPOCH)]
    # Each epoch read from its own dataset's start, the longer ones included.
    assert_same_training(results[1][0], results[16][0])


def test_fits_cover_at_most_epochs_per_fit_and_a_partial_epoch_alone():
    model, recorder = make_model(0), EpochRecorder()
    checkpointing.resumable_fit(
        model, make_dataset, epochs=6, steps_per_epoch=STEPS_PER_EPOCH, initial_step=2,
        callbacks=[recorder], epochs_per_fit=2,
    )
    # Epoch 0 from step 2 alone, then epochs (1, 2), (3, 4) and 5.
    assert recorder.fits == 4
    assert [epoch for epoch, _, _ in recorder.epochs] == [0, 1, 2, 3, 4, 5]
    assert recorder.epochs[0][2] == STEPS_PER_EPOCH - 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6 * STEPS_PER_EPOCH - 2


def test_epochs_per_fit_below_one_is_an_error():
    with pytest.raises(ValueError, match="epochs_per_fit"):
        checkpointing.resumable_fit(
            make_model(0), make_dataset, epochs=1, steps_per_epoch=4, epochs_per_fit=0
        )


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_that_loads(
    tmp_path, uninterrupted, capsys, damage
):
    directory = str(tmp_path)
    run(directory, interrupt_after=7)  # checkpoints at steps 3, 4 and 6
    newest = checkpointing.checkpoint_path(directory, 6)
    data = open(newest, "rb").read()
    with open(newest, "wb") as file:  # what a host crash after an un-synced rename can leave
        file.write(b"" if damage == "empty" else data[: len(data) // 2])
    reference = make_model(0)
    assert checkpointing.restore_latest(reference, checkpointing_dir_copy(directory, 4)) == 4

    resumed = make_model(1)
    assert checkpointing.restore_latest(resumed, directory) == 4
    err = capsys.readouterr().err
    assert f"Skipping checkpoint {newest}" in err and "older checkpoint" in err
    for a, b in zip(state(reference), state(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def checkpointing_dir_copy(directory, step):
    """A directory holding only the checkpoint of `step` of `directory`."""
    import shutil

    copy = os.path.join(directory, f"only-{step}")
    os.makedirs(copy)
    shutil.copy(checkpointing.checkpoint_path(directory, step), copy)
    return copy


def test_when_no_checkpoint_loads_restoring_is_an_error_naming_each(tmp_path):
    for step in (2, 5):
        open(checkpointing.checkpoint_path(str(tmp_path), step), "wb").close()
    with pytest.raises(checkpointing.NoLoadableCheckpointError, match="None of the 2") as error:
        checkpointing.restore_latest(make_model(0), str(tmp_path))
    assert "ckpt-000000002" in str(error.value) and "ckpt-000000005" in str(error.value)
    assert len(os.listdir(tmp_path)) == 2  # nothing deleted


def make_short_dataset(epoch, skip):
    """Epoch 1 (the second) holds 3 of its 4 batches, as if 8 images failed to decode."""
    dataset = make_dataset(epoch, skip)
    return dataset.take(STEPS_PER_EPOCH - 1 - skip) if epoch == 1 else dataset


@pytest.mark.parametrize("epochs_per_fit", [1, 16])
def test_a_short_epoch_stops_the_run_without_a_checkpoint_off_the_epoch_grid(
    tmp_path, epochs_per_fit
):
    model = make_model(0)
    checkpoint = checkpointing.StepCheckpoint(str(tmp_path), every_steps=100, keep=20)
    with pytest.raises(checkpointing.ShortEpochError, match="Epoch 2 yielded 3 of its 4 batches"):
        checkpointing.resumable_fit(
            model, make_short_dataset, epochs=3, steps_per_epoch=STEPS_PER_EPOCH,
            callbacks=[checkpoint], epochs_per_fit=epochs_per_fit,
        )
    # Epoch 1 ended at step 4 and was saved; nothing after it, nothing at step 7.
    assert [step for step, _ in checkpointing.list_checkpoints(str(tmp_path))] == [4]


def test_a_short_epoch_of_another_kind_of_dataset_is_caught_at_the_epoch_end(tmp_path):
    def python_batches(epoch, skip):
        batches = list(make_dataset(epoch, skip).as_numpy_iterator())
        batches = batches[:-1] if epoch == 1 else batches

        return (batch for batch in batches)  # a Python generator: no tf.data to wrap

    checkpoint = checkpointing.StepCheckpoint(str(tmp_path), every_steps=100, keep=20)
    with pytest.raises(checkpointing.ShortEpochError, match="Epoch 2 yielded 3 of its 4"):
        checkpointing.resumable_fit(
            make_model(0), python_batches, epochs=3, steps_per_epoch=STEPS_PER_EPOCH,
            callbacks=[checkpoint],
        )
    assert [step for step, _ in checkpointing.list_checkpoints(str(tmp_path))] == [4]


def test_json_is_written_atomically_and_replaces_the_old_file(tmp_path):
    path = str(tmp_path / "sub" / "config.json")
    checkpointing.write_json_atomically(path, {"b": 1, "a": [1, 2]})
    checkpointing.write_json_atomically(path, {"c": 3})
    assert json.load(open(path)) == {"c": 3}
    assert os.listdir(tmp_path / "sub") == ["config.json"]


def test_results_json_keeps_the_key_order_and_writes_numpy_scalars(tmp_path):
    path = durable_files.write_results_json(str(tmp_path), {"rows": {"b": 1, "a": np.float32(0.5)}})
    assert path == str(tmp_path / "results.json")
    assert list(json.load(open(path))["rows"].items()) == [("b", 1), ("a", 0.5)]
    assert os.listdir(tmp_path) == ["results.json"]


class SignalAt(keras.callbacks.Callback):
    """Sends this process `signum` at the end of step `step`, as a preemption notice would."""

    def __init__(self, step, signum):
        super().__init__()
        self.step, self.signum, self.seen = step, signum, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_checkpoints_the_step_and_the_relaunch_reaches_the_uninterrupted_weights(
    tmp_path, uninterrupted, signum
):
    directory = str(tmp_path)
    model = make_model(0)
    with preemption.PreemptionSignal() as stop:
        callbacks = [SignalAt(5, signum),
                     checkpointing.StepCheckpoint(directory, 100, keep=20, stop_signal=stop)]
        with pytest.raises(preemption.Preempted, match=f"{signal.Signals(signum).name} after step 5"):
            checkpointing.resumable_fit(model, make_dataset, epochs=EPOCHS,
                                        steps_per_epoch=STEPS_PER_EPOCH, callbacks=callbacks)
    assert stop.received == signum and stop.active is False
    # Step 4 (the epoch end) and step 5 (the signal, mid-epoch) are written, nothing else.
    assert [step for step, _ in checkpointing.list_checkpoints(directory)] == [4, 5]
    assert signal.getsignal(signum) is not stop._handle  # the previous handler is back

    resumed, start = run(directory, seed=1)
    assert start == 5
    assert_same_training(state(uninterrupted[0]), state(resumed))


def test_without_a_signal_the_stop_signal_changes_nothing(tmp_path, uninterrupted):
    model = make_model(0)
    with preemption.PreemptionSignal() as stop:
        checkpointing.resumable_fit(
            model, make_dataset, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
            callbacks=[checkpointing.StepCheckpoint(str(tmp_path), 3, keep=20, stop_signal=stop)],
        )
    assert stop.received is None
    assert_same_training(state(uninterrupted[0]), state(model))


def test_a_checkpoint_holding_nan_is_skipped_on_resume_and_not_named_finite(tmp_path, capsys):
    import h5py

    directory = str(tmp_path)
    run(directory, interrupt_after=7)  # checkpoints at steps 3, 4 and 6
    newest = checkpointing.checkpoint_path(directory, 6)
    with h5py.File(newest, "r+") as file:  # as a run with nan_check_weights=False can save
        names = []
        file.visititems(lambda name, item: names.append(name)
                        if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" else None)
        file[names[0]][...] = np.nan
    assert not checkpointing.holds_finite_values(newest)
    assert checkpointing.newest_finite_checkpoint(directory) == (
        4, checkpointing.checkpoint_path(directory, 4))
    assert checkpointing.restore_latest(make_model(1), directory) == 4
    assert "holds NaN or infinite values" in capsys.readouterr().err


def test_an_optimizer_state_that_does_not_fit_is_an_error_not_a_silent_restart(tmp_path):
    directory = str(tmp_path)
    run(directory, interrupt_after=5)  # checkpoints at steps 3 and 4
    model = make_model(0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)  # other state
    with pytest.raises(checkpointing.OptimizerStateSkippedError, match="optimizer or precision"):
        checkpointing.restore_latest(model, directory)
