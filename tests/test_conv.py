"""MatmulGradConv2D: Keras' Conv2D, with TensorFlow's filter gradient as one matrix product."""

import keras
import numpy as np
import pytest

from keras_vicreg.models import backbones
from keras_vicreg.models.backbones import resnet_backbone
from keras_vicreg.experimental.cpu import conv
from keras_vicreg.experimental.cpu import use_cpu_kernels

pytestmark = pytest.mark.backend_neutral

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the matrix-product filter gradient is TensorFlow's; elsewhere the layer is Keras' own",
)


@tensorflow_only
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_filter_gradient_equals_tensorflows_backprop_filter(kernel, padding):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(6, 5, 4, 3)).astype("float32"))
    kernel_shape = (*kernel, 3, 7)
    out = tf.nn.convolution(images, tf.zeros(kernel_shape), padding=padding.upper())
    output_gradient = tf.constant(rng.normal(size=out.shape).astype("float32"))
    expected = tf.raw_ops.Conv2DBackpropFilter(
        input=images, filter_sizes=kernel_shape, out_backprop=output_gradient,
        strides=[1, 1, 1, 1], padding=padding.upper(),
    )
    got = conv.filter_gradient(images, output_gradient, kernel_shape, padding)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@tensorflow_only
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_layer_outputs_and_gradients_equal_conv2d_on_small_maps(padding):
    import tensorflow as tf

    plain = keras.layers.Conv2D(8, 3, padding=padding, use_bias=True)
    fast = conv.MatmulGradConv2D(8, 3, padding=padding, use_bias=True)
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 4, 4, 6)).astype("float32"))
    plain.build(x.shape)
    fast.build(x.shape)
    fast.set_weights([w + 0.1 for w in plain.get_weights()])
    plain.set_weights(fast.get_weights())
    assert fast._matmul_gradient_applies(x)  # a 4 x 4 map: the matrix-product gradient
    results = []
    for layer in (plain, fast):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        results.append(tape.gradient(loss, [x, layer.kernel.value, layer.bias.value]))
    for got, expected in zip(*reversed(results)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_large_maps_strides_and_other_backends_take_keras_conv2d():
    layer = conv.MatmulGradConv2D(4, 3, padding="same")
    strided = conv.MatmulGradConv2D(4, 3, strides=2, padding="same")
    small = np.zeros((2, 4, 4, 3), "float32")
    assert not layer._matmul_gradient_applies(np.zeros((2, 8, 8, 3), "float32"))  # 64 positions
    assert not strided._matmul_gradient_applies(small)
    assert layer._matmul_gradient_applies(small) == (keras.backend.backend() == "tensorflow")


def test_resnets_convert_their_stride_1_convolutions_on_request_and_round_trip(tmp_path):
    model = backbones.resnet(18, stem="small", input_shape=(16, 16, 1), filters=(4, 8, 8, 16))
    assert type(model.get_layer("stem_conv")) is keras.layers.Conv2D  # stock by default
    counts = use_cpu_kernels(model, batch_norm=False)
    assert counts["batch_norm"] == 0
    convolutions = [layer for layer in resnet_backbone._all_layers(model)
                    if isinstance(layer, keras.layers.Conv2D)]
    converted = [layer for layer in convolutions if isinstance(layer, conv.MatmulGradConv2D)]
    assert converted and counts["conv"] == len(converted)
    assert all(tuple(layer.strides) == (1, 1) for layer in converted)
    assert all(tuple(layer.strides) != (1, 1) for layer in convolutions if layer not in converted)
    x = np.random.default_rng(2).uniform(size=(3, 16, 16, 1)).astype("float32")
    path = str(tmp_path / "backbone.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("stem_conv"), conv.MatmulGradConv2D)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    assert conv.use_matmul_filter_gradients(model) == 0  # nothing left to convert
