"""FusedBatchNormalization: Keras' BatchNormalization to float rounding, through the fused kernel."""

import keras
import numpy as np
import pytest

from keras_vicreg.models import backbones
from keras_vicreg.models.backbones import resnet_backbone
from keras_vicreg.experimental.cpu.batch_norm import FusedBatchNormalization
from keras_vicreg.experimental.cpu import use_cpu_kernels
from keras_vicreg.experimental.cpu import use_stock_layers
from keras_vicreg.experimental.cpu.batch_norm import fuse_batch_norm

pytestmark = pytest.mark.backend_neutral


def _pair(shape, **kwargs):
    """A Keras BatchNormalization and a FusedBatchNormalization with the same random weights."""
    plain = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    rng = np.random.default_rng(0)
    for layer in (plain, fused):
        layer.build(shape)
    for variable in plain.weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    fused.set_weights(plain.get_weights())
    return plain, fused


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the fused kernel is TensorFlow's; elsewhere the layer is Keras' own",
)


@tensorflow_only
@pytest.mark.parametrize("shape", [(8, 5, 5, 6), (16, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_matches_keras_outputs_gradients_and_moving_statistics(shape, training):
    import tensorflow as tf

    plain, fused = _pair(shape, momentum=0.9, epsilon=1e-5)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32"))
    weights = np.random.default_rng(2).normal(size=shape).astype("float32")
    results = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(layer(x, training=training) * weights)
        grads = tape.gradient(value, [x, layer.gamma.value, layer.beta.value])
        stats = [v.numpy() for v in (layer.moving_mean.value, layer.moving_variance.value)]
        results.append((value.numpy(), [g.numpy() for g in grads], stats))
    (value_p, grads_p, stats_p), (value_f, grads_f, stats_f) = results
    np.testing.assert_allclose(value_f, value_p, rtol=1e-5, atol=1e-4)
    for grad_f, grad_p in zip(grads_f, grads_p):
        np.testing.assert_allclose(grad_f, grad_p, rtol=1e-4, atol=1e-4)
    for stat_f, stat_p in zip(stats_f, stats_p):
        np.testing.assert_allclose(stat_f, stat_p, rtol=1e-5)
    initial = _pair(shape)[0].get_weights()[2:]
    assert training != np.allclose(stats_f[1], initial[1])  # moved only when training


def test_moving_variance_follows_the_biased_batch_variance():
    layer = FusedBatchNormalization(momentum=0.0)  # the moving statistics become the batch's
    x = np.random.default_rng(3).normal(0.0, 2.0, (4, 3, 3, 2)).astype("float32")
    layer(x, training=True)
    reduced = x.reshape(-1, 2).astype("float64")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), reduced.mean(0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance),
                               reduced.var(0, ddof=0), rtol=1e-5)


def test_mixed_bfloat16_outputs_match_keras_to_bfloat16_precision():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        plain, fused = _pair((8, 4, 4, 3))
        x = np.random.default_rng(4).normal(size=(8, 4, 4, 3)).astype("float32")
        outputs = [layer(x, training=True) for layer in (plain, fused)]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(outputs[1].dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(fused.moving_mean.dtype) == "float32"
    np.testing.assert_allclose(*(keras.ops.convert_to_numpy(keras.ops.cast(o, "float32"))
                                 for o in outputs), rtol=2e-2, atol=2e-2)


def test_fuse_batch_norm_converts_nested_layers_in_place_and_keeps_outputs():
    inner = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])
    inputs = keras.Input((3,))
    outputs = keras.layers.BatchNormalization(name="outer_bn")(inner(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(5).normal(size=(6, 3)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x, training=True))
    assert fuse_batch_norm(model) == 2
    assert isinstance(model.get_layer("outer_bn"), FusedBatchNormalization)
    assert isinstance(inner.layers[1], FusedBatchNormalization)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=True)), before,
                               rtol=1e-5, atol=1e-5)
    assert fuse_batch_norm(model) == 0  # nothing left to convert


def test_cpu_kernels_fuse_a_resnet_on_request_round_trip_and_swap_back(tmp_path):
    model = backbones.resnet(18, stem="small", input_shape=(16, 16, 1), filters=(4, 8, 8, 16))
    assert type(model.get_layer("stem_bn")) is keras.layers.BatchNormalization  # stock by default
    counts = use_cpu_kernels(model)
    norms = [layer for layer in resnet_backbone._all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and counts["batch_norm"] == len(norms)
    assert all(isinstance(layer, FusedBatchNormalization) for layer in norms)
    x = np.random.default_rng(6).uniform(size=(4, 16, 16, 1)).astype("float32")
    model(x, training=True)  # moves the moving statistics away from their initial values
    path = str(tmp_path / "backbone.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("stem_bn"), FusedBatchNormalization)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    fused_outputs = keras.ops.convert_to_numpy(model(x))
    assert use_stock_layers(model) == counts["batch_norm"] + counts["conv"]
    assert type(model.get_layer("stem_bn")) is keras.layers.BatchNormalization
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), fused_outputs,
                               rtol=1e-5, atol=1e-6)
