"""Tests of keras_vicreg.training.schedules.WarmupCosine against its formula."""

import math

import keras
import numpy as np
import pytest

from keras_vicreg.training.optimizers import LARS
from keras_vicreg.training.schedules import WarmupCosine


def _expected(step, peak, total, warmup, end_factor):
    """The schedule of the VICReg release, from its formula, in float64."""
    if step < warmup:
        return peak * step / warmup
    end = end_factor * peak
    t = min(step - warmup, total - warmup) / (total - warmup)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t))


def _value(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.backend_neutral
def test_peak_scales_with_the_batch_size():
    assert WarmupCosine(0.2, 1000, 10, batch_size=2048).peak_learning_rate == pytest.approx(1.6)
    assert WarmupCosine(0.5, 1000, 10).peak_learning_rate == 0.5


@pytest.mark.backend_neutral
def test_landmarks_zero_peak_and_end():
    schedule = WarmupCosine(0.3, total_steps=1000, warmup_steps=100, batch_size=512)
    peak = 0.6
    assert _value(schedule, 0) == 0.0
    assert _value(schedule, 50) == pytest.approx(peak / 2, rel=1e-6)
    assert _value(schedule, 100) == pytest.approx(peak, rel=1e-6)
    assert _value(schedule, 550) == pytest.approx((peak + 0.001 * peak) / 2, rel=1e-5)
    assert _value(schedule, 1000) == pytest.approx(0.001 * peak, rel=1e-4)
    assert _value(schedule, 5000) == pytest.approx(0.001 * peak, rel=1e-4)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("warmup", [0, 7, 50])
def test_matches_formula_at_every_step(warmup):
    schedule = WarmupCosine(0.2, total_steps=50, warmup_steps=warmup, batch_size=1024,
                            end_factor=0.01)
    steps = np.arange(0, 60)
    values = keras.ops.convert_to_numpy(schedule(steps))
    expected = [_expected(s, 0.8, 50, warmup, 0.01) if warmup < 50 or s < 50 else 0.008
                for s in steps]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.backend_neutral
def test_optimizer_evaluates_it_per_step():
    schedule = WarmupCosine(1.0, total_steps=10, warmup_steps=4)
    variable = keras.Variable(np.ones((2, 2), "float32"))
    optimizer = LARS(schedule)
    seen = []
    for _ in range(6):
        seen.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        optimizer.apply([np.ones((2, 2), "float32")], [variable])
    np.testing.assert_allclose(seen, [_expected(s, 1.0, 10, 4, 0.001) for s in range(6)],
                               rtol=1e-6)


@pytest.mark.backend_neutral
def test_config_round_trip():
    schedule = WarmupCosine(0.3, total_steps=500, warmup_steps=20, batch_size=128, end_factor=0.0)
    config = schedule.get_config()
    assert config == {"base_learning_rate": 0.3, "total_steps": 500, "warmup_steps": 20,
                      "batch_size": 128, "end_factor": 0.0}
    assert WarmupCosine.from_config(config).get_config() == config
    schedules = keras.optimizers.schedules
    restored = schedules.deserialize(schedules.serialize(schedule))
    assert isinstance(restored, WarmupCosine)
    assert restored.get_config() == config


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"base_learning_rate": -0.1}, "base_learning_rate=-0.1"),
        ({"total_steps": 0}, "total_steps=0"),
        ({"total_steps": 10.5}, "total_steps=10.5"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"warmup_steps": 200}, "warmup_steps=200, total_steps=100"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"end_factor": 1.5}, "end_factor=1.5"),
    ],
)
def test_invalid_arguments_raise(kwargs, received):
    arguments = {"base_learning_rate": 0.2, "total_steps": 100, "warmup_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=f"Received: {received}$"):
        WarmupCosine(**arguments)
