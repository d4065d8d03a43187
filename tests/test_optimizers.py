"""Tests of keras_vicreg.training.optimizers.LARS against an independent NumPy float64 reference."""

import keras
import numpy as np
import pytest

from keras_vicreg.training.optimizers import LARS
from keras_vicreg.training.schedules import WarmupCosine

# Large hyperparameters so that the decay, the trust ratio and the momentum all move the weights
# well beyond float32 rounding.
LR, MOMENTUM, ETA = 0.5, 0.9, 0.2
STEPS = 4


def _reference_trajectory(params, grads_per_step, excluded, weight_decay, clip=False,
                          clipped=None):
    """The update of VICREG_REFERENCE.md in float64, written from the formula, not from LARS.

    `clip`: LARC's clipping, q = min(q / lr, 1); `clipped`, a list, collects whether each
    adapted update was clipped.
    """
    params = {name: value.astype(np.float64) for name, value in params.items()}
    velocity = {name: np.zeros_like(value) for name, value in params.items()}
    for grads in grads_per_step:
        for name, p in params.items():
            dp = grads[name].astype(np.float64)
            if name not in excluded:
                dp = dp + weight_decay * p
                p_norm, dp_norm = np.linalg.norm(p), np.linalg.norm(dp)
                q = ETA * p_norm / dp_norm if p_norm > 0 and dp_norm > 0 else 1.0
                if clip:
                    if clipped is not None:
                        clipped.append(q >= LR)
                    q = min(q / LR, 1.0)
                dp = q * dp
            velocity[name] = MOMENTUM * velocity[name] + dp
            params[name] = p - LR * velocity[name]
    return params, velocity


def _problem():
    rng = np.random.default_rng(0)
    params = {
        "kernel": rng.normal(size=(3, 4)).astype("float32"),
        "bias": rng.normal(size=(4,)).astype("float32"),
        "zero_kernel": np.zeros((2, 3), "float32"),  # ||p|| = 0 at the first step
        "still_kernel": np.zeros((2, 2), "float32"),  # ||p|| = ||dp|| = 0 at every step
    }
    grads_per_step = []
    for step in range(STEPS):
        grads = {name: rng.normal(size=value.shape).astype("float32")
                 for name, value in params.items()}
        grads["still_kernel"] = np.zeros((2, 2), "float32")
        if step == 2:
            # A zero gradient: ||dp|| = 0 where weight_decay = 0, dp = wd * p otherwise.
            grads["kernel"] = np.zeros((3, 4), "float32")
        grads_per_step.append(grads)
    return params, grads_per_step


@pytest.mark.backend_neutral
@pytest.mark.parametrize("weight_decay", [0.05, 0.0])
@pytest.mark.parametrize(
    "patterns, excluded",
    [(None, {"bias"}), (["zero", "^still"], {"zero_kernel", "still_kernel"}), ([], set())],
)
def test_lars_matches_numpy_reference_for_several_steps(weight_decay, patterns, excluded):
    params, grads_per_step = _problem()
    variables = [keras.Variable(value, name=name) for name, value in params.items()]
    optimizer = LARS(LR, momentum=MOMENTUM, weight_decay=weight_decay, eta=ETA,
                     exclude_from_adaptation=patterns)
    for grads in grads_per_step:
        optimizer.apply([grads[v.name] for v in variables], variables)

    expected, velocity = _reference_trajectory(params, grads_per_step, excluded, weight_decay)
    for variable, momentum in zip(variables, optimizer.momentums, strict=True):
        actual = keras.ops.convert_to_numpy(variable)
        assert np.all(np.isfinite(actual)), variable.name
        np.testing.assert_allclose(actual, expected[variable.name], rtol=1e-5, atol=1e-7,
                                   err_msg=variable.name)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(momentum), velocity[variable.name],
                                   rtol=1e-5, atol=1e-7, err_msg=variable.name)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == STEPS


@pytest.mark.backend_neutral
def test_clipped_trust_ratio_matches_numpy_reference():
    params, grads_per_step = _problem()
    params["kernel"] = params["kernel"] * 10.0  # q near 2 > LR: clipped; the others are not
    variables = [keras.Variable(value, name=name) for name, value in params.items()]
    optimizer = LARS(LR, momentum=MOMENTUM, weight_decay=0.05, eta=ETA, clip_trust_ratio=True)
    for grads in grads_per_step:
        optimizer.apply([grads[v.name] for v in variables], variables)

    clipped = []
    expected, _ = _reference_trajectory(params, grads_per_step, {"bias"}, 0.05, clip=True,
                                        clipped=clipped)
    assert any(clipped) and not all(clipped)  # both branches of the clipping are exercised
    unclipped, _ = _reference_trajectory(params, grads_per_step, {"bias"}, 0.05)
    assert not np.allclose(expected["kernel"], unclipped["kernel"])
    for variable in variables:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected[variable.name],
                                   rtol=1e-5, atol=1e-7, err_msg=variable.name)


@pytest.mark.backend_neutral
def test_clipped_trust_ratio_at_zero_learning_rate_leaves_the_weights():
    variable = keras.Variable(np.array([[3.0, 4.0]], "float32"), name="w")
    optimizer = LARS(0.0, weight_decay=0.0, eta=0.1, clip_trust_ratio=True)
    optimizer.apply([np.array([[1.0, 0.0]], "float32")], [variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [[3.0, 4.0]])
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(optimizer.momentums[0])))


