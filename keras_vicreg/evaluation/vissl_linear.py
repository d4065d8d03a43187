"""VISSL's linear transfer recipe, behind the paper's Places205 (54.3) and iNat18 (47.0) numbers.

The VICReg paper reports its linear transfer numbers with VISSL's benchmark configs
(`benchmark/linear_image_classification/{places205,inaturalist18}/eval_resnet_8gpu_transfer_*`),
whose recipe differs from the released ImageNet linear evaluation (`keras_vicreg.evaluation.linear`)
in every part:

    features   res5's 7 x 7 map average-pooled 6 x 6 at stride 1 (2 x 2 x 2048 = 8192 values),
               not the global average (2048)
    head       BatchNorm over the 2048 channels (eps 1e-5, momentum 0.1 in PyTorch's sense), then
               Linear(8192, classes) initialised N(0, 0.01) with zero bias
    optimiser  SGD, Nesterov momentum 0.9, weight decay 5e-4 (not on BatchNorm: regularize_bn
               False), learning rate 0.01 at batch 256
    schedule   multistep: x 0.1 at epochs 4, 8, 12 of 14 (Places205), 24, 48, 72 of 84 (iNat18)
    images     RandomResizedCrop 224 + flip for training; resize 256, centre crop 224 to test

VISSL trains heads on five layers at once (conv1 to res5); only res5's is reported for ResNet-50
and only it is built here. For images too small to leave a 7 x 7 map (the `runlocal` configs),
the pooling window shrinks to the map's side. The head's BatchNorm keeps Keras' biased batch
variance in its moving average where PyTorch keeps the unbiased one, which changes only the
evaluation statistics, by a factor (n - 1) / n of the batch.
"""

import keras

from keras_vicreg.evaluation.linear import FrozenBackbone
from keras_vicreg.evaluation.linear import linear_head

HEADS = ("linear", "vissl")
RES5_POOL = 6  # VISSL's AvgPool2d((6, 6), stride 1) on res5
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9  # Keras' momentum: PyTorch's 0.1
RECIPES = {
    # dataset: (epochs, milestones in epochs), from VISSL's configs
    "places205": (14, (4, 8, 12)),
    "inaturalist18": (84, (24, 48, 72)),
}


def vissl_classifier(backbone, num_classes, *, input_shape=None, name="vissl_linear_classifier"):
    """The frozen backbone, VISSL's res5 pooling, BatchNorm and a linear layer: images to logits.

    Args:
        backbone: a Keras model from images to a feature map (batch, h, w, channels); frozen.
        num_classes: the number of classes.
        input_shape: the images' shape without the batch; defaults to the backbone's.
        name: the model's name.

    Raises:
        ValueError: if the backbone gives pooled features (batch, d) instead of a map.
    """
    input_shape = input_shape or tuple(backbone.input_shape[1:])
    inputs = keras.Input(shape=input_shape, name="images")
    feature_map = FrozenBackbone(backbone, global_pool=False, name="frozen_backbone")(inputs)
    if len(feature_map.shape) != 4:
        raise ValueError(
            "VISSL's head pools the backbone's last feature map; this backbone gives pooled "
            "features. Use head='linear', or a backbone without its own pooling. "
            f"Received: features of shape {tuple(feature_map.shape)}"
        )
    pool = min(RES5_POOL, feature_map.shape[1], feature_map.shape[2])
    x = keras.layers.AveragePooling2D(pool, strides=1, name="res5_pool")(feature_map)
    x = keras.layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, dtype="float32",
        name="head_batch_norm",
    )(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, linear_head(num_classes)(x), name=name)


def batch_norm_variables(model):
    """The trainable variables of `model`'s BatchNorm layers: VISSL does not decay them."""
    return [variable for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for variable in layer.trainable_variables]


def apply_recipe(config, dataset):
    """Sets VISSL's recipe for `dataset` ("places205", "inaturalist18") on an evaluation config."""
    epochs, milestones = RECIPES[dataset]
    config.head = "vissl"
    config.batch_size = 256
    config.epochs = epochs
    config.milestones = milestones
    config.learning_rate = 0.01
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 5e-4
    config.image_size = 224
    config.resize_ratio = 256 / 224
    return config


def check_recipe(config):
    """Refuses an empty dataset and head, milestones or Nesterov keys that cannot run, before any
    data is read."""
    if not config.dataset:
        raise ValueError(
            "`dataset` is empty: give a tfds name or a folder of <split>/<class>/<image> files "
            "(Places205 is not in tfds: --config.dataset=/path/to/places205)."
        )
    if config.head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}. Received: head={config.head!r}")
    milestones = tuple(config.milestones)
    if milestones and (any(int(m) != m or m < 1 for m in milestones)
                       or list(milestones) != sorted(set(milestones))
                       or milestones[-1] >= config.epochs):
        raise ValueError(
            "`milestones` must be increasing whole epochs from 1 to `epochs` - 1 (empty: cosine). "
            f"Received: milestones={milestones}, epochs={config.epochs}"
        )
    if config.nesterov and not config.momentum:
        raise ValueError("`nesterov=True` needs `momentum` > 0. "
                         f"Received: momentum={config.momentum}")
    if config.precompute_features and (config.head != "linear" or milestones):
        raise ValueError(
            "`precompute_features` trains the released head (head='linear', cosine) on centre "
            "crops; VISSL's recipe trains on augmented images. Set precompute_features=False. "
            f"Received: head={config.head!r}, milestones={milestones}"
        )
