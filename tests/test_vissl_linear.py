"""VISSL's linear transfer recipe (Places205, iNat18): optimiser and schedule against PyTorch's own,
the head's pooling against NumPy, the configs' values, their refusals and a run end to end."""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from keras_vicreg.evaluation import runs
from keras_vicreg.evaluation import vissl_linear
from keras_vicreg.evaluation.sgd import GroupSGD
from keras_vicreg.evaluation.sgd import multistep_schedule

pytestmark = pytest.mark.backend_neutral
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _config(name, arg=None):
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_nesterov_sgd_without_decay_on_batch_norm_equals_torch_sgd():
    rng = np.random.default_rng(0)
    kernel0, gamma0 = rng.normal(size=(4, 3)), rng.normal(size=(3,))
    gradients = [(rng.normal(size=(4, 3)), rng.normal(size=(3,))) for _ in range(4)]
    rates = [0.1, 0.1, 0.01, 0.01]

    kernel = keras.Variable(kernel0.astype("float32"), name="kernel")
    gamma = keras.Variable(gamma0.astype("float32"), name="gamma")
    schedule = multistep_schedule(0.1, milestones=(1,), steps_per_epoch=2)
    optimizer = GroupSGD(schedule, momentum=0.9, weight_decay=5e-4, nesterov=True)
    optimizer.exclude_from_weight_decay(var_list=[gamma])
    for kernel_gradient, gamma_gradient in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(kernel_gradient, "float32"),
                         keras.ops.convert_to_tensor(gamma_gradient, "float32")],
                        [kernel, gamma])

    reference = [torch.tensor(kernel0, requires_grad=True), torch.tensor(gamma0,
                                                                         requires_grad=True)]
    torch_sgd = torch.optim.SGD([{"params": [reference[0]], "weight_decay": 5e-4},
                                 {"params": [reference[1]], "weight_decay": 0.0}],
                                lr=0.1, momentum=0.9, nesterov=True)
    for (kernel_gradient, gamma_gradient), rate in zip(gradients, rates):
        for group in torch_sgd.param_groups:
            group["lr"] = rate
        reference[0].grad = torch.tensor(kernel_gradient)
        reference[1].grad = torch.tensor(gamma_gradient)
        torch_sgd.step()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel),
                               reference[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gamma),
                               reference[1].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_multistep_schedule_equals_torch_multistep_lr_stepped_per_epoch():
    steps_per_epoch, milestones, epochs = 3, (2, 4), 6
    schedule = multistep_schedule(0.01, milestones, steps_per_epoch)
    parameter = torch.zeros(1, requires_grad=True)
    torch_sgd = torch.optim.SGD([parameter], lr=0.01)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(torch_sgd, list(milestones), gamma=0.1)
    for epoch in range(epochs):
        expected = torch_sgd.param_groups[0]["lr"]
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            rate = float(keras.ops.convert_to_numpy(schedule(step)))
            assert rate == pytest.approx(expected, rel=1e-6), (epoch, step)
        torch_sgd.step()
        scheduler.step()


def _feature_map_backbone(side, channels=8):
    inputs = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(name="backbone_bn")(x)
    return keras.Model(inputs, x, name="tiny_map")


@pytest.mark.parametrize("side, pool", [(7, 6), (3, 3)])
def test_the_head_pools_res5_as_vissl_and_normalises_before_the_linear_layer(side, pool):
    backbone = _feature_map_backbone(side)
    model = vissl_linear.vissl_classifier(backbone, num_classes=5)
    images = np.random.default_rng(1).normal(size=(4, side, side, 3)).astype("float32")
    feature_map = keras.ops.convert_to_numpy(backbone(images, training=False)).astype("float64")
    out = side - pool + 1
    pooled = np.zeros((4, out, out, 8))
    for i in range(out):
        for j in range(out):
            pooled[:, i, j] = feature_map[:, i:i + pool, j:j + pool].mean(axis=(1, 2))
    batch_norm = model.get_layer("head_batch_norm")
    gamma, beta, mean, variance = (keras.ops.convert_to_numpy(w).astype("float64")
                                   for w in batch_norm.weights)
    normalised = (pooled - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    kernel, bias = (keras.ops.convert_to_numpy(w).astype("float64")
                    for w in model.get_layer("linear_head").weights)
    assert kernel.shape == (out * out * 8, 5)
    expected = normalised.reshape(4, -1) @ kernel + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images, training=False)),
                               expected, rtol=1e-4, atol=1e-5)
    trainable = {v.path for v in model.trainable_variables}
    assert trainable == {v.path for v in batch_norm.trainable_variables
                         + model.get_layer("linear_head").trainable_variables}
    assert len(vissl_linear.batch_norm_variables(model)) == 2


def test_a_backbone_without_a_feature_map_is_refused():
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="head='linear'"):
        vissl_linear.vissl_classifier(keras.Model(inputs, pooled), num_classes=3)


@pytest.mark.parametrize("name, epochs, milestones", [
    ("linear_eval_places205", 14, (4, 8, 12)),
    ("linear_eval_inaturalist18", 84, (24, 48, 72)),
])
def test_the_configs_hold_vissls_recipe(name, epochs, milestones):
    config = _config(name)
    assert (config.head, config.epochs, tuple(config.milestones)) == ("vissl", epochs, milestones)
    assert (config.learning_rate, config.batch_size, config.momentum, config.nesterov,
            config.weight_decay, config.image_size) == (0.01, 256, 0.9, True, 5e-4, 224)
    assert config.resize_ratio == pytest.approx(256 / 224)
    assert not config.precompute_features


@pytest.mark.parametrize("change, message", [
    (dict(head="mlp"), "`head` must be one of"),
    (dict(milestones=(3, 2)), "`milestones` must be increasing"),
    (dict(milestones=(84,)), "`milestones` must be increasing"),
    (dict(milestones=(1.5,)), "`milestones` must be increasing"),
    (dict(momentum=0.0), "`nesterov=True` needs `momentum`"),
    (dict(precompute_features=True), "Set precompute_features=False"),
    (dict(dataset=""), "Places205 is not in tfds"),
])
def test_a_recipe_that_cannot_run_is_refused_before_any_data(tmp_path, change, message):
    config = _config("linear_eval_inaturalist18")
    config.dataset = str(tmp_path / "no_such_folder") if "dataset" not in change else ""
    config.update(change)
    with pytest.raises(ValueError, match=message):
        runs.run_linear_eval(config, backbone_path=str(tmp_path / "missing.keras"),
                             workdir=str(tmp_path / "w"))


def test_runlocal_trains_vissls_head_on_a_folder_and_writes_results(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index, colour in enumerate(("red", "green", "blue")):
            (tmp_path / "images" / split / colour).mkdir(parents=True)
            for i in range(8):
                image = rng.integers(0, 100, (20, 24, 3)).astype(np.uint8)
                image[..., index] += 120
                tf.io.write_file(str(tmp_path / "images" / split / colour / f"{i}.png"),
                                 tf.io.encode_png(image))
    config = _config("linear_eval_places205", "runlocal")
    config.dataset = str(tmp_path / "images")
    _feature_map_backbone(config.image_size).save(tmp_path / "backbone.keras")
    record = runs.run_linear_eval(config, backbone_path=str(tmp_path / "backbone.keras"),
                                  workdir=str(tmp_path / "w"))
    assert record["num_classes"] == 3 and 0 <= record["results"]["top1"] <= 100
    written = json.loads((tmp_path / "w" / "results.json").read_text())
    assert written["config"]["head"] == "vissl" and written["config"]["milestones"] == [1]
