"""Tests for keras_vicreg.export: the SavedModel's two signatures, its JSON and its reloads."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vicreg
from keras_vicreg import export
from keras_vicreg.data import centre_crop_preprocess

SIZE = 16
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
BACKEND = keras.backend.backend()
exportable = pytest.mark.skipif(
    BACKEND not in ("tensorflow", "jax"), reason="SavedModel export runs on TensorFlow and JAX"
)


def _backbone_with_batchnorm_statistics():
    """A small ResNet whose BatchNorm moving statistics are far from (0, 1), so that inference and
    training mode give different features."""
    backbone = keras_vicreg.backbones.resnet(
        18, stem="small", input_shape=(SIZE, SIZE, 3), zero_init_residual=False
    )
    rng = np.random.default_rng(0)
    for weight in backbone.weights:
        if "moving_mean" in weight.path:
            weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
        elif "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2.0, size=weight.shape).astype("float32"))
    return backbone


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(backbone, path, metadata) of one export shared by the tests of this module."""
    if BACKEND not in ("tensorflow", "jax"):
        pytest.skip("SavedModel export runs on TensorFlow and JAX")
    backbone = _backbone_with_batchnorm_statistics()
    path = str(tmp_path_factory.mktemp("export") / "backbone")
    config = {"model": {"depth": 18, "expander": "32-32"}, "batch_size": 8}
    metadata = export.export_backbone(
        backbone, path, image_size=SIZE, mean=MEAN, std=STD, resize_ratio=1.5, config=config
    )
    return backbone, path, metadata


def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(3, SIZE, SIZE, 3)).astype("float32")


@exportable
@pytest.mark.backend_neutral
def test_reloaded_serve_features_equal_the_in_memory_backbone(exported):
    backbone, path, _ = exported
    images = _images()
    expected = keras.ops.convert_to_numpy(backbone(images, training=False))
    weights = backbone.get_weights()
    in_training_mode = keras.ops.convert_to_numpy(backbone(images, training=True))
    backbone.set_weights(weights)  # training mode moved the statistics; the export has the old ones
    assert np.abs(expected - in_training_mode).max() > 1e-3  # so the export must be in inference
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(reloaded.serve_features(tf.constant(images)).numpy(), expected,
                               atol=1e-5, rtol=1e-5)
    signature = reloaded.signatures["serve_features"]
    output = list(signature(tf.constant(images)).values())[0].numpy()
    np.testing.assert_allclose(output, expected, atol=1e-5, rtol=1e-5)


@exportable
@pytest.mark.backend_neutral
def test_serve_preprocesses_raw_uint8_images_of_any_size_inside_the_graph(exported):
    backbone, path, _ = exported
    reloaded = tf.saved_model.load(path)
    for shape in ((2, 30, 45, 3), (1, 17, 16, 3)):
        raw = np.random.default_rng(1).integers(0, 256, size=shape).astype("uint8")
        preprocessed = centre_crop_preprocess(tf.constant(raw), SIZE, 1 / 1.5, MEAN, STD).numpy()
        expected = keras.ops.convert_to_numpy(backbone(preprocessed, training=False))
        np.testing.assert_allclose(reloaded.serve(tf.constant(raw)).numpy(), expected,
                                   atol=1e-5, rtol=1e-5)


@exportable
@pytest.mark.backend_neutral
def test_export_writes_a_json_describing_the_backbone(exported):
    backbone, path, metadata = exported
    with open(os.path.join(path, export.METADATA_FILE)) as file:
        written = json.load(file)
    assert written == metadata == export.load_metadata(path)
    assert written["backbone"] == backbone.name
    assert (written["image_size"], written["channels"], written["feature_width"]) == (SIZE, 3, 512)
    assert written["mean"] == list(MEAN) and written["std"] == list(STD)
    assert written["resize_ratio"] == 1.5
    assert written["config"] == {"model": {"depth": 18, "expander": "32-32"}, "batch_size": 8}
    assert written["exported_from_backend"] == BACKEND
    assert export.is_exported(path)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="keras.layers.TFSMLayer needs TensorFlow")
def test_tfsm_layer_reload_gives_the_same_features(exported):
    backbone, path, _ = exported
    images = _images(2)
    for endpoint, inputs in (("serve_features", images),
                             ("serve", (images * 40 + 128).clip(0, 255).astype("uint8"))):
        layer = keras.layers.TFSMLayer(path, call_endpoint=endpoint)
        if endpoint == "serve":
            inputs_for_backbone = centre_crop_preprocess(tf.constant(inputs), SIZE, 1 / 1.5, MEAN,
                                                             STD)
        else:
            inputs_for_backbone = inputs
        expected = backbone(inputs_for_backbone, training=False).numpy()
        np.testing.assert_allclose(layer(inputs).numpy(), expected, atol=1e-5, rtol=1e-5)


