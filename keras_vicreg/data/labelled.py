"""The one labelled-image pipeline: `(image, label)` batches for every evaluation and the export.

Linear evaluation, fine-tuning, kNN, the demo and the exported SavedModel's `serve` signature all
read images through here, so that a backbone sees the same pixels in each. The transforms are the
released linear evaluation's (facebookresearch/vicreg `evaluate.py`, torchvision on PIL images):

- training (`train=True`): random resized crop (the view's crop scale and ratio), bilinear resize,
  horizontal flip, normalisation;
- evaluation: resize the shorter side to size / crop_fraction (256 for 224) and centre-crop
  size x size, done as one crop of the central window then one resize
  (`centre_crop_preprocess`, which the export's `serve` runs in its graph).

Every resize is bilinear and antialiased, as PIL's. Sources: tfds names (any image classification
dataset, multi-label ones too, see `labels.LabelSpec`), folders, `tf.data.Dataset`s, and pairs
`(images, labels)` of arrays in memory, whose evaluation batches are each cropped and resized at
once (`batching.choose_route`).
"""

import dataclasses
import math

import tensorflow as tf

from keras_vicreg.data import batching
from keras_vicreg.data import decode
from keras_vicreg.data import labels as labels_lib
from keras_vicreg.data import sources
from keras_vicreg.data import transforms

DEFAULT_CROP_FRACTION = 224.0 / 256.0


def _evaluation_view(view, train):
    """A view as the labelled pipeline applies it: crop, flip when training, no colour changes.

    Resizes are bilinear and antialiased, as torchvision's `Resize` and `RandomResizedCrop` on the
    PIL images of the released linear evaluation.
    """
    return dataclasses.replace(
        view,
        interpolation="bilinear",
        antialias=True,
        flip_prob=0.5 if train else 0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
    )


def labelled_view(image_size, mean=transforms.IMAGENET_MEAN, std=transforms.IMAGENET_STD, *,
                  crop_scale=(0.08, 1.0), crop_ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """The `ViewAugmentation` of labelled images of a size and normalisation (`labelled_dataset`).

    Args:
        image_size: the side of the square images.
        mean, std: the per-channel normalisation (1 or 3 values, so the number of channels).
        crop_scale, crop_ratio: the training crop's ranges (the released evaluation's by default).
    """
    view = transforms.ViewAugmentation(
        image_size=image_size, crop_scale=tuple(crop_scale), crop_ratio=tuple(crop_ratio),
        brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale_prob=0.0,
        mean=tuple(mean), std=tuple(std),
    )
    return _evaluation_view(view, train=True)


def _check_crop_fraction(crop_fraction):
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            "`crop_fraction` is the centre crop's side over the shorter side (224 / 256), in "
            f"(0, 1]. Received: crop_fraction={crop_fraction}"
        )


def _centre_crops(images, view, crop_fraction):
    """The resized centre crops of decoded images, one (height, width, c) or a batch of one size."""
    window = transforms.centre_crop_window(tf.shape(images)[-3:], crop_fraction)
    crops = images[..., window[0] : window[0] + window[2], window[1] : window[1] + window[3], :]
    return transforms.resize_crop(crops, view)


def _finish_evaluation(resized, view):
    """Normalises a batch of resized evaluation crops (their view draws nothing)."""
    params = transforms.fixed_view_params(view, tf.shape(resized)[0])
    return transforms.apply_view_params_batch(resized, params, view)


def centre_crop_preprocess(images, image_size, crop_fraction=DEFAULT_CROP_FRACTION,
                           mean=transforms.IMAGENET_MEAN, std=transforms.IMAGENET_STD):
    """The evaluation view of decoded images: the centre crop of `labelled_dataset(train=False)`.

    Crops the central square of side `crop_fraction` of the shorter side, resizes it to
    `image_size` (bilinear, antialiased), scales to [0, 1] and normalises: "resize the shorter side
    to image_size / crop_fraction, centre-crop image_size" with one resampling. The same numbers as
    `labelled_dataset`'s evaluation batches of the same images; the export's `serve` runs it.

    Args:
        images: uint8 (0..255) or float (0..1) tensor, one image (height, width, channels) or a
            batch (batch, height, width, channels) of one size; channels are converted to
            `len(mean)` (1 tiled to 3, RGBA's alpha dropped).
        image_size: the side of the square output.
        crop_fraction: the crop's side over the shorter side (224 / 256; `1 / resize_ratio`).
        mean, std: per-channel normalisation of the [0, 1] image.

    Returns:
        float32 tensor (..., image_size, image_size, len(mean)).
    """
    _check_crop_fraction(crop_fraction)
    view = _evaluation_view(labelled_view(image_size, mean, std), train=False)
    images = tf.convert_to_tensor(images)
    if len(images.shape) == 3:
        return _finish_evaluation(_centre_crops(images, view, crop_fraction)[None], view)[0]
    return _finish_evaluation(_centre_crops(images, view, crop_fraction), view)


