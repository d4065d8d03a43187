"""Offline ResNet backbones: layouts, widths, stems, zero-initialised residual branches."""

import keras
import numpy as np
import pytest

from keras_vicreg.models import backbones
from keras_vicreg.models.backbones import resnet_backbone

pytestmark = pytest.mark.backend_neutral


def zero_gamma_layers(model):
    return [
        layer.name
        for layer in resnet_backbone._all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        and not np.any(keras.ops.convert_to_numpy(layer.gamma))
    ]


@pytest.mark.parametrize("source", backbones.SOURCES)
@pytest.mark.parametrize("depth, width, blocks", [(18, 512, 8), (50, 2048, 16)])
def test_imagenet_stem_gives_the_pooled_width(source, depth, width, blocks):
    model = backbones.resnet(depth, source=source, input_shape=(64, 64, 3))
    assert model.output_shape == (None, width)
    assert len(zero_gamma_layers(model)) == blocks  # one per residual block
    features = model(np.random.rand(2, 64, 64, 3).astype("float32"))
    assert features.shape == (2, width)


@pytest.mark.parametrize("source", backbones.SOURCES)
def test_small_stem_keeps_the_resolution_of_small_images(source):
    model = backbones.resnet(18, source=source, stem="small", input_shape=(32, 32, 3),
                             filters=(8, 16, 32, 64))
    stem = model.get_layer("stem_conv")
    assert stem.kernel_size == (3, 3) and stem.strides == (1, 1)
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    last_map = [layer for layer in model.layers if "add" in layer.name][-1].output
    assert tuple(last_map.shape[1:3]) == (4, 4)  # 32 / 8: three stride-2 stages, no stem stride
    assert model.output_shape == (None, 64)


def test_keras_hub_layout_puts_the_stride_on_the_3x3_convolution():
    model = backbones.resnet(50, source="keras_hub", input_shape=(64, 64, 3))
    inner = model.layers[1]  # the keras-hub ResNetBackbone inside the pooled model
    assert inner.get_layer("stack1_block0_1_conv").strides == (1, 1)
    assert inner.get_layer("stack1_block0_2_conv").strides == (2, 2)


def test_zero_init_can_be_switched_off():
    model = backbones.resnet(18, stem="small", input_shape=(16, 16, 3), zero_init_residual=False)
    assert zero_gamma_layers(model) == []


def test_preactivation_blocks_build_and_are_not_zero_initialised():
    model = backbones.resnet(18, stem="small", preactivation=True, input_shape=(16, 16, 3))
    assert zero_gamma_layers(model) == []
    assert model.output_shape == (None, 512)


def test_grayscale_images_need_no_adapter():
    model = backbones.resnet(18, stem="small", input_shape=(28, 28, 1), filters=(8, 16, 32, 64))
    assert model(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=20), "depth"),
        (dict(depth=18, source="timm"), "source"),
        (dict(depth=18, stem="cifar"), "stem"),
        (dict(depth=18, input_shape=(32, 32)), "input_shape"),
        (dict(depth=18, filters=(8, 16, 32)), "filters"),
        (dict(depth=18, source="keras_cv", filters=(8, 16, 32, 64)), "small"),
        (dict(depth=50, width_multiplier=0), "width_multiplier"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        backbones.resnet(**kwargs)


LOAD_WITHOUT_KERAS_VICREG = """
import sys
import keras
import keras_hub  # noqa: F401  (registers the keras-hub ResNetBackbone)
import numpy as np
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x)))
assert not any(name.startswith("keras_vicreg") for name in sys.modules), "keras_vicreg imported"
"""


@pytest.mark.parametrize("stem", ["small", "imagenet"])
def test_a_default_resnet_keras_file_loads_with_keras_and_keras_hub_alone(tmp_path, stem):
    import os
    import subprocess
    import sys

    model = backbones.resnet(18, stem=stem, input_shape=(32, 32, 3),
                             filters=(4, 8, 8, 16) if stem == "small" else (64, 128, 256, 512))
    x = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "backbone.keras")
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_KERAS_VICREG, str(tmp_path / "backbone.keras"),
         str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)


def test_the_imagenet_stem_encoder_is_a_keras_hub_backbone_that_a_keras_hub_task_takes():
    import keras_hub

    model = backbones.resnet(18, input_shape=(32, 32, 3))
    encoders = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    assert len(encoders) == 1
    classifier = keras_hub.models.ResNetImageClassifier(backbone=encoders[0], num_classes=3)
    x = np.random.default_rng(4).uniform(size=(2, 32, 32, 3)).astype("float32")
    assert tuple(classifier.predict(x, verbose=0).shape) == (2, 3)


def test_wide_resnets_multiply_every_width_and_resnet200_has_its_blocks():
    wide = backbones.resnet(50, input_shape=(64, 64, 3), filters=(8, 16, 32, 64),
                            width_multiplier=2)
    assert wide.name == "resnet50x2_keras_hub" and wide.output_shape == (None, 4 * 128)
    assert wide.get_layer("conv1_conv").filters == 16  # the ImageNet stem is widened too
    assert backbones.catalog.resnet_depth_and_width("resnet200x2") == (200, 2)
    assert backbones.catalog.resnet_depth_and_width("resnet50x4") == (50, 4)
    assert backbones.resnet_backbone._DEPTH_BLOCKS[200] == (3, 24, 36, 3)


def test_convnext_tiny_builds_offline_and_a_test_convnext_round_trips(tmp_path):
    tiny = backbones.build("convnext_tiny", (32, 32, 3))
    assert tiny.output_shape == (None, 768) and tiny.name == "convnext_tiny"
    small = backbones.convnext("convnext_test", input_shape=(32, 32, 1))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    features = keras.ops.convert_to_numpy(small(images))
    assert features.shape == (2, 64) and np.abs(features).max() > 0
    small.save(tmp_path / "convnext.keras")
    loaded = keras.saving.load_model(tmp_path / "convnext.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)), features, atol=1e-6)
    with pytest.raises(ValueError, match="at least 32"):
        backbones.convnext("convnext_tiny", input_shape=(16, 16, 3))
