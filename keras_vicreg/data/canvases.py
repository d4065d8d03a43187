"""Canvases of Fashion-MNIST items: offline detection and segmentation data with exact labels.

Each canvas is a black square holding 1 to 4 Fashion-MNIST items pasted where their tight boxes do
not overlap, so that every label is exact: the box is the tight box of the item's nonzero pixels,
the instance mask is those pixels, and the class is the item's. The tests and the `runlocal`
configs of the transfer tasks read these instead of VOC or COCO, which cannot be downloaded here.

Items come from Debian's `dataset-fashion-mnist` idx files (`fashion_mnist.DEBIAN_DIR`), read
straight into arrays (no tfds preparation: the canvases need the raw 28 x 28 images only), or
from any arrays given as `items`.
"""

import gzip
import os

import numpy as np

from keras_vicreg.data import fashion_mnist

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
               "bag", "ankle boot")
_SPLIT_FILES = {"train": "train", "test": "t10k"}
_PLACEMENT_TRIES = 50


def load_items(split="train", local_dir=fashion_mnist.DEBIAN_DIR):
    """Fashion-MNIST's uint8 images (count, 28, 28) and int64 labels of a split, from idx files.

    Raises:
        ValueError: if the files are missing (install `dataset-fashion-mnist`, or pass `items` to
            `fashion_mnist_canvases`) or `split` is not "train" or "test".
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    if not fashion_mnist.check_local_files(local_dir):
        raise ValueError(
            "Fashion-MNIST's idx files are not in `local_dir` (apt-get install "
            "dataset-fashion-mnist), or pass `items=(images, labels)`. "
            f"Received: local_dir={local_dir!r}"
        )
    prefix = os.path.join(local_dir, _SPLIT_FILES[split])
    with gzip.open(f"{prefix}-images-idx3-ubyte.gz", "rb") as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{prefix}-labels-idx1-ubyte.gz", "rb") as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def fashion_mnist_canvases(count, *, canvas_size=64, max_items=4, seed=0, items=None,
                           split="train"):
    """`count` canvases with 1 to `max_items` items each, and their exact labels.

    The number of items is drawn uniformly in [1, max_items]; each item takes a random place
    whose tight box overlaps no earlier item's box (an item that finds none in 50 draws is left
    out, so a crowded canvas may hold fewer; the first always fits).

    Args:
        count: the number of canvases.
        canvas_size: their side in pixels, at least the items' side.
        max_items: the most items on a canvas, 1 to 4.
        seed: the seed of NumPy's generator (the same canvases for the same seed and items).
        items: (images (n, h, w) uint8, labels (n,)) to draw from; default: Fashion-MNIST's
            `split` (`load_items`).
        split: "train" or "test", when `items` is None.

    Returns:
        A dict of NumPy arrays, the item slots padded where a canvas holds fewer:
        images (count, size, size, 1) uint8; boxes (count, max_items, 4) float32 in pixels,
        (ymin, xmin, ymax, xmax) with the max exclusive, 0 when padded; classes (count, max_items)
        int32, -1 when padded; masks (count, max_items, size, size) bool; segmentation (count,
        size, size) int32, 0 for background and class + 1 on an item's pixels; sources
        (count, max_items) int64, the index of each item in `items`, -1 when padded.
    """
    images, labels = load_items(split) if items is None else items
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or len(images) != len(labels) or not len(images):
        raise ValueError("`items` must be (images (n, height, width), labels (n,)) with n >= 1. "
                         f"Received: shapes {images.shape} and {labels.shape}")
    side = max(images.shape[1:])
    if not 1 <= max_items <= 4 or canvas_size < side or count < 1:
        raise ValueError(
            f"`max_items` must be 1 to 4, `canvas_size` at least the items' side ({side}) and "
            f"`count` positive. Received: max_items={max_items}, canvas_size={canvas_size}, "
            f"count={count}"
        )
    rng = np.random.default_rng(seed)
    out = dict(
        images=np.zeros((count, canvas_size, canvas_size, 1), np.uint8),
        boxes=np.zeros((count, max_items, 4), np.float32),
        classes=np.full((count, max_items), -1, np.int32),
        masks=np.zeros((count, max_items, canvas_size, canvas_size), bool),
        segmentation=np.zeros((count, canvas_size, canvas_size), np.int32),
        sources=np.full((count, max_items), -1, np.int64),
    )
    for index in range(count):
        placed = []
        for source in rng.integers(0, len(images), size=rng.integers(1, max_items + 1)):
            item = images[source]
            rows, cols = np.nonzero(item)
            if not len(rows):
                continue  # a blank item has no box
            top, left = rows.min(), cols.min()
            height, width = rows.max() + 1 - top, cols.max() + 1 - left
            for _ in range(_PLACEMENT_TRIES):
                y = int(rng.integers(0, canvas_size - height + 1))
                x = int(rng.integers(0, canvas_size - width + 1))
                box = (y, x, y + height, x + width)
                if not any(_overlap(box, other) for other in placed):
                    break
            else:
                continue
            slot = len(placed)
            placed.append(box)
            crop = item[top:top + height, left:left + width]
            on = crop > 0
            out["images"][index, y:y + height, x:x + width, 0][on] = crop[on]
            out["masks"][index, slot, y:y + height, x:x + width] = on
            out["segmentation"][index, y:y + height, x:x + width][on] = labels[source] + 1
            out["boxes"][index, slot] = box
            out["classes"][index, slot] = labels[source]
            out["sources"][index, slot] = source
    return out


def _overlap(a, b):
    """Whether two (ymin, xmin, ymax, xmax) boxes, max exclusive, share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
