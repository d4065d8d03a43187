"""Released PyTorch ResNet weights, in torchvision's key layout, loaded into the keras-hub ResNet.

The VICReg release (facebookresearch/vicreg) publishes its backbones as PyTorch state dicts of a
torchvision ResNet ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
"layer1.0.downsample.0.weight", ...), either bare or, in training checkpoints, under a
"module.backbone." prefix. keras-hub's ResNet has the same "v1.5" layout (stride on the 3x3
convolution) and pads explicitly like PyTorch, so every tensor has a place and the features agree:

    conv1, bn1                      -> conv1_conv, conv1_bn   (stem="small": stem_conv, stem_bn)
    layer{L}.{B}.conv{K}, .bn{K}    -> stack{L-1}_block{B}_{K}_conv, stack{L-1}_block{B}_{K}_bn
    layer{L}.{B}.downsample.0 / .1  -> stack{L-1}_block{B}_0_conv / stack{L-1}_block{B}_0_bn

Convolution kernels go from PyTorch's (out, in, h, w) to Keras' (h, w, in, out); BatchNorm's
weight, bias, running_mean and running_var become gamma, beta, moving_mean and moving_variance.
The classifier ("fc.*") and "num_batches_tracked" counters are ignored. The wider and deeper
released backbones (ResNet-50 x2 and x4, ResNet-200 x2: the released code's torchvision ResNet with
`widen=2` or 4, whose zero padding layer has no weights) have the same keys with wider tensors or
more blocks: `width_multiplier` and `depth=200` build the Keras model they fit.

The other way, `torchvision_state_dict` and `save_torchvision_resnet` write such a Keras ResNet as
the state dict of a torchvision ResNet (the same table read backwards, kernels back to (out, in, h,
w), a zero `num_batches_tracked` beside every BatchNorm, no `fc`), so that tools written for
torchvision weights (detectron2's `convert-torchvision-to-d2.py`) take a backbone pretrained here.
"""

import collections
import os
import re

import keras
import numpy as np

from keras_vicreg.models.backbones.resnet_backbone import _DEPTH_BLOCKS
from keras_vicreg.models.backbones.resnet_backbone import resnet

# Tried in order: the first one that precedes "conv1.weight" in the state dict is the backbone's.
PREFIXES = ("module.backbone.", "backbone.", "module.", "")
_IGNORED = re.compile(r"^fc\.|\.num_batches_tracked$|^num_batches_tracked$")
_STACK_LAYER = re.compile(
    r"^stack(?P<stack>\d+)_block(?P<block>\d+)_(?P<index>\d+)_(?P<kind>conv|bn)$"
)
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")
_STEM = {"conv1_conv": "conv1", "conv1_bn": "bn1", "stem_conv": "conv1", "stem_bn": "bn1"}
_MAX_LISTED = 20
_TORCH_KEY = re.compile(r"^(?:layer(?P<layer>\d)\.(?P<block>\d+)\.)?(?P<module>[a-z0-9.]+)\."
                        r"(?P<param>[a-z_]+)$")
_MODULE_ORDER = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample.0", "downsample.1")
_PARAM_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_TORCH_BN_EPSILON = 1e-5


