"""Semantic segmentation data: (normalised image, class-per-pixel mask) batches as tf.data.

Three sources, each giving masks of int32 class ids (`IGNORE_CLASS` where a pixel has no label):

- "canvases": `keras_vicreg.data.canvases.fashion_mnist_canvases` (offline, exact labels): 0 for
  background and 1 + the Fashion-MNIST class on an item's pixels, 11 classes; the grayscale
  canvases are replicated to 3 channels.
- "coco": tfds `coco/2017_panoptic`, its 133 panoptic categories (80 things, 53 stuff) as the
  semantic classes, the unlabelled pixels (segment id 0) ignored. tfds' `coco/2017` holds boxes
  only, no masks, so the panoptic PNGs are the masks.
- "voc": tfds has no VOC segmentation masks (`voc/2007` and `voc/2012` hold boxes and image
  labels only; the SegmentationClass PNGs are not in it), so "voc" is the closest tfds data:
  `coco/2017_panoptic` restricted to VOC's 20 classes, the other 113 categories background (as
  in the COCO-to-VOC pretraining subset of the DeepLab papers), 21 classes in VOC's order. It is
  *not* the VOC 2012 segmentation benchmark.

The tfds images are resized to a square (bilinear; masks nearest-neighbour) and flipped at random
when training: a simplification of DeepLab's random scale-and-crop, and evaluation runs at that
size rather than the original resolution.
"""

import numpy as np
import tensorflow as tf

from keras_vicreg.data import canvases
from keras_vicreg.data import sources

IGNORE_CLASS = 255
PANOPTIC = "coco/2017_panoptic"
CANVAS_CLASSES = ("background", *canvases.CLASS_NAMES)
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
# VOC class -> (index, name) of the COCO thing class among coco/2017_panoptic's 133 labels (the 80
# things come first, in COCO's category-id order).
_VOC_IN_COCO = {
    "aeroplane": (4, "airplane"), "bicycle": (1, "bicycle"), "bird": (14, "bird"),
    "boat": (8, "boat"), "bottle": (39, "bottle"), "bus": (5, "bus"), "car": (2, "car"),
    "cat": (15, "cat"), "chair": (56, "chair"), "cow": (19, "cow"),
    "diningtable": (60, "dining table"), "dog": (16, "dog"), "horse": (17, "horse"),
    "motorbike": (3, "motorcycle"), "person": (0, "person"), "pottedplant": (58, "potted plant"),
    "sheep": (18, "sheep"), "sofa": (57, "couch"), "train": (6, "train"), "tvmonitor": (62, "tv"),
}
DATASETS = ("voc", "coco", "canvases")


