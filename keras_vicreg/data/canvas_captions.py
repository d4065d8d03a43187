"""Five templated captions per Fashion-MNIST canvas: offline image-text pairs for retrieval.

MS-COCO gives five captions per image, and its retrieval protocol counts an image as found when
any of them is (`keras_vicreg.evaluation.caption_retrieval_recall`). These captions stand in for
them on `canvases.fashion_mnist_canvases`, with nothing to download: each says which items a
canvas holds and, where it holds two or more, where two of them are relative to each other ("a
bag left of a sandal"), read from the exact boxes. Every caption is true of its canvas, and two
canvases share a caption only when they hold the same items in the same arrangement.
"""

import numpy as np

from keras_vicreg.data.canvases import CLASS_NAMES

CAPTIONS_PER_CANVAS = 5
_COUNT_WORDS = ("no", "one", "two", "three", "four")


def with_article(name):
    """ "a bag", "an ankle boot"."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _listed(names):
    phrases = [with_article(name) for name in names]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def relation(box_a, box_b):
    """Where box a is relative to box b, along the axis where their centres differ most:
    "left of", "right of", "above" or "below". Boxes are (ymin, xmin, ymax, xmax)."""
    dy = (box_a[0] + box_a[2]) / 2.0 - (box_b[0] + box_b[2]) / 2.0
    dx = (box_a[1] + box_a[3]) / 2.0 - (box_b[1] + box_b[3]) / 2.0
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def captions_of(classes, boxes):
    """The five captions of one canvas from its `classes` (slots; -1 padded) and `boxes`."""
    slots = [slot for slot, cls in enumerate(classes) if cls >= 0]
    if not slots:
        raise ValueError("A canvas to caption must hold at least one item. Received: classes="
                         f"{list(classes)}")
    names = {slot: CLASS_NAMES[classes[slot]] for slot in slots}
    left_to_right = [names[s] for s in sorted(slots, key=lambda s: (boxes[s][1], boxes[s][0]))]
    top_to_bottom = [names[s] for s in sorted(slots, key=lambda s: (boxes[s][0], boxes[s][1]))]
    count = f"{_COUNT_WORDS[len(slots)]} item{'s' if len(slots) > 1 else ''}"
    captions = [
        _listed(left_to_right),
        f"{count}: {_listed(sorted(names.values()))}",
        f"a picture of {_listed(top_to_bottom)}",
    ]
    if len(slots) == 1:
        alone = with_article(left_to_right[0])
        captions += [f"{alone} alone", f"only {alone} on black"]
    else:
        first, second = slots[0], slots[1]
        a, b = with_article(names[first]), with_article(names[second])
        captions += [
            f"{a} {relation(boxes[first], boxes[second])} {b}",
            f"{b} {relation(boxes[second], boxes[first])} {a}",
        ]
    return captions


def canvas_captions(canvases):
    """`CAPTIONS_PER_CANVAS` captions for each canvas of `canvases.fashion_mnist_canvases`.

    Args:
        canvases: its dict (only "classes" and "boxes" are read).

    Returns:
        (captions, caption_canvas): a list of strings, five per canvas in canvas order, and the
        int64 NumPy array of each caption's canvas row, as `caption_retrieval_recall` takes it.
    """
    classes, boxes = np.asarray(canvases["classes"]), np.asarray(canvases["boxes"])
    captions = []
    for canvas_classes, canvas_boxes in zip(classes, boxes):
        captions += captions_of(canvas_classes, canvas_boxes)
    owner = np.repeat(np.arange(len(classes), dtype=np.int64), CAPTIONS_PER_CANVAS)
    return captions, owner
