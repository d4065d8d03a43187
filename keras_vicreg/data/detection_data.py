"""Images with boxes for detection transfer: VOC07+12 and COCO from tfds, or generated canvases.

Every source gives one element layout, so the batching is written once:

    {"image": uint8 (h, w, 3), "boxes": float32 (n, 4) (ymin, xmin, ymax, xmax) in [0, 1],
     "labels": int32 (n,), "crowd": bool (n,)}

- `voc`: tfds "voc/2007" and "voc/2012". Training reads VOC07+12, the usual protocol (2007
  trainval + 2012 trainval, 16551 images), without the objects marked difficult (as detectron2
  loads VOC); evaluation reads 2007 test (4952 images) with the difficult objects as crowd regions
  that count neither way (`keras_vicreg.transfer.average_precision`). 20 classes.
- `coco`: tfds "coco/2017", train and validation, 80 classes; COCO's crowd boxes are crowd
  regions in evaluation and dropped from training.
- `canvases`: Fashion-MNIST items pasted on black canvases with exact boxes
  (`keras_vicreg.data.canvases`), grayscale replicated to 3 channels; 10 classes; offline.

tfds datasets are prepared on first use when missing (`sources.load_builder`; VOC and COCO
download several GB). `detection_batches` resizes every image to a square (the aspect ratio is
not kept: boxes are scaled with it, and IoU is unchanged by a scaling of each axis), normalises
it, flips training images left-right with their boxes, and pads the boxes of a batch to
`max_boxes` rows with label -1 (keras-hub's padding).
"""

import numpy as np
import tensorflow as tf

from keras_vicreg.data import canvases
from keras_vicreg.data import sources

VOC_TRAIN = (("voc/2007", "train+validation"), ("voc/2012", "train+validation"))
VOC_TEST = (("voc/2007", "test"),)
COCO_TRAIN = (("coco/2017", "train"),)
COCO_TEST = (("coco/2017", "validation"),)
DATASETS = ("voc", "coco", "canvases")


def tfds_detection(parts, *, train, data_dir=None, download=True):
    """The elements of tfds detection splits, one after another, and their class names.

    Args:
        parts: (tfds name, split) pairs, e.g. `VOC_TRAIN`. VOC's objects carry `is_difficult`,
            COCO's `is_crowd`.
        train: drop difficult / crowd objects (training); else keep them as crowd regions.
        data_dir: tfds' data directory.
        download: prepare a dataset that is not prepared yet (see `sources.load_builder`).

    Returns:
        (a `tf.data.Dataset` of the element layout above, class names).
    """
    datasets, names = [], None
    for name, split in parts:
        builder = sources.load_builder(name, data_dir=data_dir, download=download)
        objects = builder.info.features["objects"]
        if "label" not in objects.keys() or "bbox" not in objects.keys():
            raise ValueError("A detection dataset's `objects` needs `bbox` and `label` features "
                             f"(tfds voc, coco). Received: {name!r} with {list(objects.keys())}")
        names = names or tuple(objects["label"].names)
        flag = "is_difficult" if "is_difficult" in objects.keys() else "is_crowd"
        dataset = builder.as_dataset(split=split, shuffle_files=train)
        datasets.append(dataset.map(lambda e, f=flag: _tfds_element(e, f, train),
                                    num_parallel_calls=tf.data.AUTOTUNE))
    dataset = datasets[0]
    for other in datasets[1:]:
        dataset = dataset.concatenate(other)
    return dataset, names


def _tfds_element(element, flag, train):
    image = element["image"]
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    objects = element["objects"]
    crowd = tf.cast(objects[flag], tf.bool) if flag in objects else tf.zeros_like(
        objects["label"], tf.bool)
    # the same count in every field (true of VOC and COCO; tfds' mock data draws each its own)
    count = tf.reduce_min([tf.shape(objects["bbox"])[0], tf.shape(objects["label"])[0],
                           tf.shape(crowd)[0]])
    boxes = _ordered(tf.cast(objects["bbox"][:count], tf.float32))
    labels = tf.cast(objects["label"][:count], tf.int32)
    crowd = crowd[:count]
    if train:
        keep = tf.logical_not(crowd)
        boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
    return {"image": image, "boxes": boxes, "labels": labels, "crowd": crowd}


