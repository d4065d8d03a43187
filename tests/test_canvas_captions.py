"""keras_vicreg.data.canvas_captions: every caption checked against the canvas's masks."""

import collections
import re

import numpy as np
import pytest

from keras_vicreg.data import canvas_captions
from keras_vicreg.data import canvases

pytestmark = pytest.mark.backend_neutral

NAMES = "|".join(re.escape(name) for name in sorted(canvases.CLASS_NAMES, key=len, reverse=True))
ITEM = re.compile(rf"\ban? ({NAMES})\b")
RELATION = re.compile(rf"^an? ({NAMES}) (left of|right of|above|below) an? ({NAMES})$")


def _items(count=40, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.uint8)
    for image in images:
        top, left = rng.integers(0, 8, size=2)
        image[top:top + rng.integers(6, 20), left:left + rng.integers(6, 20)] = 200
    return images, rng.integers(0, 10, size=count)


def _mask_centre(mask):
    """(y, x) centre of the tight extent of a mask's pixels: the box, recomputed independently."""
    rows, cols = np.nonzero(mask)
    return (rows.min() + rows.max() + 1) / 2.0, (cols.min() + cols.max() + 1) / 2.0


def test_every_caption_names_the_canvas_items_and_true_relations():
    out = canvases.fashion_mnist_canvases(60, canvas_size=64, seed=3, items=_items())
    captions, owner = canvas_captions.canvas_captions(out)
    assert len(captions) == 5 * 60 and (owner == np.repeat(np.arange(60), 5)).all()
    relations_checked = 0
    for row in range(60):
        slots = np.flatnonzero(out["classes"][row] >= 0)
        present = collections.Counter(canvases.CLASS_NAMES[c] for c in out["classes"][row][slots])
        own = captions[5 * row:5 * row + 5]
        assert len(set(own)) == 5, own
        for caption in own[:3]:  # the three lists name every item once
            assert collections.Counter(ITEM.findall(caption)) == present, (caption, present)
        if len(slots) == 1:
            assert all(ITEM.findall(caption) == list(present) for caption in own[3:])
            continue
        centres = [_mask_centre(out["masks"][row, slot]) for slot in slots[:2]]
        for caption, (a, b) in zip(own[3:], [(0, 1), (1, 0)]):
            match = RELATION.match(caption)
            assert match, caption
            assert match[1] == canvases.CLASS_NAMES[out["classes"][row][slots[a]]]
            assert match[3] == canvases.CLASS_NAMES[out["classes"][row][slots[b]]]
            dy = centres[a][0] - centres[b][0]
            dx = centres[a][1] - centres[b][1]
            word = {"left of": dx < 0 and abs(dx) >= abs(dy),
                    "right of": dx > 0 and abs(dx) >= abs(dy),
                    "above": dy < 0 and abs(dy) > abs(dx),
                    "below": dy > 0 and abs(dy) > abs(dx)}
            assert word[match[2]], (caption, centres)
            relations_checked += 1
    assert relations_checked > 40  # most canvases hold two or more items


def test_articles_and_single_items():
    assert canvas_captions.with_article("ankle boot") == "an ankle boot"
    boxes = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    assert canvas_captions.captions_of(np.array([9, -1]), boxes) == [
        "an ankle boot", "one item: an ankle boot", "a picture of an ankle boot",
        "an ankle boot alone", "only an ankle boot on black"]
    with pytest.raises(ValueError, match="at least one item"):
        canvas_captions.captions_of(np.array([-1, -1]), boxes)
