"""Where a labelled dataset keeps its images and class labels: `LabelSpec`, from tfds features.

Linear evaluation, fine-tuning and kNN need an image classification dataset: one image and a class
label, or a sequence of class labels for multi-label datasets (VOC 2007), evaluated with mean
average precision. `label_spec` finds them in a tfds builder's features, so that any tfds image
classification dataset or folder (`tfds.ImageFolder`) works without naming its keys.
"""

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vicreg.data import sources


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Where a dataset keeps its images and labels.

    Args:
        image_key: the name of the image feature.
        label_key: the name of the label feature.
        num_classes: the number of classes (None: not known, single labels kept as integers).
        multi_label: True when the label is a sequence of class labels (e.g. VOC 2007's "labels"),
            evaluated as multi-label classification with mean average precision.
    """

    image_key: str = "image"
    label_key: str = "label"
    num_classes: int = None
    multi_label: bool = False

    def __post_init__(self):
        if self.multi_label and not self.num_classes:
            raise ValueError(
                "Multi-label datasets need `num_classes` for their multi-hot labels. "
                f"Received: num_classes={self.num_classes}"
            )

    def labels(self, label):
        """One element's label as the pipelines yield it: int32, or float32 multi-hot."""
        if self.multi_label:
            hot = tf.one_hot(tf.cast(label, tf.int32), self.num_classes)
            return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
        return tf.cast(label, tf.int32) if label.dtype.is_integer else label


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


def load_labelled(source, split, *, data_dir=None, label_key=None, percent=None,
                  shuffle_files=False, seed=None):
    """A split of a prepared tfds image classification dataset (or a folder), and its `LabelSpec`.

    For the evaluation binaries, which read datasets prepared beforehand (`tfds build`): nothing is
    downloaded or prepared here, unlike `labelled_dataset` of a name. Give the result to
    `labelled_dataset(dataset, ..., label_spec=spec)`.

    Args:
        source: a tfds name, e.g. "imagenet2012", "imagenet2012_subset/1pct", "places365_small",
            "voc/2007" (multi-label), "i_naturalist2018"; or a directory of
            `<split>/<class>/<image>` files (`tfds.ImageFolder`).
        split: the split, e.g. "train" or "validation"; "a+b" joins splits of a tfds dataset.
        data_dir: where tfds keeps prepared datasets.
        label_key: see `label_spec`.
        percent: keep the first `percent`% of the split (not class-balanced).
        shuffle_files: shuffle tfds' files (seeded by `seed`).

    Returns:
        (dataset of feature dicts with decoded images, `LabelSpec`).
    """
    check_percent(percent)
    folder = sources.is_folder(source)
    builder = sources.image_folder(source) if folder else tfds.builder(source, data_dir=data_dir)
    spec = label_spec(builder.info.features, label_key)
    dataset = builder.as_dataset(
        split=percent_split(source, split, percent),
        shuffle_files=shuffle_files and not folder,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    if percent is not None and folder:  # tfds.ImageFolder has no split slicing
        count = builder.info.splits[split].num_examples
        dataset = dataset.take(max(1, int(count * percent / 100)))
    return dataset, spec


def check_percent(percent):
    """Checks a percent subset's argument: None (all) or in (0, 100]."""
    if percent is not None and not 0 < percent <= 100:
        raise ValueError(f"`percent` must be in (0, 100]. Received: percent={percent}")


def percent_split(source, split, percent):
    """The split string of the first `percent`% of a tfds split (folders: the split itself)."""
    if percent is None or sources.is_folder(source):
        return split
    return f"{split}[:{percent}%]"