def load_torchvision_resnet(
    path_or_state_dict,
    depth=50,
    *,
    input_shape=(224, 224, 3),
    stem="imagenet",
    width_multiplier=1,
    name=None,
):
    """A keras-hub ResNet holding the weights of a torchvision-layout PyTorch state dict.

    Args:
        path_or_state_dict: a path to a file written by `torch.save` (read with
            `torch.load(..., weights_only=True)`, so torch must be installed), or a mapping from
            key to tensor or NumPy array. A checkpoint holding the state dict under "state_dict"
            or "model" works too. Keys may carry a "module.backbone.", "backbone." or "module."
            prefix; with a prefix, keys outside it (an expander, a classifier) are ignored.
        depth: 18, 34, 50, 101, 152 or 200. The released VICReg ResNet-50 is depth 50, its
            ResNet-200 x2 depth 200.
        input_shape: (height, width, channels) of the Keras model's input; height and width may
            be None.
        stem: "imagenet" (7x7 stride-2 convolution and max pooling, as released) or "small"
            (3x3 stride-1 convolution, no max pooling: torchvision ResNets whose `conv1` was
            replaced and `maxpool` made an identity, as in small-image libraries).
        width_multiplier: 2 or 4 for the released ResNet-50 x2 / x4 and ResNet-200 x2 (their
            `widen`); 1 otherwise.
        name: the Keras model's name.

    Returns:
        A `keras.Model` from images (normalised as in training, channels last) to pooled
        features, built by `keras_vicreg.backbones.resnet(depth, source="keras_hub", ...)`.

    Raises:
        ValueError: if keys are missing, unknown or mis-shaped (all of them are listed).

    Example:
        >>> backbone = load_torchvision_resnet("resnet50.pth", depth=50)
        >>> features = backbone.predict(normalised_images)  # (batch, 2048)
        >>> wide = load_torchvision_resnet("resnet50x2.pth", depth=50, width_multiplier=2)
    """
    state = _read_state_dict(path_or_state_dict)
    model = resnet(
        depth,
        source="keras_hub",
        stem=stem,
        input_shape=input_shape,
        zero_init_residual=False,
        width_multiplier=width_multiplier,
        name=name,
    )
    assign_torchvision_weights(model, state)
    return model


def assign_torchvision_weights(model, state_dict):
    """Copies a torchvision-layout ResNet state dict into a keras-hub ResNet built by `resnet`.

    Args:
        model: a model from `keras_vicreg.backbones.resnet(..., source="keras_hub")`.
        state_dict: a mapping from torchvision key (with or without one of `PREFIXES`) to tensor
            or array.

    Raises:
        ValueError: if keys are missing, unknown or mis-shaped (all of them are listed).
    """
    state = _strip_prefix(state_dict)
    targets = _torch_targets(model)
    missing = sorted(set(targets) - set(state))
    unknown = sorted(set(state) - set(targets))
    values, misshaped = {}, []
    for key in sorted(set(targets) & set(state)):
        variable, transform = targets[key]
        value = transform(_to_numpy(state[key]))
        if tuple(value.shape) != tuple(variable.shape):
            misshaped.append(
                f"{key}: {tuple(state[key].shape)}, expected {_torch_shape(variable.shape)}"
            )
        values[key] = value
    if missing or unknown or misshaped:
        raise ValueError(
            "The state dict does not match a torchvision ResNet of this depth, width and stem; "
            "check `depth`, `width_multiplier` and `stem` (released VICReg ResNet-50: depth=50, "
            "stem='imagenet'; ResNet-200 x2: depth=200, width_multiplier=2)."
            f"{_listing('missing keys', missing)}{_listing('unknown keys', unknown)}"
            f"{_listing('mis-shaped keys', misshaped)} Received: {len(state)} keys, "
            f"model={model.name!r}"
        )
    for key, (variable, _) in targets.items():
        variable.assign(values[key].astype(variable.dtype))


def _read_state_dict(path_or_state_dict):
    state = path_or_state_dict
    if not hasattr(state, "keys"):
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                "Reading a PyTorch checkpoint needs torch (`pip install torch`), or pass a dict "
                f"of NumPy arrays instead. Received: path_or_state_dict={state!r}"
            ) from error
        state = torch.load(state, map_location="cpu", weights_only=True)
    for nested in ("state_dict", "model"):
        if hasattr(state.get(nested), "keys"):
            state = state[nested]
    return state


def _strip_prefix(state_dict):
    """The backbone's keys without their prefix; other keys and ignored ones are dropped."""
    prefix = next((p for p in PREFIXES if f"{p}conv1.weight" in state_dict), "")
    return {
        key[len(prefix):]: value
        for key, value in state_dict.items()
        if key.startswith(prefix) and not _IGNORED.search(key[len(prefix):])
    }


