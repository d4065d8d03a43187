"""A pretrained backbone as a TensorFlow SavedModel with its preprocessing, to serve and transfer.

The SavedModel has two signatures:

- `serve`: raw uint8 images (batch, height, width, 3) of any size. Inside the graph they are resized
  so that the shorter side is `image_size * resize_ratio`, centre-cropped to `image_size`, scaled to
  [0, 1] and normalised (`keras_vicreg.data.centre_crop_preprocess`), then embedded.
- `serve_features`: already preprocessed float32 images (batch, image_size, image_size, channels).

Both return the pooled features (batch, feature_width). `serving_default` is `serve_features`.
A JSON file beside the graph (`<path>/keras_vicreg_export.json`) records the backbone's name, the
input size `serve` reads (`image_size`) and the size it was pretrained at
(`pretraining_image_size`), the normalisation, the feature width and the training config.

A backbone built on a fixed image size is exported at `image_size` all the same: its convolutions
and global pooling take any size, so the export reads images at the size its evaluation chose (the
demo: 44 pixels for a backbone pretrained on 28, FixRes), with the same weights.

Export works from the TensorFlow and JAX backends (JAX through `jax2tf`, as `keras.export` does).
From PyTorch, Keras needs `torch_xla`; without it, save a `.keras` file and export it from
TensorFlow or JAX, since `.keras` files are backend-neutral.
"""

import importlib.util
import json
import os

import keras
from tensorflow.io import gfile

from keras_vicreg.data import transforms
from keras_vicreg.models.backbones import resizing
from keras_vicreg.models.pooling import pooled_features

METADATA_FILE = "keras_vicreg_export.json"


def export_backbone(
    backbone,
    path,
    *,
    image_size=None,
    mean=transforms.IMAGENET_MEAN,
    std=transforms.IMAGENET_STD,
    resize_ratio=256.0 / 224.0,
    pretraining_image_size=None,
    config=None,
):
    """Writes a backbone as a SavedModel with `serve` and `serve_features` signatures.

    Args:
        backbone: a `keras.Model` from images to pooled features (e.g. `VICReg.backbone` or a model
            from `keras_vicreg.backbones.resnet`); a `VICReg` model exports its backbone, and a
            backbone that returns a feature map is globally average-pooled.
        path: the SavedModel directory to write.
        image_size: the side of the square images `serve` and `serve_features` read; defaults to
            the backbone's input height when it is fixed. A backbone fixed to another size is
            exported at this one, its layers shared (`backbones.resizing.at_image_size`).
        mean, std: the per-channel normalisation the backbone was trained with (of [0, 1] images).
        resize_ratio: the `serve` preprocessing resizes the shorter side to
            `image_size * resize_ratio` (256 for 224) before the centre crop.
        pretraining_image_size: the size the backbone was pretrained at, for the JSON; defaults to
            its fixed input height, else `image_size`.
        config: the training config (a dict or `ml_collections.ConfigDict`), stored in the JSON.

    Returns:
        The metadata dict written to `<path>/keras_vicreg_export.json`.

    Example:
        >>> export_backbone(model.backbone, "/tmp/vicreg_resnet50", image_size=224)
        >>> loaded = tf.saved_model.load("/tmp/vicreg_resnet50")
        >>> features = loaded.serve(tf.zeros([1, 375, 500, 3], tf.uint8))  # (1, 2048)
    """
    import tensorflow as tf

    from keras_vicreg.data.labelled import centre_crop_preprocess

    _check_backend()
    backbone = pooled_features(backbone)
    height, width, channels = backbone.input_shape[1:]
    image_size = height if image_size is None else image_size
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(
            "`image_size` must be a positive number of pixels, and is needed for a backbone of "
            f"variable input size. Received: image_size={image_size!r}, backbone input shape "
            f"{backbone.input_shape}"
        )
    pretraining_image_size = pretraining_image_size or height or image_size
    backbone = resizing.at_image_size(backbone, image_size)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"`mean` and `std` need one value per input channel ({channels}). "
            f"Received: mean={mean}, std={std}"
        )

    archive = keras.export.ExportArchive()
    features_spec = keras.InputSpec(dtype="float32", shape=(None, image_size, image_size, channels))
    serve_features = archive.track_and_add_endpoint(
        "serve_features", backbone, input_signature=[features_spec]
    )

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, channels), tf.uint8)])
    def serve(images):
        images = centre_crop_preprocess(images, image_size, 1.0 / resize_ratio, mean, std)
        return serve_features(tf.ensure_shape(images, (None, image_size, image_size, channels)))

    serve.get_concrete_function()
    archive.add_endpoint("serve", serve)
    archive.write_out(path, verbose=False)

    metadata = {
        "backbone": backbone.name,
        "image_size": int(image_size),
        "pretraining_image_size": int(pretraining_image_size),
        "channels": int(channels),
        "resize_ratio": float(resize_ratio),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "feature_width": int(backbone.output_shape[-1]),
        "signatures": {
            "serve": "uint8 images (batch, height, width, channels) of any size",
            "serve_features": "normalised float32 images (batch, image_size, image_size, channels)",
        },
        "exported_from_backend": keras.backend.backend(),
        "config": _plain(config),
    }
    # tf.io.gfile, so that gs:// and other remote paths (TPU workdirs) work as local ones do.
    with gfile.GFile(os.path.join(path, METADATA_FILE), "w") as file:
        file.write(json.dumps(metadata, indent=2, default=str))
    return metadata


def load_metadata(path):
    """The metadata dict that `export_backbone` wrote beside the SavedModel at `path`."""
    metadata_path = os.path.join(path, METADATA_FILE)
    if not gfile.exists(metadata_path):
        raise ValueError(
            f"No {METADATA_FILE} in the directory: export it with "
            f"keras_vicreg.export.export_backbone. Received: path={path!r}"
        )
    with gfile.GFile(metadata_path) as file:
        return json.loads(file.read())


def is_exported(path):
    """Whether `path` is a SavedModel directory written by `export_backbone`."""
    return os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isfile(
        os.path.join(path, METADATA_FILE)
    )


def _check_backend():
    backend = keras.backend.backend()
    if backend == "torch" and importlib.util.find_spec("torch_xla") is None:
        raise ValueError(
            "SavedModel export from the torch backend needs torch_xla, which is not installed. "
            "Save the model with `model.save('model.keras')` and export it with "
            "KERAS_BACKEND=tensorflow or jax: .keras files load on every backend. "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    if backend not in ("tensorflow", "jax", "torch"):
        raise ValueError(
            "SavedModel export needs the tensorflow or jax backend. "
            f"Received: KERAS_BACKEND={backend!r}"
        )


def _plain(config):
    """A JSON-friendly copy of a config (ConfigDict, dict or None)."""
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps(dict(config), default=str))