def _labelled_image(image, seed, view, train, crop_fraction):
    """The per-image half of `labelled_dataset`: the resized crop, and its `ViewParams` if `train`.
    """
    if not train:
        if image.dtype != tf.string:
            return _centre_crops(image, view, crop_fraction)
        crop = decode.decode_and_crop(
            image, lambda shape: transforms.centre_crop_window(shape, crop_fraction), view.channels
        )
        return transforms.resize_crop(crop, view)
    crop_seed, params_seed = transforms.split_view_seed(seed)

    def window_fn(shape):
        return transforms.sample_crop_window(shape, crop_seed, view.crop_scale, view.crop_ratio)

    if image.dtype == tf.string:
        crop = decode.decode_and_crop(image, window_fn, view.channels)
    else:
        crop = transforms.crop_to_window(image, window_fn(tf.shape(image)))
    return transforms.resize_crop(crop, view), transforms.sample_view_params(params_seed, view)


def labelled_dataset(
    source,
    batch_size,
    *,
    train=False,
    augmentation=None,
    split=None,
    crop_fraction=DEFAULT_CROP_FRACTION,
    percent=None,
    seed=None,
    shuffle_buffer=None,
    input_context=None,
    drop_remainder=None,
    image_key="image",
    label_key=None,
    label_spec=None,
    data_dir=None,
    manual_dir=None,
    download=True,
):
    """Batches of `(image, label)` for linear evaluation, fine-tuning, kNN and the demo.

    Training (`train=True`): random resized crop, bilinear resize, horizontal flip, normalisation.
    Evaluation: `centre_crop_preprocess`: the same fraction of the image at every size (37 -> 32
    for 32-pixel images). Every resize is antialiased, as PIL's in the released evaluation code.
    (keras-vicreg 0.1's evaluation binaries resized training crops without antialiasing; they now
    read images here, antialiased as the released code.)

    Args:
        source: a tfds name (any image classification dataset, e.g. "imagenet2012", "voc/2007"),
            a folder of class subfolders, a `tf.data.Dataset` of dicts with `image_key` and
            `label_key` or of tuples (image, label, ...), or a pair `(images, labels)` of arrays in
            memory (images uint8, or float in [0, 1], (count, height, width, channels)): for
            evaluation each batch of these is cropped and resized at once.
        batch_size: the global batch size.
        train: training preprocessing (random crop and flip, shuffled) or evaluation (centre crop).
        augmentation: a `transforms.ViewAugmentation` (e.g. `labelled_view(224, mean, std)`), or a
            preset name or `transforms.TwoViewAugmentation`, whose view a is taken: it gives the
            size, crop ranges, channels and normalisation; default: the dataset's (see
            `DATASETS`), "imagenet" for others. Its colour augmentation is not applied.
        split: default: the dataset's labelled training split with `train`, else its evaluation
            split ("validation" for ImageNet, "test" for CIFAR); tfds names outside `DATASETS`
            need it.
        crop_fraction: the centre crop's side over the shorter side (`1 / resize_ratio`).
        percent: read only the first `percent`% of the split (tfds names and folders; not
            class-balanced).
        seed: the seed of the shuffle and augmentation; None draws one.
        shuffle_buffer: default 10,000 with `train`, else 0 (no shuffle).
        input_context: a `tf.distribute.InputContext`, as in `two_view_dataset`.
        drop_remainder: default: `train`.
        image_key, label_key: the keys in dict elements; for tfds names and folders the label is
            found by `labels.label_spec` (`label_key` chooses among several).
        label_spec: a `labels.LabelSpec` of the elements (multi-label datasets given as
            `tf.data.Dataset`s need one); overrides `image_key` and `label_key`.
        data_dir, manual_dir, download: see `keras_vicreg.data.load_builder`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 (batch, size, size, channels), and int32
        class indices (labels of other types as stored), or float32 multi-hot vectors for
        multi-label datasets.
    """
    batching.check_batch_size(batch_size)
    _check_crop_fraction(crop_fraction)
    labels_lib.check_percent(percent)
    if percent is not None and not isinstance(source, (str, bytes)) and not sources.is_folder(
        source
    ):
        raise ValueError(
            "`percent` subsets a tfds name or a folder; slice other sources yourself. "
            f"Received: percent={percent}, source of type {type(source).__name__}"
        )
    seed = batching.draw_seed(seed)
    shuffle_buffer = (10_000 if train else 0) if shuffle_buffer is None else shuffle_buffer
    drop_remainder = train if drop_remainder is None else drop_remainder
    which = "train_split" if train else "eval_split"
    spec = label_spec or labels_lib.LabelSpec(image_key, label_key or "label")
    in_memory = isinstance(source, tuple)
    if in_memory:
        images, labels = _labelled_arrays(source)
        source = tf.data.Dataset.from_tensor_slices((images, labels))
    elif not isinstance(source, tf.data.Dataset):
        split = labels_lib.percent_split(source, split or sources.default_split(source, which),
                                         percent)
    dataset, augmentation, sharded, builder = batching.resolve(
        source, split, which, augmentation=augmentation, data_dir=data_dir,
        manual_dir=manual_dir, download=download, seed=seed, input_context=input_context,
        shuffle_files=train,
    )
    if builder is not None and label_spec is None:
        spec = labels_lib.label_spec(builder.info.features, label_key)
    if percent is not None and sources.is_folder(source):  # tfds.ImageFolder has no slicing
        shards = input_context.num_input_pipelines if input_context else 1
        count = builder.info.splits[split].num_examples * percent / 100
        dataset = dataset.take(max(1, math.ceil(count / shards)))
    view = augmentation if isinstance(augmentation, transforms.ViewAugmentation) else (
        augmentation.view_a
    )
    view = _evaluation_view(view, train)
    route = batching.choose_route(view, in_memory=in_memory and not train)
    if route == "in_memory":
        return _array_evaluation_batches(
            images, spec.labels(labels), batch_size, view, crop_fraction, input_context,
            drop_remainder,
        ).prefetch(batching.AUTOTUNE)
    dataset = batching.select_parts(dataset, (spec.image_key, spec.label_key))
    dataset, batch_size, pipeline_id = batching.prepare(
        dataset, sharded, seed, shuffle_buffer, input_context, batch_size
    )

    def resized(element, element_seed):
        image = _labelled_image(element[0], element_seed, view, train, crop_fraction)
        return image, spec.labels(element[1])

    def finish(images, batch_labels):
        if not train:
            return _finish_evaluation(images, view), batch_labels
        images, params = images
        return transforms.apply_view_params_batch(images, params, view), batch_labels

    dataset = batching.map_and_batch(
        dataset, resized, finish, route, seed=seed, pipeline_id=pipeline_id,
        batch_size=batch_size, drop_remainder=drop_remainder,
    )
    return dataset.prefetch(batching.AUTOTUNE)