def _ordered(boxes):
    """(ymin, xmin, ymax, xmax) with each min below its max (tfds' mock data draws at random)."""
    y = tf.sort(tf.stack([boxes[:, 0], boxes[:, 2]], -1), -1)
    x = tf.sort(tf.stack([boxes[:, 1], boxes[:, 3]], -1), -1)
    return tf.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], -1)


def canvas_detection(count, *, canvas_size=64, max_items=4, seed=0, split="train"):
    """Fashion-MNIST canvases (`canvases.fashion_mnist_canvases`) in the element layout.

    Returns:
        (a `tf.data.Dataset` of `count` elements, the 10 class names).
    """
    drawn = canvases.fashion_mnist_canvases(count, canvas_size=canvas_size, max_items=max_items,
                                            seed=seed, split=split)
    images = np.repeat(drawn["images"], 3, axis=-1)
    boxes = drawn["boxes"] / np.float32(canvas_size)

    def element(index):
        keep = tf.gather(drawn["classes"], index) >= 0
        return {"image": tf.gather(images, index),
                "boxes": tf.boolean_mask(tf.gather(boxes, index), keep),
                "labels": tf.boolean_mask(tf.gather(drawn["classes"], index), keep),
                "crowd": tf.zeros_like(tf.boolean_mask(tf.gather(drawn["classes"], index), keep),
                                       tf.bool)}

    dataset = tf.data.Dataset.range(count).map(element)
    return dataset, canvases.CLASS_NAMES


def detection_batches(dataset, *, image_size, batch_size, mean, std, max_boxes=100,
                      train=False, seed=0, shuffle_buffer=1000):
    """Batches of `(images, {"boxes", "labels"[, "crowd"]})` for keras-hub's detectors.

    Args:
        dataset: elements in this module's layout.
        image_size: the square side every image is resized to (bilinear).
        batch_size: images per batch.
        mean, std: per-channel normalisation of images scaled to [0, 1].
        max_boxes: the box rows of every image (more objects are cut, fewer padded with -1).
        train: shuffle, repeat forever, flip left-right at random, no "crowd" key (keras-hub's
            loss reads only boxes and labels); else one pass in order, keeping the last
            incomplete batch and "crowd" for the evaluation.
        seed: the shuffle's and the flips' seed.
        shuffle_buffer: the shuffle buffer (training).

    Returns:
        A `tf.data.Dataset`: images float32 (b, size, size, 3); boxes float32 (b, max_boxes, 4)
        in pixels of the resized image, (ymin, xmin, ymax, xmax); labels int32 (b, max_boxes);
        crowd bool (b, max_boxes) when not training.
    """
    if image_size < 1 or batch_size < 1 or max_boxes < 1:
        raise ValueError("`image_size`, `batch_size` and `max_boxes` must be positive. Received: "
                         f"image_size={image_size}, batch_size={batch_size}, "
                         f"max_boxes={max_boxes}")
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)

    def prepare(index, element):
        image = tf.image.resize(tf.cast(element["image"], tf.float32) / 255.0,
                                (image_size, image_size))
        boxes = element["boxes"][:max_boxes]
        if train:
            flip = tf.random.stateless_uniform((), (seed, index)) < 0.5
            image = tf.where(flip, image[:, ::-1], image)
            boxes = tf.where(flip, tf.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2],
                                             1.0 - boxes[:, 1]], -1), boxes)
        rows = tf.shape(boxes)[0]
        pad = [[0, max_boxes - rows]]
        targets = {
            "boxes": tf.pad(boxes * float(image_size), pad + [[0, 0]], constant_values=-1.0),
            "labels": tf.pad(element["labels"][:max_boxes], pad, constant_values=-1),
        }
        if not train:
            targets["crowd"] = tf.pad(element["crowd"][:max_boxes], pad, constant_values=False)
        for value, width in zip(targets.values(), (4, None, None)):
            value.set_shape((max_boxes, width) if width else (max_boxes,))
        return (image - mean) / std, targets

    if train:
        if shuffle_buffer:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed)
        dataset = dataset.repeat()
    dataset = dataset.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)
