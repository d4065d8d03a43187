"""Tests for the torchvision-layout export (keras_vicreg.models.backbones.torchvision, export side).

Three references that do not share the exporter's table: the import read back (a round trip), the
PyTorch ResNet of tests/test_torchvision_weights.py written with torchvision's module names (strict
keys, its own order, its own forward), and a float64 NumPy forward of the stem.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from keras_vicreg.data.synthetic import synthetic_images  # noqa: E402
from keras_vicreg.models.backbones import resnet  # noqa: E402
from keras_vicreg.models.backbones import torchvision as tv  # noqa: E402
from tests.test_torchvision_weights import _TorchResNet  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _layers(model):
    for layer in model.layers:
        yield from (_layers(layer) if isinstance(layer, keras.Model) else (layer,))


def _randomised_resnet(depth, stem="imagenet", filters=(64, 128, 256, 512), size=33):
    """A keras-hub ResNet with random BatchNorm parameters and statistics (none at 0 or 1)."""
    model = resnet(depth, stem=stem, filters=filters, input_shape=(size, size, 3),
                   zero_init_residual=False)
    rng = np.random.default_rng(0)
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            for variable, low, high in ((layer.gamma, 0.5, 1.5), (layer.beta, -0.2, 0.2),
                                        (layer.moving_mean, -0.2, 0.2),
                                        (layer.moving_variance, 0.5, 2.0)):
                variable.assign(rng.uniform(low, high, shape).astype("float32"))
    return model


def _images(size, count=2):
    images = synthetic_images(count, size, 3, seed=3).astype("float32") / 255.0
    return (images - 0.45) / 0.25


def _features(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


@pytest.mark.backend_neutral
def test_export_then_import_gives_the_same_features(tmp_path):
    model = _randomised_resnet(18, size=33)
    path = tmp_path / "resnet18.pth"
    layout = tv.save_torchvision_resnet(model, path)
    assert layout == dict(depth=18, width_multiplier=1, stem="imagenet",
                          filters=(64, 128, 256, 512))
    back = tv.load_torchvision_resnet(str(path), input_shape=(33, 33, 3),
                                      **{k: layout[k] for k in ("depth", "stem",
                                                                "width_multiplier")})
    images = _images(33)
    expected = _features(model, images)
    assert np.abs(expected).max() > 0.1  # not a comparison between zeros
    np.testing.assert_allclose(_features(back, images), expected, atol=1e-5, rtol=0)


@pytest.mark.backend_neutral
def test_bottleneck_small_stem_round_trip_through_assign():
    filters = (8, 16, 32, 64)
    model = _randomised_resnet(50, stem="small", filters=filters, size=16)
    state = tv.torchvision_state_dict(model)
    back = resnet(50, stem="small", filters=filters, input_shape=(16, 16, 3),
                  zero_init_residual=False)
    tv.assign_torchvision_weights(back, state)
    images = _images(16)
    np.testing.assert_allclose(_features(back, images), _features(model, images), atol=1e-5,
                               rtol=0)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("depth, stem, filters, size", [
    (18, "imagenet", (64, 128, 256, 512), 33),
    (50, "small", (8, 16, 32, 64), 16),
])
def test_export_loads_strictly_into_a_torch_resnet_with_the_same_features(depth, stem, filters,
                                                                         size):
    model = _randomised_resnet(depth, stem=stem, filters=filters, size=size)
    state = tv.torchvision_state_dict(model)
    torch_model = _TorchResNet(depth, small_stem=stem == "small", widths=filters).eval()
    expected_keys = [k for k in torch_model.state_dict() if not k.startswith("fc.")]
    assert list(state) == expected_keys  # torchvision's names, and its order
    result = torch_model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in state.items()}, strict=False
    )
    assert result.unexpected_keys == [] and result.missing_keys == ["fc.weight", "fc.bias"]
    images = _images(size)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(_features(model, images), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("depth, stem", [(18, "small"), (50, "imagenet")])
def test_layout_has_the_names_and_shapes_the_importer_expects(depth, stem):
    model = _randomised_resnet(depth, stem=stem, filters=(8, 16, 32, 64), size=16)
    state = tv.torchvision_state_dict(model)
    fresh = resnet(depth, stem=stem, filters=(8, 16, 32, 64), input_shape=(16, 16, 3))
    targets = tv._torch_targets(fresh)
    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert set(weights) == set(targets)
    for key, (variable, _) in targets.items():
        assert weights[key].shape == tv._torch_shape(variable.shape), key
        assert weights[key].dtype == np.float32
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert sorted(counters) == sorted(k[: -len("running_var")] + "num_batches_tracked"
                                      for k in targets if k.endswith("running_var"))
    assert all(state[k].dtype == np.int64 and state[k].shape == () for k in counters)
    assert not any(k.startswith("fc.") for k in state)


def _stem_float64(state, images, stride, padding):
    """conv1 + bn1 + relu in float64 NumPy, from the torchvision-layout arrays alone."""
    weight = state["conv1.weight"].astype(np.float64)  # (out, in, kh, kw)
    x = np.pad(images.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kernel = weight.shape[-1]
    rows = (x.shape[1] - kernel) // stride + 1
    cols = (x.shape[2] - kernel) // stride + 1
    out = np.zeros((x.shape[0], rows, cols, weight.shape[0]))
    for i in range(kernel):
        for j in range(kernel):
            window = x[:, i:i + stride * rows:stride, j:j + stride * cols:stride, :]
            out += window @ weight[:, :, i, j].T
    mean, var = state["bn1.running_mean"], state["bn1.running_var"]
    out = (out - mean) / np.sqrt(var.astype(np.float64) + 1e-5) * state["bn1.weight"]
    return np.maximum(out + state["bn1.bias"], 0.0)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("stem, filters", [("imagenet", (64, 128, 256, 512)),
                                           ("imagenet", (16, 32, 64, 128)),
                                           ("small", (8, 16, 32, 64))])
def test_exported_stem_matches_a_float64_numpy_forward(stem, filters):
    model = _randomised_resnet(18, stem=stem, filters=filters, size=33)
    state = tv.torchvision_state_dict(model)
    relu = "conv1_relu" if stem == "imagenet" else "stem_relu"
    owner = next(m for m in [model, *[x for x in model.layers if isinstance(x, keras.Model)]]
                 if relu in [layer.name for layer in m.layers])
    stem_model = keras.Model(owner.input, owner.get_layer(relu).output)
    images = _images(33)
    expected = _stem_float64(state, images, *((2, 3) if stem == "imagenet" else (1, 1)))
    got = keras.ops.convert_to_numpy(stem_model(images, training=False))
    assert got.shape == expected.shape and expected.max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.backend_neutral
def test_models_without_a_torchvision_layout_are_refused():
    preactivation = resnet(18, preactivation=True, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="pre-activation.*stack0_block0_pre_activation_bn"):
        tv.torchvision_state_dict(preactivation)
    uneven = resnet(18, stem="small", filters=(8, 8, 16, 16), input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"do not double.*Received: model="):
        tv.torchvision_state_dict(uneven)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Only a post-activation keras-hub ResNet"):
        tv.torchvision_state_dict(dense)


@pytest.mark.backend_neutral
def test_missing_output_directory_is_refused_before_writing(tmp_path):
    model = resnet(18, stem="small", filters=(8, 16, 32, 64), input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="existing directory"):
        tv.save_torchvision_resnet(model, tmp_path / "missing" / "out.pth")
    with pytest.raises(ValueError, match="existing directory"):
        tv.save_torchvision_resnet(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="one backend is enough for the binary; the library is backend_neutral")
def test_binary_writes_the_state_dict_and_refuses_bad_paths(tmp_path):
    model = _randomised_resnet(18, stem="small", filters=(8, 16, 32, 64), size=16)
    model.save(tmp_path / "backbone.keras")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")

    run = subprocess.run(
        [sys.executable, "-m", "trainers.export_torchvision",
         f"--backbone={tmp_path / 'backbone.keras'}", f"--output={tmp_path / 'out.pth'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written = torch.load(tmp_path / "out.pth", weights_only=True)
    for key, value in tv.torchvision_state_dict(model).items():
        np.testing.assert_array_equal(written[key].numpy(), value)
    # The refusals, in this process (a subprocess each would spend its time importing).
    from absl import app
    from absl import flags

    from trainers import export_torchvision

    try:
        for backbone, output, message in (
            (tmp_path / "nothing.keras", tmp_path / "x.pth", "existing .keras file"),
            (tmp_path / "backbone.keras", tmp_path / "no" / "x.pth", "existing directory"),
        ):
            flags.FLAGS(["export_torchvision", f"--backbone={backbone}", f"--output={output}"])
            with pytest.raises((app.UsageError, ValueError), match=message):
                export_torchvision.main(["export_torchvision"])
    finally:
        flags.FLAGS.unparse_flags()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.keras", "out.pth"]