def _labelled_arrays(source):
    """Checks a `(images, labels)` source; returns them as host tensors."""
    if len(source) != 2:
        raise ValueError(
            "A tuple source must be a pair (images, labels) of arrays. "
            f"Received: a tuple of {len(source)}"
        )
    images = batching.image_array(source[0], "The images of an (images, labels) source")
    with tf.device("CPU:0"):
        labels = tf.convert_to_tensor(source[1])
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(
            "An (images, labels) source needs one label (row) per image. "
            f"Received: {images.shape[0]} images, labels of shape {labels.shape}"
        )
    return images, labels


def _array_evaluation_batches(images, labels, batch_size, view, crop_fraction, input_context,
                              drop_remainder):
    """`labelled_dataset`'s evaluation batches of in-memory images: every image of a batch has
    the same centre crop, so one slice and one resize make the batch."""
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        images = images[input_context.input_pipeline_id :: input_context.num_input_pipelines]
        labels = labels[input_context.input_pipeline_id :: input_context.num_input_pipelines]

    def preprocess(batch_images, batch_labels):
        resized = _centre_crops(batch_images, view, crop_fraction)
        return _finish_evaluation(resized, view), batch_labels

    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        batch_size, drop_remainder=drop_remainder
    )
    return batches.map(preprocess, num_parallel_calls=batching.AUTOTUNE, deterministic=True)
