"""Tests for keras_vicreg.models.backbones.torchvision: PyTorch ResNets in torchvision's layout, in Keras.

The PyTorch ResNet below is written here with torchvision's module names (torchvision itself is not
a dependency), so that its state dict has exactly the keys of the released VICReg backbones.
"""

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import keras_vicreg  # noqa: E402
from keras_vicreg.models.backbones.torchvision import load_torchvision_resnet  # noqa: E402

_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 200: (3, 24, 36, 3)}
_WIDTHS = (64, 128, 256, 512)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (self.downsample(x) if self.downsample else x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride here: "v1.5"
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (self.downsample(x) if self.downsample else x))


def _downsample(inplanes, outplanes, stride):
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
    )


class _TorchResNet(nn.Module):
    """torchvision.models.resnet.ResNet without `fc`, returning the pooled features."""

    def __init__(self, depth, small_stem=False, widths=_WIDTHS):
        super().__init__()
        block = _BasicBlock if depth < 50 else _Bottleneck
        if small_stem:
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        inplanes = widths[0]
        for index, (planes, blocks) in enumerate(zip(widths, _BLOCKS[depth])):
            layers = []
            for i in range(blocks):
                stride = 2 if index > 0 and i == 0 else 1
                layers.append(block(inplanes, planes, stride))
                inplanes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
        self.fc = nn.Linear(inplanes, 10)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return x.mean(dim=(2, 3))


def _randomised_torch_resnet(depth, small_stem=False, widths=_WIDTHS):
    """An eval-mode torch ResNet with random convolutions and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = _TorchResNet(depth, small_stem, widths)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(channels)
    return model.eval()


def _features_both_ways(depth, image_size, small_stem=False, prefix=""):
    torch_model = _randomised_torch_resnet(depth, small_stem)
    state = {prefix + key: value for key, value in torch_model.state_dict().items()}
    keras_model = load_torchvision_resnet(
        state, depth=depth, input_shape=(image_size, image_size, 3),
        stem="small" if small_stem else "imagenet",
    )
    images = np.random.default_rng(1).normal(size=(2, image_size, image_size, 3))
    images = images.astype("float32")
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got = keras.ops.convert_to_numpy(keras_model(images, training=False))
    return got, expected


@pytest.mark.backend_neutral
@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_gives_the_torch_features(depth):
    # 33 pixels: odd sizes at every stride-2 layer, where "same" padding would shift the grid.
    got, expected = _features_both_ways(depth, image_size=33)
    assert np.abs(expected).max() > 0.1  # the comparison is not between zeros
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.backend_neutral
def test_small_stem_resnet_with_identity_maxpool_loads():
    got, expected = _features_both_ways(18, image_size=16, small_stem=True)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("prefix", ["module.backbone.", "backbone.", "module."])
def test_checkpoint_prefixes_are_stripped(prefix):
    got, expected = _features_both_ways(18, image_size=16, prefix=prefix)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.backend_neutral
def test_training_checkpoint_ignores_the_expander_and_reads_from_file(tmp_path):
    torch_model = _randomised_torch_resnet(18)
    state = {f"module.backbone.{k}": v for k, v in torch_model.state_dict().items()}
    state["module.projector.0.weight"] = torch.zeros(8, 512)
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "model": state}, path)
    keras_model = keras_vicreg.backbones.load_torchvision_resnet(
        str(path), depth=18, input_shape=(16, 16, 3)
    )
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    got = keras.ops.convert_to_numpy(keras_model(images, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.backend_neutral
def test_numpy_state_dict_loads_without_torch_tensors():
    state = {k: v.numpy() for k, v in _randomised_torch_resnet(18).state_dict().items()}
    keras_model = load_torchvision_resnet(state, depth=18, input_shape=(16, 16, 3))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras_model.get_layer(index=1).get_layer("conv1_conv").kernel),
        state["conv1.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.backend_neutral
def test_missing_unknown_and_misshaped_keys_are_listed():
    state = dict(_randomised_torch_resnet(18).state_dict())
    del state["layer2.0.downsample.1.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    state["layer1.1.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError) as error:
        load_torchvision_resnet(state, depth=18, input_shape=(16, 16, 3))
    message = str(error.value)
    assert "1 missing keys: layer2.0.downsample.1.running_var" in message
    assert "1 unknown keys: layer5.0.conv1.weight" in message
    assert "layer1.1.conv2.weight: (64, 64, 1, 1), expected (64, 64, 3, 3)" in message
    assert "Received:" in message


@pytest.mark.backend_neutral
def test_wrong_depth_is_an_error_naming_the_missing_blocks():
    state = _randomised_torch_resnet(18).state_dict()
    with pytest.raises(ValueError, match="missing keys: .*layer1.0.conv3.weight"):
        load_torchvision_resnet(state, depth=50, input_shape=(16, 16, 3))


def _torch_and_keras_features(torch_model, keras_model, image_size):
    images = np.random.default_rng(1).normal(size=(2, image_size, image_size, 3)).astype("float32")
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    return keras.ops.convert_to_numpy(keras_model(images, training=False)), expected


@pytest.mark.backend_neutral
def test_released_resnet50x2_state_dict_loads_with_its_parameter_count_and_features():
    # The released code's resnet50x2: torchvision's ResNet-50 with every width doubled (`widen`).
    torch_model = _randomised_torch_resnet(50, widths=tuple(2 * w for w in _WIDTHS))
    state = {k: v for k, v in torch_model.state_dict().items() if not k.startswith("fc.")}
    trainable = sum(v.numel() for k, v in state.items() if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))
    keras_model = load_torchvision_resnet(state, depth=50, width_multiplier=2,
                                          input_shape=(33, 33, 3))
    keras_trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert keras_trainable == trainable == 93_907_072  # "94M" (98M with a 1000-class fc)
    assert keras_model.output_shape == (None, 4096)
    got, expected = _torch_and_keras_features(torch_model, keras_model, 33)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_resnet200_with_a_width_multiplier_loads_a_torchvision_state_dict():
    # TensorFlow only: 200 layers take seconds to build, and the names do not depend on the backend.
    # ResNet-200 x2's layout (3, 24, 36, 3 blocks, doubled widths) at a sixteenth of the widths.
    base = (4, 8, 16, 32)
    torch_model = _randomised_torch_resnet(200, widths=tuple(2 * w for w in base))
    keras_model = keras_vicreg.backbones.resnet(
        200, filters=base, width_multiplier=2, input_shape=(33, 33, 3), zero_init_residual=False
    )
    keras_vicreg.backbones.assign_torchvision_weights(keras_model, torch_model.state_dict())
    got, expected = _torch_and_keras_features(torch_model, keras_model, 33)
    assert got.shape == (2, 4 * 64)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
