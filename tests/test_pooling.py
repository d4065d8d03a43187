"""Tests for keras_vicreg.models.pooling: a backbone as float32 (batch, d) features."""

import keras
import numpy as np
import pytest

import keras_vicreg
from keras_vicreg.models.pooling import pooled_features

SIZE = 8


def _feature_map_backbone(name="map_backbone"):
    """A convolution without pooling: its output is a (batch, 4, 4, 5) feature map."""
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Conv2D(5, 3, strides=2, padding="same")(inputs)
    return keras.Model(inputs, outputs, name=name)


def _images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.backend_neutral
def test_a_feature_map_is_averaged_over_its_positions_like_a_float64_mean():
    backbone = _feature_map_backbone()
    images = _images()
    model = pooled_features(backbone)
    expected = _numpy(backbone(images)).astype("float64").mean(axis=(1, 2))
    assert model.output_shape == (None, 5) and model.name == "map_backbone"
    np.testing.assert_allclose(_numpy(model(images)), expected, rtol=1e-5, atol=1e-6)
    assert model.weights[0] is backbone.weights[0]  # the same layers, not a copy


@pytest.mark.backend_neutral
def test_a_backbone_that_returns_float32_features_is_returned_as_it_is():
    inputs = keras.Input((SIZE, SIZE, 3))
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    assert pooled_features(backbone) is backbone


@pytest.mark.backend_neutral
def test_a_vicreg_model_gives_its_backbones_features_equal_to_its_own_call():
    model = keras_vicreg.VICReg(_feature_map_backbone(), expander="8-8")
    images = _images()
    features = pooled_features(model)
    np.testing.assert_allclose(_numpy(features(images)), _numpy(model(images)), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.backend_neutral
def test_a_mixed_precision_backbone_gives_float32_features():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        backbone = _feature_map_backbone()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    images = _images()
    computed = _numpy(backbone(images))
    assert str(computed.dtype) == "bfloat16"
    features = _numpy(pooled_features(backbone)(images))
    assert str(features.dtype) == "float32"
    np.testing.assert_allclose(features, computed.astype("float32").mean(axis=(1, 2)), rtol=2e-2,
                               atol=2e-2)


@pytest.mark.backend_neutral
def test_the_pooled_model_survives_a_keras_file_round_trip(tmp_path):
    model = pooled_features(_feature_map_backbone())
    path = str(tmp_path / "pooled.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    images = _images()
    np.testing.assert_allclose(_numpy(reloaded(images)), _numpy(model(images)), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.backend_neutral
def test_models_that_do_not_map_images_to_features_are_clear_errors():
    with pytest.raises(ValueError, match="Received: model=<Dense"):
        pooled_features(keras.layers.Dense(2))
    inputs = keras.Input((SIZE, 3))
    sequence = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    with pytest.raises(ValueError, match=r"Received: output shape \(None, 8, 4\)"):
        pooled_features(sequence)
    two = keras.Model(inputs, [keras.layers.Dense(4)(inputs), keras.layers.Dense(2)(inputs)])
    with pytest.raises(ValueError, match="Received: 2 outputs"):
        pooled_features(two)
