"""Labelled image datasets for evaluation: tfds image classification, train and eval transforms.

The transforms are the released linear evaluation's (facebookresearch/vicreg `evaluate.py`):
training images get a random resized crop (bilinear), a horizontal flip and the normalisation;
evaluation images are resized so that their shorter side is `image_size * resize_ratio` (256 for
224) and centre-cropped. Both are built from `keras_vicreg.data.transforms`'s functions.

The pretraining pipelines make pairs of views of unlabelled images; these make (image, label)
batches, for the protocols that need labels.
"""

import dataclasses
import os

import tensorflow as tf

from keras_vicreg.data import transforms

DEFAULT_RESIZE_RATIO = 256.0 / 224.0


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Where a tfds dataset keeps its images and labels.

    Args:
        image_key: the name of the `tfds.features.Image` feature.
        label_key: the name of the label feature.
        num_classes: the number of classes.
        multi_label: True when the label is a sequence of class labels (e.g. VOC 2007's "labels"),
            evaluated as multi-label classification with mean average precision.
    """

    image_key: str
    label_key: str
    num_classes: int
    multi_label: bool = False


def label_spec(features, label_key=None):
    """Finds the image and the class label of a tfds dataset's features.

    Args:
        features: a `tfds.features.FeaturesDict`, e.g. `tfds.builder(name).info.features`.
        label_key: the label feature to use; by default "label" if it is a `ClassLabel`, else the
            only `ClassLabel` (single-label) or, failing that, "labels" or the only sequence of
            `ClassLabel` (multi-label).

    Returns:
        A `LabelSpec`.

    Raises:
        ValueError: if the dataset has no image or no class label, so is not image classification.
    """
    import tensorflow_datasets as tfds

    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    single = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    multi = [
        k for k, f in features.items()
        if isinstance(f, tfds.features.Sequence)
        and isinstance(f.feature, tfds.features.ClassLabel)
    ]
    if label_key is None:
        for candidates, preferred in ((single, "label"), (multi, "labels")):
            if preferred in candidates or len(candidates) == 1:
                label_key = preferred if preferred in candidates else candidates[0]
                break
    if len(images) != 1 or label_key not in single + multi:
        raise ValueError(
            "Linear evaluation, fine-tuning and kNN need an image classification dataset: one "
            "tfds Image feature and a ClassLabel (or a Sequence of ClassLabel for multi-label) "
            "feature; pass `label_key` to choose among several. Received: features "
            f"{ {k: type(f).__name__ for k, f in features.items()} }, label_key={label_key!r}"
        )
    label = features[label_key]
    multi_label = label_key in multi
    num_classes = (label.feature if multi_label else label).num_classes
    return LabelSpec(images[0], label_key, num_classes, multi_label)


def train_view(image_size, mean=transforms.IMAGENET_MEAN, std=transforms.IMAGENET_STD):
    """The linear evaluation's training transform: random resized crop (bilinear) and flip."""
    return transforms.ViewAugmentation(
        image_size=image_size,
        interpolation="bilinear",
        jitter_prob=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
        mean=tuple(mean),
        std=tuple(std),
    )


def eval_preprocess(
    images,
    image_size,
    resize_ratio=DEFAULT_RESIZE_RATIO,
    mean=transforms.IMAGENET_MEAN,
    std=transforms.IMAGENET_STD,
):
    """Resize the shorter side to `image_size * resize_ratio`, centre-crop, normalise.

    Args:
        images: uint8 (0..255) or float (0..1) tensor, one image (height, width, channels) or a
            batch (batch, height, width, channels) of one size; 1 channel is tiled to 3 when
            `mean` has 3 values.
        image_size: the side of the square output.
        resize_ratio: the shorter side before cropping, over `image_size` (256 / 224); >= 1.
        mean, std: per-channel normalisation of the [0, 1] image.

    Returns:
        float32 tensor (..., image_size, image_size, len(mean)).
    """
    if resize_ratio < 1:
        raise ValueError(
            "`resize_ratio` is the resized shorter side over the crop and must be >= 1. "
            f"Received: resize_ratio={resize_ratio}"
        )
    images = tf.convert_to_tensor(images)
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]
    # Cropping the central shorter_side / resize_ratio square, then resizing it to image_size, is
    # "resize to image_size * resize_ratio, centre-crop image_size" with one resampling.
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.maximum(tf.cast(tf.round(shorter / resize_ratio), tf.int32), 1)
    crop = tf.image.crop_to_bounding_box(
        images, (height - side) // 2, (width - side) // 2, side, side
    )
    image = tf.image.resize(crop, [image_size, image_size], "bilinear", antialias=True)
    image = tf.clip_by_value(image * scale, 0.0, 1.0)
    if image.shape[-1] == 1 and len(mean) == 3:
        image = tf.repeat(image, 3, axis=-1)
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def labelled_dataset(
    dataset,
    spec,
    *,
    image_size,
    batch_size,
    train,
    resize_ratio=DEFAULT_RESIZE_RATIO,
    mean=transforms.IMAGENET_MEAN,
    std=transforms.IMAGENET_STD,
    shuffle_buffer=10_000,
    seed=0,
    drop_remainder=None,
):
    """(images, labels) batches from a dataset of tfds feature dicts.

    Args:
        dataset: a `tf.data.Dataset` of dicts holding `spec.image_key` and `spec.label_key`.
        spec: a `LabelSpec`.
        image_size: the side of the square images.
        batch_size: examples per batch.
        train: random resized crop, flip and shuffling (True) or the centre crop (False).
        resize_ratio, mean, std: see `eval_preprocess`.
        shuffle_buffer: examples in the shuffle buffer when training.
        seed: the seed of the shuffle and the crops.
        drop_remainder: drop the last incomplete batch; defaults to `train`.

    Returns:
        A `tf.data.Dataset` of (float32 images, labels): int32 class indices, or multi-hot
        float32 vectors of length `spec.num_classes` when `spec.multi_label`.
    """
    view = train_view(image_size, mean, std)

    def prepare(example, example_seed):
        image = example[spec.image_key]
        if train:
            image = transforms.augment_view(image, example_seed, view)
        else:
            image = eval_preprocess(image, image_size, resize_ratio, mean, std)
        label = example[spec.label_key]
        if spec.multi_label:
            hot = tf.one_hot(tf.cast(label, tf.int32), spec.num_classes)
            label = tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
        else:
            label = tf.cast(label, tf.int32)
        return image, label

    if train:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds))
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    drop = train if drop_remainder is None else drop_remainder
    return dataset.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def load_tfds(name, split, *, data_dir=None, label_key=None, percent=None, train=False):
    """A split of a tfds image classification dataset (or an image folder) and its `LabelSpec`.

    Args:
        name: a tfds name, e.g. "imagenet2012", "imagenet2012_subset/1pct", "places365_small",
            "voc/2007" (multi-label), "i_naturalist2018", prepared beforehand (`tfds build`);
            or a directory of `<split>/<class>/<image>` files, read with `tfds.ImageFolder`.
        split: the split, e.g. "train" or "validation"; "a+b" joins splits of a tfds dataset.
        data_dir: where tfds keeps prepared datasets; nothing is downloaded here.
        label_key: see `label_spec`.
        percent: keep the first `percent`% of the split (not class-balanced).
        train: shuffle the files.

    Returns:
        (dataset of feature dicts, `LabelSpec`).
    """
    import tensorflow_datasets as tfds

    if percent is not None and not 0 < percent <= 100:
        raise ValueError(f"`percent` must be in (0, 100]. Received: percent={percent}")
    folder = os.path.isdir(os.path.expanduser(name))
    if folder:
        builder = tfds.ImageFolder(os.path.expanduser(name))
    else:
        builder = tfds.builder(name, data_dir=data_dir)
    spec = label_spec(builder.info.features, label_key)
    if percent is not None and not folder:
        split = f"{split}[:{percent}%]"
    dataset = builder.as_dataset(split=split, shuffle_files=train and not folder)
    if percent is not None and folder:  # tfds.ImageFolder has no split slicing
        count = builder.info.splits[split].num_examples
        dataset = dataset.take(max(1, int(count * percent / 100)))
    return dataset, spec
