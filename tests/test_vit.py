"""Tests for keras_vicreg.models.backbones.vit: keras-hub's ViT, pooled, at other image sizes.

The references are keras-hub's own `ViTBackbone` holding the same weights (at the size built),
TensorFlow's bilinear resize (for the position embeddings at another size), the published
parameter count formula, a `.keras` round trip and the SavedModel export reloaded.
"""

import os
import pathlib
import re
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import keras_vicreg
from keras_vicreg import export
from keras_vicreg.models.backbones import resizing
from keras_vicreg.models.backbones import vit_backbone as vit_lib

BACKEND = keras.backend.backend()
ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


def _images(size, seed=0, count=2):
    return np.random.default_rng(seed).normal(size=(count, size, size, 3)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture
def tiny():
    """vit_tiny on 32-pixel images with random (not initial) position embeddings."""
    model = vit_lib.vit("vit_tiny", input_shape=(32, 32, 3), pooling="class_token")
    embedding = model.get_layer("vit_patching_and_embedding")
    positions = embedding.position_embedding.embeddings
    positions.assign(np.random.default_rng(3).normal(size=positions.shape).astype("float32"))
    return model


@pytest.mark.backend_neutral
@pytest.mark.parametrize("pooling", vit_lib.POOLINGS)
def test_at_the_built_size_the_features_are_keras_hubs_vit_tokens_pooled(tiny, pooling):
    model = vit_lib.vit("vit_tiny", input_shape=(32, 32, 3), pooling=pooling)
    model.set_weights(tiny.get_weights())
    reference = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), **TINY)
    reference.set_weights(tiny.get_weights())
    tokens = _numpy(reference(_images(32)))
    expected = tokens[:, 0] if pooling == "class_token" else tokens[:, 1:].mean(axis=1)
    np.testing.assert_allclose(_numpy(model(_images(32))), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.backend_neutral
def test_at_48_pixels_the_position_embeddings_are_resized_bilinearly_class_token_kept(tiny):
    wide = resizing.at_image_size(tiny, 48)
    assert wide.input_shape == (None, 48, 48, 3) and wide.output_shape == (None, 32)
    features = _numpy(wide(_images(48)))
    assert features.shape == (2, 32) and np.isfinite(features).all()
    embedding = tiny.get_layer("vit_patching_and_embedding")
    # Zero images: each token is the patch embedding's bias plus its position embedding.
    tokens = _numpy(embedding(np.zeros((1, 48, 48, 3), "float32")))[0]
    bias = _numpy(embedding.patch_embedding.bias)
    positions = _numpy(embedding.position_embedding.embeddings)
    expected_grid = tf.image.resize(positions[1:].reshape(1, 8, 8, 32), (12, 12), "bilinear")
    assert tokens.shape == (1 + 12 * 12, 32)
    np.testing.assert_allclose(tokens[0], positions[0] + _numpy(embedding.class_token)[0, 0],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tokens[1:] - bias, expected_grid.numpy().reshape(144, 32),
                               rtol=1e-5, atol=1e-5)
    # The resized model shares the weights: at the built size it is the model itself.
    assert resizing.at_image_size(tiny, 32) is tiny
    assert wide.get_layer("vit_patching_and_embedding") is embedding


@pytest.mark.backend_neutral
def test_vit_s16_has_the_published_size_and_b16_its_width():
    model = vit_lib.vit("vit_s16", input_shape=(224, 224, 3))
    width, mlp, layers, patches = 384, 1536, 12, 14 * 14
    per_layer = 2 * 2 * width + 4 * (width * width + width) + 2 * width * mlp + mlp + width
    expected = (16 * 16 * 3 * width + width) + width + (patches + 1) * width + layers * per_layer
    expected += 2 * width  # the final LayerNormalization
    assert model.count_params() == expected  # 21,665,664: ViT-S/16 without its classifier
    assert model.output_shape == (None, 384)
    assert vit_lib.VARIANTS["vit_b16"] == (16, 12, 12, 768, 3072)


@pytest.mark.backend_neutral
def test_bad_arguments_raise_a_clear_error():
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        vit_lib.vit("vit_s16", input_shape=(40, 40, 3))
    with pytest.raises(ValueError, match="pooling"):
        vit_lib.vit("vit_tiny", input_shape=(32, 32, 3), pooling="max")
    with pytest.raises(ValueError, match="variant"):
        vit_lib.vit("vit_h14", input_shape=(224, 224, 3))


@pytest.mark.backend_neutral
def test_the_tiny_vit_trains_vicreg_steps_with_a_finite_loss(tiny):
    model = keras_vicreg.VICReg(tiny, "32-32")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    embedding = tiny.get_layer("vit_patching_and_embedding")
    before = {w.path: _numpy(w).copy() for w in embedding.weights}
    views = (_images(32, seed=1, count=16), _images(32, seed=2, count=16))
    history = model.fit(tf.data.Dataset.from_tensors(views).repeat(3), verbose=0).history
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    for weight in embedding.weights:  # the class token and the position embeddings train too
        assert not np.allclose(_numpy(weight), before[weight.path]), weight.path


@pytest.mark.backend_neutral
def test_keras_file_round_trip_gives_the_same_features_at_both_sizes(tiny, tmp_path):
    path = str(tmp_path / "vit.keras")
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    for size in (32, 48):
        np.testing.assert_allclose(
            _numpy(resizing.at_image_size(loaded, size)(_images(size))),
            _numpy(resizing.at_image_size(tiny, size)(_images(size))), rtol=1e-6, atol=1e-6,
        )


@pytest.mark.backend_neutral
@pytest.mark.skipif(BACKEND not in ("tensorflow", "jax"), reason="SavedModel export: TF and JAX")
def test_the_saved_model_serves_the_vits_features_at_another_size(tiny, tmp_path):
    path = str(tmp_path / "saved_model")
    export.export_backbone(tiny, path, image_size=48, mean=(0.5,) * 3, std=(0.25,) * 3)
    loaded = tf.saved_model.load(path)
    got = loaded.serve_features(tf.constant(_images(48))).numpy()
    expected = _numpy(resizing.at_image_size(tiny, 48)(_images(48)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert export.load_metadata(path)["pretraining_image_size"] == 32


@pytest.mark.slow
def test_the_pretraining_binary_trains_and_exports_vit_tiny(tmp_path):
    workdir = str(tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-m", "trainers.pretrain", "--config=configs/tiny.py",
         f"--workdir={workdir}", "--config.model.backbone=vit_tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"^step \d+/24 .* loss ([-\d.e]+)", result.stdout, re.M)]
    assert len(losses) == 24 and np.isfinite(losses).all()
    assert np.mean(losses[-4:]) < np.mean(losses[:4])  # it learned something
    backbone = keras.saving.load_model(os.path.join(workdir, "export", "backbone.keras"))
    assert tuple(backbone.get_layer("vit_patching_and_embedding").patch_size) == (4, 4)
    assert backbone.output_shape == (None, 32)