@pytest.mark.backend_neutral
def test_one_step_by_hand():
    variable = keras.Variable(np.array([[3.0, 4.0]], "float32"), name="w")  # ||p|| = 5
    optimizer = LARS(1.0, momentum=0.9, weight_decay=0.0, eta=0.1)
    optimizer.apply([np.array([[0.0, 2.0]], "float32")], [variable])  # ||dp|| = 2, q = 0.25
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), [[3.0, 3.5]], rtol=1e-6)


@pytest.mark.backend_neutral
def test_every_1d_variable_is_excluded_by_default():
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, name="head"),
    ], name="net")
    optimizer = LARS(0.1)
    excluded = {v.path for v in model.trainable_variables if optimizer.is_excluded(v)}
    assert excluded == {"net/conv/bias", "net/bn/gamma", "net/bn/beta", "net/head/bias"}


@pytest.mark.backend_neutral
def test_patterns_replace_the_1d_default():
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, name="dense"),
        keras.layers.BatchNormalization(name="bn"),
    ], name="net")
    optimizer = LARS(0.1, exclude_from_adaptation=["bias", "/bn/"])
    excluded = {v.path for v in model.trainable_variables if optimizer.is_excluded(v)}
    assert excluded == {"net/dense/bias", "net/bn/gamma", "net/bn/beta"}
    assert not any(LARS(0.1, exclude_from_adaptation=[]).is_excluded(v)
                   for v in model.trainable_variables)


@pytest.mark.backend_neutral
def test_get_config_round_trip_with_schedule():
    schedule = WarmupCosine(0.3, total_steps=100, warmup_steps=10, batch_size=512)
    optimizer = LARS(schedule, momentum=0.8, weight_decay=1e-4, eta=2e-3,
                     exclude_from_adaptation=["bias"], clip_trust_ratio=True, clipnorm=1.0)
    config = optimizer.get_config()
    assert config["weight_decay"] == 1e-4 and config["clip_trust_ratio"] is True
    assert optimizer.weight_decay is None  # the base class's decoupled decay is never used

    restored = LARS.from_config(optimizer.get_config())  # from_config edits its argument
    assert restored.get_config() == config
    deserialized = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(deserialized, LARS)
    assert deserialized.get_config() == config


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"momentum": 1.5}, "momentum=1.5"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"eta": 0.0}, "eta=0.0"),
        ({"clip_trust_ratio": 1}, "clip_trust_ratio=1"),
        ({"exclude_from_adaptation": "bias"}, "exclude_from_adaptation='bias'"),
        ({"exclude_from_adaptation": ["("]}, "exclude_from_adaptation=['(']"),
    ],
)
def test_invalid_arguments_raise(kwargs, received):
    with pytest.raises(ValueError, match=r"Received: " + received.replace("(", r"\(")
                       .replace("[", r"\[").replace("]", r"\]")):
        LARS(0.1, **kwargs)


def _dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(1)])


def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_with_lars_and_schedule_reduces_the_loss(jit_compile):
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("torch.compile is slow on CPU; the eager torch path is tested")
    model = _dense_model()
    schedule = WarmupCosine(0.1, total_steps=40, warmup_steps=4, batch_size=256)
    model.compile(optimizer=LARS(schedule, eta=0.1), loss="mse", jit_compile=jit_compile)
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 40


def _apply(optimizer, grads, variables):
    """`optimizer.apply`, except on JAX, where `LossScaleOptimizer` is stateless-only: jitted."""
    if keras.backend.backend() != "jax":
        optimizer.apply(grads, variables)
        return
    import jax

    optimizer.build(variables)
    new_values, new_optimizer_values = jax.jit(optimizer.stateless_apply)(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables]
    )
    pairs = zip(variables + optimizer.variables, new_values + new_optimizer_values, strict=True)
    for variable, value in pairs:
        variable.assign(value)


@pytest.fixture
def mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.backend_neutral
def test_loss_scale_optimizer_unscales_before_lars_and_skips_non_finite_steps(mixed_float16):
    params, grads_per_step = _problem()
    grads = [grads_per_step[0][name] for name in params]
    plain_variables = [keras.Variable(value, name=name) for name, value in params.items()]
    scaled_variables = [keras.Variable(value, name=name) for name, value in params.items()]
    plain = LARS(LR, eta=ETA)
    scaled = keras.optimizers.LossScaleOptimizer(LARS(LR, eta=ETA), initial_scale=1024.0)
    plain.apply(grads, plain_variables)
    _apply(scaled, [g * 1024.0 for g in grads], scaled_variables)
    for a, b in zip(plain_variables, scaled_variables, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-6, atol=1e-7)

    before = [keras.ops.convert_to_numpy(v) for v in scaled_variables]
    _apply(scaled, [np.full_like(g, np.inf) for g in grads], scaled_variables)
    for value, variable in zip(before, scaled_variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    assert int(keras.ops.convert_to_numpy(scaled.iterations)) == 1


@pytest.mark.backend_neutral
def test_fit_in_mixed_float16_wraps_lars_in_loss_scaling(mixed_float16):
    model = _dense_model()
    model.compile(optimizer=LARS(0.5, eta=0.02), loss="mse")
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, LARS)
    assert np.all(np.isfinite(history.history["loss"]))
