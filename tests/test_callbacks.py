"""Tests of keras_vicreg.training.callbacks: NaN guard, collapse monitor, learning-rate logger."""

import math
import warnings

import keras
import numpy as np
import pytest

from keras_vicreg.training.callbacks import CollapseMonitor
from keras_vicreg.training.callbacks import LearningRateLogger
from keras_vicreg.training.callbacks import NaNGuard
from keras_vicreg.training.callbacks import NonFiniteTrainingError
from keras_vicreg.training.schedules import WarmupCosine


def _model(optimizer="sgd"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="dense")], name="net")
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _data(nan_row=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    if nan_row is not None:
        x[nan_row] = np.nan
    return x, x.sum(axis=1, keepdims=True)


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.backend_neutral
def test_nan_guard_names_the_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    model = _model()
    x, y = _data(nan_row=20)  # batch 5 of 8 (batch size 4), the 6th step, turns the loss NaN
    path = str(tmp_path / "last.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_freq=1)
    weights_after_batch = {}
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: weights_after_batch.update({batch: _weights(model)})
    )
    with pytest.raises(NonFiniteTrainingError, match=r"training step 6 \(epoch 0, batch 5\)"):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
                  callbacks=[NaNGuard(), record, checkpoint])

    assert sorted(weights_after_batch) == [0, 1, 2, 3, 4]  # nothing after the guard saw batch 5
    restored = _model()
    restored.load_weights(path)
    for saved, last_good in zip(_weights(restored), weights_after_batch[4], strict=True):
        assert np.all(np.isfinite(saved))
        np.testing.assert_array_equal(saved, last_good)


@pytest.mark.backend_neutral
def test_nan_guard_reports_non_finite_logged_terms():
    model = _model()
    guard = NaNGuard(check_weights=False)
    guard.set_model(model)
    guard.on_train_batch_end(0, {"loss": 1.0, "std": 0.5})
    with pytest.raises(NonFiniteTrainingError, match=r"std=inf") as error:
        guard.on_train_batch_end(1, {"loss": 1.0, "std": math.inf})
    assert error.value.step == 0


@pytest.mark.backend_neutral
def test_nan_guard_catches_non_finite_weights_behind_a_finite_loss():
    model = _model()
    kernel = model.get_layer("dense").kernel
    kernel.assign(np.full((4, 1), np.nan, "float32"))
    guard = NaNGuard()
    guard.set_model(model)
    with pytest.raises(NonFiniteTrainingError, match=r"net/dense/kernel=non-finite"):
        guard.on_train_batch_end(0, {"loss": 1.0})
    unchecked = NaNGuard(check_weights=False)
    unchecked.set_model(model)
    unchecked.on_train_batch_end(0, {"loss": 1.0})


def _collapse_warnings(monitor, values, hook="batch"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index, value in enumerate(values):
            if hook == "batch":
                monitor.on_train_batch_end(index, {"std": value})
            else:
                monitor.on_epoch_end(index, {"std": value})
    return [str(w.message) for w in caught if "CollapseMonitor" in str(w.message)]


@pytest.mark.backend_neutral
def test_collapse_monitor_warns_once_per_collapse():
    monitor = CollapseMonitor(threshold=0.1, patience=3)
    assert _collapse_warnings(monitor, [0.9, 0.01, 0.02]) == []
    assert not monitor.collapsed
    caught = _collapse_warnings(monitor, [0.01, 0.0, 0.0])
    assert len(caught) == 1 and "collapsing" in caught[0] and "batch 0" in caught[0]
    assert monitor.collapsed
    assert _collapse_warnings(monitor, [0.8, 0.01, 0.01]) == []  # recovered, then 2 < patience
    assert len(_collapse_warnings(monitor, [0.01])) == 1


@pytest.mark.backend_neutral
def test_collapse_monitor_per_epoch_and_missing_metric():
    monitor = CollapseMonitor(threshold=0.1, patience=2, frequency="epoch")
    assert _collapse_warnings(monitor, [0.0, 0.0], hook="batch") == []
    assert len(_collapse_warnings(monitor, [0.0, 0.0], hook="epoch")) == 1

    missing = CollapseMonitor(monitor="rank", patience=1)
    caught = _collapse_warnings(missing, [0.0, 0.0])
    assert len(caught) == 1 and "`rank` is not in the training logs" in caught[0]


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "kwargs, received",
    [({"patience": 0}, "patience=0"), ({"frequency": "step"}, "frequency='step'")],
)
def test_collapse_monitor_invalid_arguments_raise(kwargs, received):
    with pytest.raises(ValueError, match=f"Received: {received}$"):
        CollapseMonitor(**kwargs)


@pytest.mark.backend_neutral
def test_learning_rate_logger_records_the_rate_each_step_used():
    schedule = WarmupCosine(0.1, total_steps=8, warmup_steps=3)
    model = _model(keras.optimizers.SGD(schedule))
    x, y = _data()
    per_batch = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: per_batch.append(logs["learning_rate"])
    )
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                        callbacks=[LearningRateLogger(), record])
    expected = [float(keras.ops.convert_to_numpy(schedule(step))) for step in range(8)]
    np.testing.assert_allclose(per_batch, expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], [expected[3], expected[7]],
                               rtol=1e-6)
