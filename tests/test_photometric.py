"""The photometric half of the views in the train step (`config.photometric_device="accelerator"`):
the keras.ops path against the TensorFlow host path on the same draws, the layer, the pipeline's
crops, and the tiny config trained, checkpointed and exported with it on every backend."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_vicreg
from keras_vicreg.data import transforms
from keras_vicreg.data.transforms import draws
from keras_vicreg.data.transforms import keras_photometric
from keras_vicreg.models import PhotometricAugmentation
from keras_vicreg.training import checkpointing
from keras_vicreg.training import recipe
from tests.test_pretrain_config import load_config

pytestmark = pytest.mark.backend_neutral
ROOT = pathlib.Path(__file__).resolve().parents[1]

# The three presets at 24 pixels (a 5-tap blur), view a and view b.
PRESETS = [transforms.get_augmentation(name, 24) for name in sorted(transforms.AUGMENTATIONS)]
VIEWS = [(preset.name, key, getattr(preset, key)) for preset in PRESETS
         for key in ("view_a", "view_b")]


def _keras_params(params):
    return draws.ViewParams(*(ops.convert_to_tensor(np.asarray(value)) for value in params))


@pytest.mark.parametrize("name, key, view", VIEWS, ids=[f"{n}-{k}" for n, k, _ in VIEWS])
def test_the_keras_path_equals_the_tensorflow_path_on_the_same_draws(name, key, view):
    count = 64  # every choice taken and left by some image, at these probabilities
    uniforms = tf.random.stateless_uniform([count, keras_photometric.VIEW_UNIFORMS], [7, 1])
    host = draws._view_params(uniforms, view)
    device = keras_photometric.view_params(ops.convert_to_tensor(uniforms.numpy()), view)
    for field, a, b in zip(draws.ViewParams._fields, host, device):
        np.testing.assert_array_equal(ops.convert_to_numpy(b), a.numpy(), err_msg=field)
    images = np.random.default_rng(0).uniform(size=(count, *transforms.view_shape(view)))
    images = images.astype(np.float32)
    expected = transforms.apply_view_params_batch(tf.constant(images), host, view).numpy()
    got = keras_photometric.apply_view_params(ops.convert_to_tensor(images), _keras_params(host),
                                              view)
    # The same formulas; TensorFlow's own kernels agree to the bit, XLA's and torch's round
    # differently (measured: at most 1.2e-6). A pixel within that of 128/255 could solarize on
    # one side only, hence the share of pixels rather than all of them.
    close = np.abs(ops.convert_to_numpy(got) - expected) <= 1e-5
    assert close.mean() >= 1 - 1e-4, f"{(~close).sum()} pixels differ"
    if keras.backend.backend() == "tensorflow":
        np.testing.assert_array_equal(ops.convert_to_numpy(got), expected)


def test_the_layer_normalises_only_when_not_training_and_draws_anew_each_call():
    augmentation = transforms.get_augmentation("small", 16)
    crops = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    layer = PhotometricAugmentation(augmentation, seed=3)
    view_a, _ = layer((crops, crops), training=False)
    mean, std = np.array(augmentation.view_a.mean), np.array(augmentation.view_a.std)
    np.testing.assert_allclose(ops.convert_to_numpy(view_a), (crops / 255.0 - mean) / std,
                               atol=1e-5)
    first = ops.convert_to_numpy(layer((crops, crops), training=True)[0])
    second = ops.convert_to_numpy(layer((crops, crops), training=True)[0])
    assert not np.allclose(first, second)  # the seed generator moved on
    again = PhotometricAugmentation(augmentation, seed=3)
    np.testing.assert_array_equal(ops.convert_to_numpy(again((crops, crops), training=True)[0]),
                                  first)
    with pytest.raises(ValueError, match="pair of batches"):
        layer((crops,), training=True)
    with pytest.raises(ValueError, match="PhotometricAugmentation or None"):
        keras_vicreg.VICReg(keras.Sequential([keras.layers.Input((16, 16, 3)),
                                              keras.layers.Flatten()]), "8", photometric="host")


def test_the_layer_and_a_model_with_it_round_trip_through_their_configs():
    custom = dataclasses.replace(transforms.get_augmentation("imagenet", 16), name="custom")
    custom = dataclasses.replace(custom, view_b=dataclasses.replace(custom.view_b, hue=0.05))
    layer = PhotometricAugmentation(custom, seed=5)
    restored = PhotometricAugmentation.from_config(layer.get_config())
    assert restored.augmentation == custom and restored.seed == 5
    backbone = keras.Sequential([keras.layers.Input((16, 16, 3)), keras.layers.Flatten()])
    model = keras_vicreg.VICReg(backbone, "8", photometric=layer)
    clone = keras_vicreg.VICReg.from_config(model.get_config())
    assert clone.photometric.augmentation == custom


def _no_photometric(augmentation):
    """The preset with every photometric choice off: its views are its normalised crops."""
    off = dict(flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
               solarize_prob=0.0)
    return dataclasses.replace(
        augmentation,
        view_a=dataclasses.replace(augmentation.view_a, **off),
        view_b=dataclasses.replace(augmentation.view_b, **off),
    )


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "per_batch"])
def test_the_pipeline_yields_the_host_paths_crops_as_uint8(in_memory):
    augmentation = _no_photometric(transforms.get_augmentation("small", 16))
    images = np.random.default_rng(2).integers(0, 256, (16, 20, 24, 3), dtype=np.uint8)
    source = images if in_memory else tf.data.Dataset.from_tensor_slices(images)

    def first_batch(device):
        dataset = keras_vicreg.data.two_view_dataset(
            source, 8, augmentation=augmentation, seed=4, photometric_device=device
        )
        return [np.asarray(view) for view in next(iter(dataset))]

    crops, views = first_batch("accelerator"), first_batch("host")
    view = augmentation.view_a
    for crop, host in zip(crops, views):
        assert crop.dtype == np.uint8
        expected = np.round((host * np.array(view.std) + np.array(view.mean)) * 255.0)
        np.testing.assert_allclose(crop, np.clip(expected, 0, 255), atol=1.0)
        assert np.mean(crop == expected) > 0.99  # off by one only at a rounding tie
    with pytest.raises(ValueError, match="photometric_device"):
        keras_vicreg.data.two_view_dataset(images, 8, photometric_device="gpu")


def _tiny_config():
    config = load_config("tiny")
    config.photometric_device = "accelerator"
    config.num_examples = 96  # 3 steps
    config.epochs = 1
    config.summary_examples = 16
    # JAX without XLA compiles each op on its first call: one compiled step is about 30% faster.
    config.jit_compile = keras.backend.backend() == "jax"
    return recipe.pretraining.validate(config)


def test_the_tiny_config_trains_with_the_photometric_half_in_the_step(tmp_path):
    config = _tiny_config()
    keras.utils.set_random_seed(config.seed)
    data = recipe.Data(config, strategy=None)
    crops = next(iter(data.epoch(0)))
    assert [np.asarray(crop).dtype for crop in crops] == [np.uint8, np.uint8]
    model = recipe.compile_model(recipe.make_model(config, data.channels), config)
    assert isinstance(model.photometric, PhotometricAugmentation)
    before = ops.convert_to_numpy(model.photometric.seed_generator.state).copy()
    weights = [ops.convert_to_numpy(w).copy() for w in model.backbone.trainable_weights]
    history = model.fit(data.epoch(0).take(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = ops.convert_to_numpy(model.photometric.seed_generator.state)
    assert not np.array_equal(before, after)  # the step drew, and the state was carried
    assert any(not np.array_equal(ops.convert_to_numpy(w), old)
               for w, old in zip(model.backbone.trainable_weights, weights))
    # A checkpoint holds the seed generator's state; the backbone holds no augmentation.
    path = str(tmp_path / "ckpt.weights.h5")
    model.save_weights(path)
    resumed = recipe.compile_model(recipe.make_model(config, data.channels), config)
    resumed.load_weights(path)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(resumed.photometric.seed_generator.state), after)
    model.backbone.save(str(tmp_path / "backbone.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "backbone.keras"))
    assert not any(isinstance(layer, PhotometricAugmentation) for layer in loaded._flatten_layers())
    assert len(loaded.weights) == len(model.backbone.weights)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the whole recipe once; the step itself is tested on every backend")
def test_the_recipe_fits_resumes_and_exports_with_the_photometric_half_in_the_step(tmp_path):
    config = _tiny_config()
    keras.utils.set_random_seed(config.seed)
    data = recipe.Data(config, strategy=None)
    model = recipe.compile_model(recipe.make_model(config, data.channels), config)
    workdir = str(tmp_path)
    recipe.fit(model, config, workdir, data, recipe.restore_checkpoint(model, config, workdir))
    after = ops.convert_to_numpy(model.photometric.seed_generator.state)
    resumed = recipe.compile_model(recipe.make_model(config, data.channels), config)
    assert recipe.restore_checkpoint(resumed, config, workdir) == config.total_steps
    np.testing.assert_array_equal(ops.convert_to_numpy(resumed.photometric.seed_generator.state),
                                  after)
    paths = recipe.export(model, config, workdir, data)
    loaded = keras.saving.load_model(paths["backbone.keras"])
    assert not any(isinstance(layer, PhotometricAugmentation) for layer in loaded._flatten_layers())
    assert os.path.isfile(os.path.join(paths["saved_model"], "saved_model.pb"))
    assert os.path.isfile(checkpointing.checkpoint_path(os.path.join(workdir, "checkpoints"), 3))


def test_an_unknown_photometric_device_is_a_config_error_naming_the_choices():
    config = load_config("tiny")
    config.photometric_device = "gpu"
    with pytest.raises(ValueError, match=r"config.photometric_device must be .*'accelerator'"):
        recipe.pretraining.validate(config)


_REPLICA_DRAWS = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_vicreg.models.photometric import PhotometricAugmentation
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    replicated = PhotometricAugmentation("small", seed=3)
single = PhotometricAugmentation("small", seed=3)
step = tf.function(lambda: strategy.run(lambda: replicated.draw(4)[0].jitter_factors))
per_replica = [np.asarray(r).tolist() for r in strategy.experimental_local_results(step())]
whole = np.asarray(single.draw(8)[0].jitter_factors).tolist()
print(json.dumps({"replicas": per_replica, "whole": whole}))
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the subprocess is TensorFlow whatever the session's backend")
def test_replicas_of_a_tensorflow_strategy_take_their_own_rows_of_the_global_draw():
    # Every replica holds the same seed state: without their own rows, the images at the same
    # position in each replica's share would be augmented alike.
    environ = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _REPLICA_DRAWS], env=environ, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    draws = json.loads(run.stdout.strip().splitlines()[-1])
    replica_0, replica_1 = (np.array(r) for r in draws["replicas"])
    whole = np.array(draws["whole"])
    np.testing.assert_array_equal(replica_0, whole[:4])
    np.testing.assert_array_equal(replica_1, whole[4:])
    assert not np.array_equal(replica_0, replica_1)


def test_a_process_of_several_takes_its_rank_rows_of_the_global_draw(monkeypatch):
    from keras_vicreg.models import photometric

    whole = PhotometricAugmentation("small", seed=5).draw(8)[0].jitter_factors
    monkeypatch.setattr(photometric, "_replica_slot", lambda: (1, 2))
    rank_1 = PhotometricAugmentation("small", seed=5).draw(4)[0].jitter_factors
    np.testing.assert_array_equal(ops.convert_to_numpy(rank_1), ops.convert_to_numpy(whole)[4:])