def _torch_name(layer_name):
    """The torchvision module name of a keras-hub ResNet layer, or None for layers without one."""
    if layer_name in _STEM:
        return _STEM[layer_name]
    match = _STACK_LAYER.match(layer_name)
    if not match:
        return None
    block = f"layer{int(match['stack']) + 1}.{match['block']}"
    index, kind = int(match["index"]), match["kind"]
    if index == 0:
        return f"{block}.downsample.{0 if kind == 'conv' else 1}"
    return f"{block}.{kind}{index}"


def _torch_targets(model):
    """{torchvision key: (Keras variable, function from the PyTorch array to the Keras one)}."""
    targets = {}
    for layer in _leaf_layers(model):
        module = _torch_name(layer.name)
        if module is None:
            continue
        if isinstance(layer, keras.layers.Conv2D):
            targets[f"{module}.weight"] = (layer.kernel, _oihw_to_hwio)
        elif isinstance(layer, keras.layers.BatchNormalization):
            variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
            for key, variable in zip(_BN_KEYS, variables):
                targets[f"{module}.{key}"] = (variable, np.asarray)
    return targets


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _oihw_to_hwio(kernel):
    return np.transpose(kernel, (2, 3, 1, 0)) if kernel.ndim == 4 else kernel


def _torch_shape(keras_shape):
    if len(keras_shape) == 4:
        height, width, channels_in, channels_out = keras_shape
        return (channels_out, channels_in, height, width)
    return tuple(keras_shape)


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch.Tensor; float() also covers half and bfloat16
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _listing(title, items):
    if not items:
        return ""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f" {len(items)} {title}: {shown}{more}."


def describe_torchvision_resnet(model):
    """The torchvision ResNet that `model` (a keras-hub ResNet from `resnet`) is, or an error.

    Checks, before any export, that every convolution and BatchNormalization of `model` has a
    torchvision name (so no pre-activation, keras-cv or non-ResNet model), that the convolutions
    have no bias and the BatchNormalizations torchvision's epsilon (1e-5), and that the stage
    widths double from the stem's width as a torchvision ResNet's do: (64, 128, 256, 512) times
    its `widen`, or narrower ones for tests (which only `assign_torchvision_weights` into
    `resnet(depth, filters=...)` reads back; torchvision's own ResNets are 64 wide or wider).

    Returns:
        dict(depth=..., width_multiplier=..., stem="imagenet" | "small", filters=(...)): the
        arguments that read the export back (`load_torchvision_resnet` takes the first three;
        `width_multiplier` is None for widths that are not a multiple of 64).

    Raises:
        ValueError: saying what does not fit.
    """
    layers = [layer for layer in _leaf_layers(model)
              if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization))]
    unnamed = [layer.name for layer in layers if _torch_name(layer.name) is None]
    names = {_torch_name(layer.name): layer for layer in layers}
    if not layers or unnamed or "conv1" not in names:
        raise ValueError(
            "Only a post-activation keras-hub ResNet (`keras_vicreg.backbones.resnet(depth, "
            "source='keras_hub')`, the layout of the released VICReg models) has a torchvision "
            "layout; pre-activation, keras-cv, ViT and ConvNeXt backbones do not."
            f"{_listing('layers without a torchvision name', unnamed)} Received: "
            f"model={model.name!r}"
        )
    problems = [f"{layer.name} has a bias" for layer in layers
                if isinstance(layer, keras.layers.Conv2D) and layer.use_bias]
    problems += [f"{layer.name} has epsilon={layer.epsilon}" for layer in layers
                 if isinstance(layer, keras.layers.BatchNormalization)
                 and not np.isclose(layer.epsilon, _TORCH_BN_EPSILON)]
    blocks = collections.Counter(
        int(match["layer"]) for match in map(_TORCH_KEY.match, (f"{n}.w" for n in names))
        if match and match["layer"] and match["module"] == "conv1"
    )
    stages = tuple(blocks[index] for index in range(1, 5))
    bottleneck = any(name.endswith(".conv3") for name in names)
    depths = [depth for depth, counts in _DEPTH_BLOCKS.items()
              if counts == stages and (depth >= 50) == bottleneck]
    if not depths:
        problems.append(f"blocks per stage {stages} (bottleneck={bottleneck}) are no ResNet's")
    base = int(names["conv1"].filters)
    widths = [int(names[f"layer{i}.0.conv1"].filters) for i in range(1, 5) if blocks[i]]
    if widths != [base * 2**i for i in range(4)]:
        problems.append(
            f"stem width {base} and stage widths {widths} do not double from stage to stage "
            "from the stem's width, as torchvision's (64, 128, 256, 512) times `widen` do"
        )
    if problems:
        raise ValueError(
            "This ResNet has no torchvision equivalent: " + "; ".join(problems[:_MAX_LISTED])
            + f". Received: model={model.name!r}"
        )
    stem = "imagenet" if tuple(names["conv1"].kernel_size) == (7, 7) else "small"
    multiplier = base // 64 if base % 64 == 0 else None
    return dict(depth=depths[0], width_multiplier=multiplier, stem=stem,
                filters=tuple(widths))


