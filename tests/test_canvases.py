"""Tests for keras_vicreg.data.canvases: every label recomputed from the source items alone."""

import os

import numpy as np
import pytest

from keras_vicreg.data import canvases
from keras_vicreg.data import fashion_mnist

pytestmark = pytest.mark.backend_neutral


def _items(count=30, seed=0):
    """Items with blank margins of random sizes, so tight boxes differ from the 28 x 28 square."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.uint8)
    for image in images:
        top, left = rng.integers(0, 10, size=2)
        height, width = rng.integers(5, 28 - top), rng.integers(5, 28 - left)
        image[top:top + height, left:left + width] = rng.integers(0, 256, (height, width))
        image[top, left] = image[top + height - 1, left + width - 1] = 255  # the box's corners
    return images, rng.integers(0, 10, size=count)


def _check_against_sources(out, images, labels, size):
    for index in range(len(out["images"])):
        slots = np.flatnonzero(out["sources"][index] >= 0)
        assert 1 <= len(slots) and (out["classes"][index, len(slots):] == -1).all()
        canvas = np.zeros((size, size), np.int64)
        segmentation = np.zeros((size, size), np.int64)
        for slot in slots:
            item = images[out["sources"][index, slot]]
            rows, cols = np.nonzero(item)
            y, x = out["boxes"][index, slot][:2].astype(int)
            expected = np.zeros((size, size), np.int64)
            expected[y:y + np.ptp(rows) + 1, x:x + np.ptp(cols) + 1] = item[
                rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            np.testing.assert_array_equal(out["masks"][index, slot], expected > 0)
            mask_rows, mask_cols = np.nonzero(out["masks"][index, slot])
            np.testing.assert_array_equal(  # the box is the mask's tight box
                out["boxes"][index, slot],
                [mask_rows.min(), mask_cols.min(), mask_rows.max() + 1, mask_cols.max() + 1])
            assert out["classes"][index, slot] == labels[out["sources"][index, slot]]
            assert not (canvas[expected > 0]).any()  # items never share a pixel
            canvas += expected
            segmentation += (expected > 0) * (labels[out["sources"][index, slot]] + 1)
        np.testing.assert_array_equal(out["images"][index, ..., 0], canvas)
        np.testing.assert_array_equal(out["segmentation"][index], segmentation)


def test_labels_are_exact_and_items_do_not_overlap():
    images, labels = _items()
    out = canvases.fashion_mnist_canvases(60, canvas_size=64, seed=1, items=(images, labels))
    _check_against_sources(out, images, labels, 64)
    counts = (out["sources"] >= 0).sum(axis=1)
    assert set(counts.tolist()) == {1, 2, 3, 4}
    again = canvases.fashion_mnist_canvases(60, canvas_size=64, seed=1, items=(images, labels))
    for key, value in out.items():
        np.testing.assert_array_equal(again[key], value)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_items():
    images, labels = canvases.load_items("test")
    assert images.shape == (10000, 28, 28) and set(labels.tolist()) == set(range(10))
    out = canvases.fashion_mnist_canvases(20, canvas_size=80, seed=2, split="test")
    _check_against_sources(out, images, labels, 80)


def test_bad_arguments_say_what_to_change(tmp_path):
    items = _items(3)
    with pytest.raises(ValueError, match="`max_items` must be 1 to 4"):
        canvases.fashion_mnist_canvases(2, max_items=5, items=items)
    with pytest.raises(ValueError, match=r"at least the items' side \(28\)"):
        canvases.fashion_mnist_canvases(2, canvas_size=20, items=items)
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        canvases.load_items("train", local_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'train' or 'test'"):
        canvases.load_items("validation")
