"""keras_vicreg.training.recipe and the pieces it builds from a config: the model, the resized
backbone, a diverging fit as a typed exception, and the exit statuses the binaries map it to."""

import os
import signal

import keras
import numpy as np
import pytest

from keras_vicreg.models.backbones.convnet import convnet
from keras_vicreg.models.backbones.resizing import at_image_size
from keras_vicreg.training import bad_images
from keras_vicreg.training import checkpointing
from keras_vicreg.training import exit_codes
from keras_vicreg.training import preemption
from keras_vicreg.training import recipe
from keras_vicreg.training import run_config
from keras_vicreg.training import workdir_lock
from tests.test_pretrain_config import load_config

pytestmark = pytest.mark.backend_neutral


def test_exit_statuses_tell_divergence_and_preemption_from_a_crash():
    assert (exit_codes.DONE, exit_codes.CRASH, exit_codes.INVALID_CONFIG, exit_codes.DIVERGED,
            exit_codes.PREEMPTED) == (0, 1, 2, 3, 75)
    cases = [
        (preemption.Preempted(5, signal.SIGTERM), exit_codes.PREEMPTED),
        (recipe.TrainingDiverged("diverged", step=3), exit_codes.DIVERGED),
        (workdir_lock.WorkdirLockedError("held"), exit_codes.INVALID_CONFIG),
        (checkpointing.ShortEpochError("short"), exit_codes.INVALID_CONFIG),
        (checkpointing.NoLoadableCheckpointError("none"), exit_codes.INVALID_CONFIG),
        (checkpointing.OptimizerStateSkippedError("skipped"), exit_codes.INVALID_CONFIG),
        (run_config.ConfigChangedError("changed"), exit_codes.INVALID_CONFIG),
        (bad_images.UndecodableImagesError("undecodable"), exit_codes.INVALID_CONFIG),
        (ValueError("bad"), exit_codes.INVALID_CONFIG),
        (KeyError("bug"), exit_codes.CRASH),
    ]
    for error, status in cases:
        assert exit_codes.status_of(error) == status, error
    assert all(isinstance(error, exit_codes.EXPECTED) for error, status in cases
               if status != exit_codes.CRASH)


def test_make_model_builds_the_configs_backbone_expander_and_optimizer():
    config = load_config("tiny")
    model = recipe.compile_model(recipe.make_model(config, channels=3), config)
    assert model.backbone.name == "convnet"
    assert model.backbone.input_shape == (None, config.image_size, config.image_size, 3)
    assert model.backbone.output_shape == (None, config.model.filters[1])
    assert model.optimizer.__class__.__name__ == "LARS"
    views = np.random.default_rng(0).normal(size=(4, config.image_size, config.image_size, 3))
    embeddings = model.expander(model.backbone(views.astype("float32"), training=False))
    assert tuple(embeddings.shape) == (4, 32)  # the "32-32" expander


def test_make_model_builds_a_vit_with_the_configs_pooling():
    config = load_config("tiny")
    config.model.backbone, config.model.vit_pooling = "vit_tiny", "mean"
    model = recipe.make_model(config, channels=1)
    assert model.backbone.name == "vit_tiny"
    assert model.backbone.input_shape == (None, config.image_size, config.image_size, 1)
    assert model.backbone.get_layer("pool").pooling == "mean"
    assert model.backbone.output_shape == (None, 32)


def test_at_image_size_shares_the_layers_and_matches_a_backbone_built_at_that_size():
    small = convnet((4, 6), (12, 12, 1))
    for weight in small.weights:  # moving statistics away from (0, 1): inference mode matters
        if "moving" in weight.path:
            weight.assign(np.full(weight.shape, 0.5, "float32"))
    large = at_image_size(small, 20)
    assert large.input_shape == (None, 20, 20, 1) and large.name == small.name
    assert all(a is b for a, b in zip(large.weights, small.weights))
    reference = convnet((4, 6), (20, 20, 1))
    reference.set_weights(small.get_weights())
    images = np.random.default_rng(1).uniform(size=(3, 20, 20, 1)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(large(images, training=False)),
                               keras.ops.convert_to_numpy(reference(images, training=False)),
                               rtol=1e-6, atol=1e-6)
    assert at_image_size(small, 12) is small
    with pytest.raises(ValueError, match="Received: image_size=0"):
        at_image_size(small, 0)


def test_a_diverging_fit_raises_training_diverged_naming_the_kept_checkpoint(tmp_path):
    config = load_config("tiny")
    config.epochs = 1
    config.optimizer.base_learning_rate = 1e30  # the second step breaks the weights
    config.checkpoint_every_steps = 1
    keras.utils.set_random_seed(config.seed)
    data = recipe.Data(config, strategy=None)
    model = recipe.compile_model(recipe.make_model(config, data.channels), config)
    workdir = str(tmp_path)
    with pytest.raises(recipe.TrainingDiverged) as error:
        recipe.fit(model, config, workdir, data, recipe.restore_checkpoint(model, config, workdir))
    newest = checkpointing.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    assert error.value.checkpoint == newest and newest[0] < error.value.step
    assert f"Training diverged at step {error.value.step}" in str(error.value)
    assert f"The newest checkpoint with finite values, step {newest[0]}" in str(error.value)


def test_with_the_weight_check_off_divergence_names_a_checkpoint_of_finite_values(tmp_path):
    config = load_config("tiny")
    config.epochs = 1
    config.optimizer.base_learning_rate = 1e30
    config.checkpoint_every_steps = 1
    config.nan_check_weights = False  # non-finite weights could reach the checkpoints
    keras.utils.set_random_seed(config.seed)
    data = recipe.Data(config, strategy=None)
    model = recipe.compile_model(recipe.make_model(config, data.channels), config)
    with pytest.raises(recipe.TrainingDiverged) as error:
        recipe.fit(model, config, str(tmp_path), data, 0)
    step, path = error.value.checkpoint
    assert checkpointing.holds_finite_values(path)
    assert f"step {step} ({path})" in str(error.value)