def torchvision_state_dict(model):
    """The weights of a keras-hub ResNet as a torchvision ResNet's state dict (no `fc`).

    Args:
        model: a backbone from `keras_vicreg.backbones.resnet(..., source="keras_hub")`, with the
            ImageNet stem for detectron2 and other torchvision consumers (the "small" stem's 3x3
            `conv1` fits only a torchvision ResNet whose `conv1` was replaced the same way).

    Returns:
        A `collections.OrderedDict` from torchvision key to NumPy array, in torchvision's order:
        float32 kernels (out, in, h, w) and BatchNorm `weight`, `bias`, `running_mean`,
        `running_var`, and an int64 `num_batches_tracked` of 0 (torchvision keeps one per
        BatchNorm; nothing reads it in inference).

    Raises:
        ValueError: if `model` is not such a ResNet (`describe_torchvision_resnet`).
    """
    describe_torchvision_resnet(model)
    state = collections.OrderedDict()
    for key, (variable, _) in sorted(_torch_targets(model).items(), key=lambda i: _key_order(i[0])):
        value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        state[key] = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value
        if key.endswith(".running_var"):
            state[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return state


def save_torchvision_resnet(model, path):
    """Writes `torchvision_state_dict(model)` with `torch.save`, as torch tensors.

    Raises:
        ValueError: if `path`'s directory does not exist, or `model` is not such a ResNet; both
            are checked before anything is written.
        ImportError: without torch.

    Returns:
        `describe_torchvision_resnet(model)`: the arguments that read the file back.
    """
    check_export_path(path)
    layout = describe_torchvision_resnet(model)
    import torch

    tensors = collections.OrderedDict(
        (key, torch.from_numpy(np.ascontiguousarray(value)))
        for key, value in torchvision_state_dict(model).items()
    )
    torch.save(tensors, os.fspath(path))
    return layout


def check_export_path(path):
    """Checks that `path` can be written: its directory exists and it is not a directory."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or os.path.isdir(path):
        raise ValueError(
            "The output must be a file in an existing directory; create the directory first. "
            f"Received: path={path!r}"
        )


def _key_order(key):
    """torchvision's order: the stem, then each block's modules, each module's parameters."""
    match = _TORCH_KEY.match(key)
    layer = int(match["layer"] or 0)
    block = int(match["block"] or 0)
    return layer, block, _MODULE_ORDER.index(match["module"]), _PARAM_ORDER.index(match["param"])