@exportable
@pytest.mark.backend_neutral
def test_a_vicreg_model_exports_its_backbone(tmp_path):
    backbone = keras_vicreg.backbones.resnet(18, stem="small", input_shape=(SIZE, SIZE, 3))
    model = keras_vicreg.VICReg(backbone, expander="16-16")
    metadata = export.export_backbone(model, str(tmp_path / "vicreg"))
    assert metadata["backbone"] == backbone.name and metadata["image_size"] == SIZE
    assert metadata["config"] is None


@exportable
@pytest.mark.backend_neutral
def test_export_rejects_an_impossible_size_and_wrong_normalisation(tmp_path):
    backbone = keras_vicreg.backbones.resnet(18, stem="small", input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="Received: image_size=0"):
        export.export_backbone(backbone, str(tmp_path / "a"), image_size=0)
    with pytest.raises(ValueError, match="Received: mean=\\(0.5,\\)"):
        export.export_backbone(backbone, str(tmp_path / "b"), mean=(0.5,), std=(0.5,))


@exportable
@pytest.mark.backend_neutral
def test_serve_at_the_eval_size_scores_what_the_labelled_pipeline_feeds_the_backbone(tmp_path):
    """A backbone pretrained on 16-pixel grayscale images, exported to read 24 pixels (FixRes, as
    the demo reads 44 for 28): `serve` on raw uint8 images gives the features of an independently
    built 24-pixel backbone with the same weights on `labelled_dataset`'s whole images at 24."""
    from keras_vicreg.data import labelled_dataset
    from keras_vicreg.data import transforms

    eval_size = 24
    backbone = keras_vicreg.backbones.resnet(
        18, stem="small", input_shape=(SIZE, SIZE, 1), filters=(8, 16, 16, 32),
        zero_init_residual=False,
    )
    rng = np.random.default_rng(4)
    for weight in backbone.weights:
        if "moving_mean" in weight.path:
            weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    view = transforms.get_augmentation("grayscale", eval_size).view_a
    metadata = export.export_backbone(
        backbone, str(tmp_path / "eval_size"), image_size=eval_size, mean=view.mean,
        std=view.std, resize_ratio=1.0,
    )
    assert (metadata["image_size"], metadata["pretraining_image_size"]) == (eval_size, SIZE)
    assert export.load_metadata(str(tmp_path / "eval_size"))["image_size"] == eval_size
    assert backbone.input_shape == (None, SIZE, SIZE, 1)  # the exported one is a resized view

    reference = keras_vicreg.backbones.resnet(
        18, stem="small", input_shape=(eval_size, eval_size, 1), filters=(8, 16, 16, 32),
        zero_init_residual=False,
    )
    reference.set_weights(backbone.get_weights())
    raw = rng.integers(0, 256, size=(6, SIZE, SIZE, 1)).astype("uint8")
    (images, _), = labelled_dataset((raw, np.arange(6)), 6, train=False,
                                    augmentation=transforms.get_augmentation("grayscale",
                                                                             eval_size),
                                    crop_fraction=1.0)
    expected = keras.ops.convert_to_numpy(reference(np.asarray(images), training=False))
    assert np.abs(expected).max() > 0.1
    reloaded = tf.saved_model.load(str(tmp_path / "eval_size"))
    np.testing.assert_allclose(reloaded.serve(tf.constant(raw)).numpy(), expected, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.backend_neutral
@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's export error")
def test_torch_backend_export_is_a_clear_error_without_torch_xla(tmp_path):
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed: Keras can export from torch")
    backbone = keras_vicreg.backbones.resnet(18, stem="small", input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="torch_xla.*KERAS_BACKEND=tensorflow or jax"):
        export.export_backbone(backbone, str(tmp_path / "torch"))


@exportable
@pytest.mark.backend_neutral
def test_a_mixed_bfloat16_backbone_serves_float32_features(tmp_path):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        backbone = keras_vicreg.backbones.resnet(18, stem="small", input_shape=(SIZE, SIZE, 3),
                                                 filters=(4, 8, 8, 16))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    images = _images(3)
    computed = keras.ops.convert_to_numpy(backbone(images, training=False))
    assert str(computed.dtype) == "bfloat16"  # so the export has something to convert
    export.export_backbone(backbone, str(tmp_path / "mixed"), image_size=SIZE, mean=MEAN, std=STD)
    reloaded = tf.saved_model.load(str(tmp_path / "mixed"))  # kept: its variables must live
    served = reloaded.serve_features(tf.constant(images))
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), computed.astype("float32"), rtol=2e-2, atol=2e-2)
