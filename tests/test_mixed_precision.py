"""Mixed precision: float16 and bfloat16 forward passes, a float32 loss, skipped non-finite steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vicreg import LARS
from keras_vicreg import VICReg

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="float16 convolutions on CPU: TensorFlow only (JAX and PyTorch CPU kernels vary)",
)


@pytest.fixture
def policy():
    """Sets a global dtype policy for the test and restores float32 afterwards."""
    yield keras.mixed_precision.set_dtype_policy
    keras.mixed_precision.set_dtype_policy("float32")


def _model(optimizer):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = VICReg(keras.Model(inputs, x), "32-16")
    model.compile(optimizer=optimizer, jit_compile=False)
    return model


def _pairs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    return a, a + 0.1 * rng.normal(size=a.shape).astype("float32")


def _trainable(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


@pytest.mark.parametrize("name, compute_dtype", [("mixed_float16", "float16"),
                                                 ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_fit_computes_in_low_precision_with_a_float32_loss(policy, name,
                                                                           compute_dtype):
    policy(name)
    model = _model(LARS(0.1))
    pairs = _pairs()
    assert model.embed(pairs[0]).dtype == compute_dtype
    terms = model.compute_terms(pairs, training=True)
    assert all(terms[key].dtype == "float32" for key in ("loss", "invariance", "variance"))
    history = model.fit(tf.data.Dataset.from_tensor_slices(pairs).batch(8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # float32 master weights
    applied = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if name == "mixed_float16":
        # Dynamic loss scaling: every step is applied or, if its gradients overflowed, skipped
        # with the scale halved (from Keras' initial 2**15).
        scale = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
        assert applied + round(np.log2(2.0**15 / scale)) == 2
    else:
        assert applied == 2


def test_mixed_float16_skips_a_step_whose_gradients_overflow(policy):
    policy("mixed_float16")
    # A loss scale of 2**40 overflows float16 in the backward pass: the gradients are infinite
    # although the float32 loss is finite.
    optimizer = keras.optimizers.LossScaleOptimizer(LARS(0.1), initial_scale=2.0**40)
    model = _model(optimizer)
    pairs = _pairs()
    before = _trainable(model)
    history = model.fit(tf.data.Dataset.from_tensor_slices(pairs).batch(16), epochs=1, verbose=0)

    assert np.isfinite(history.history["loss"][0])
    for a, b in zip(before, _trainable(model), strict=True):
        np.testing.assert_array_equal(a, b)  # the step was not applied
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0
    assert float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale)) == 2.0**39

    model.optimizer.dynamic_scale.assign(2.0**4)  # a scale that fits: the next step is applied
    model.fit(tf.data.Dataset.from_tensor_slices(pairs).batch(16), epochs=1, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1
    assert all(np.all(np.isfinite(w)) for w in _trainable(model))
    assert any(not np.array_equal(a, b) for a, b in zip(before, _trainable(model), strict=True))


def test_compile_wraps_the_optimizer_for_loss_scaling_under_mixed_float16(policy):
    policy("mixed_float16")
    assert isinstance(_model(LARS(0.1)).optimizer, keras.optimizers.LossScaleOptimizer)
    policy("mixed_bfloat16")
    assert isinstance(_model(LARS(0.1)).optimizer, LARS)  # bfloat16 needs no loss scaling