def normalise(images, mean, std):
    """uint8 images (..., 3) -> float32 `(images / 255 - mean) / std`."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def canvas_dataset(data, *, batch_size, mean, std, train, seed=0):
    """Batches of (normalised 3-channel canvas, segmentation) from `fashion_mnist_canvases` output.

    Args:
        data: the dict of `canvases.fashion_mnist_canvases` (its "images" and "segmentation").
        batch_size: images per batch.
        mean, std: the normalisation, 3 values each.
        train: shuffle, repeat forever and drop the remainder; else one pass in order.
        seed: the shuffle's seed.

    Returns:
        A `tf.data.Dataset` of (float32 (batch, size, size, 3), int32 (batch, size, size)).
    """
    images = np.repeat(np.asarray(data["images"]), 3, axis=-1)
    masks = np.asarray(data["segmentation"], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    if train:
        dataset = dataset.shuffle(len(images), seed=seed).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=train)
    return dataset.map(lambda x, y: (normalise(x, mean, std), y)).prefetch(tf.data.AUTOTUNE)


def class_names(dataset, info=None):
    """The class names of a source ("voc", "coco", "canvases"), index = class id.

    For "coco", the names of the prepared dataset's info (`info`), else "class_<i>".
    """
    if dataset == "canvases":
        return CANVAS_CLASSES
    if dataset == "voc":
        return VOC_CLASSES
    names = _panoptic_names(info)
    return tuple(names) if names else tuple(f"class_{index}" for index in range(133))


def label_map(dataset, info=None):
    """int32 (133,): coco/2017_panoptic label -> class id of "voc" or "coco".

    Raises:
        ValueError: if the prepared dataset's names disagree with the VOC mapping's COCO names.
    """
    if dataset == "coco":
        return np.arange(133, dtype=np.int32)
    names = _panoptic_names(info)
    table = np.zeros(133, np.int32)
    for voc_index, voc_name in enumerate(VOC_CLASSES[1:], start=1):
        coco_index, coco_name = _VOC_IN_COCO[voc_name]
        if names and names[coco_index] != coco_name:
            raise ValueError(
                f"coco/2017_panoptic's label {coco_index} should be {coco_name!r} for VOC's "
                f"{voc_name!r}. Received: {names[coco_index]!r}"
            )
        table[coco_index] = voc_index
    return table


def semantic_mask(panoptic_image, segment_ids, segment_classes, ignore_class=IGNORE_CLASS):
    """A COCO panoptic PNG -> int32 class per pixel.

    A pixel's segment id is R + 256 G + 256^2 B (COCO's panoptic format); it takes the class of
    the segment with that id, and `ignore_class` where no segment has it (id 0: unlabelled).
    Looked up by binary search over the sorted segment ids (`tf.searchsorted`).

    Args:
        panoptic_image: uint8 (height, width, 3).
        segment_ids: int64 (segments,) the ids of the image's segments.
        segment_classes: int32 (segments,) their class ids.
        ignore_class: the class of unmatched pixels.

    Returns:
        int32 (height, width).
    """
    rgb = tf.cast(panoptic_image, tf.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    order = tf.argsort(segment_ids)
    sentinel = tf.constant([np.iinfo(np.int64).max], tf.int64)  # the ids are < 2^24
    sorted_ids = tf.concat([tf.gather(tf.cast(segment_ids, tf.int64), order), sentinel], 0)
    sorted_classes = tf.concat(
        [tf.gather(tf.cast(segment_classes, tf.int32), order), [ignore_class]], 0
    )
    flat = tf.reshape(ids, [-1])
    position = tf.searchsorted(sorted_ids[None], flat[None])[0]
    found = tf.equal(tf.gather(sorted_ids, position), flat)
    classes = tf.where(found, tf.gather(sorted_classes, position), ignore_class)
    return tf.reshape(classes, tf.shape(ids))


def panoptic_dataset(dataset, split, *, image_size, batch_size, mean, std, train, seed=0,
                     data_dir=None, download=True):
    """Batches of (normalised image, mask) of "voc" or "coco" (module docstring) from tfds.

    The dataset is prepared first when it is not (tfds downloads COCO's images and panoptic
    annotations; `download=False` refuses instead).

    Returns:
        (a `tf.data.Dataset` of (float32 (batch, size, size, 3), int32 (batch, size, size)),
        the class names).
    """
    if dataset not in ("voc", "coco"):
        raise ValueError(f"`dataset` must be 'voc' or 'coco'. Received: dataset={dataset!r}")
    builder = sources.load_builder(PANOPTIC, data_dir=data_dir, download=download)
    table = tf.constant(label_map(dataset, builder.info))
    names = class_names(dataset, builder.info)
    data = builder.as_dataset(split=split, shuffle_files=train)

    def example(element):
        objects = element["panoptic_objects"]
        mask = semantic_mask(element["panoptic_image"], objects["id"],
                             tf.gather(table, tf.cast(objects["label"], tf.int32)))
        image = tf.image.resize(element["image"], (image_size, image_size), antialias=True)
        mask = tf.image.resize(mask[..., None], (image_size, image_size), method="nearest")
        if train:
            flip = tf.random.uniform([]) < 0.5
            image = tf.where(flip, image[:, ::-1], image)
            mask = tf.where(flip, mask[:, ::-1], mask)
        image = (image / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
        return image, mask[..., 0]

    if train:
        data = data.shuffle(10 * batch_size, seed=seed).repeat()
    data = data.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)
    return data, names


def _panoptic_names(info):
    """The prepared dataset's 133 label names, or None where tfds has none (mock data)."""
    if info is None:
        return None
    names = list(info.features["panoptic_objects"]["label"].names)
    return None if names == [str(index) for index in range(len(names))] else names
