"""Generated images for smoke tests: `config.dataset = "synthetic"` pretrains on these; multi-label
ones with VOC-style targets for the SVM protocol's `runlocal`.

They need no download and no disk, and have some spatial structure (blocks of one colour) for the
augmentations and the backbone to work on, so that a run of `configs/tiny.py` exercises the whole
pretraining path in seconds.
"""

import numpy as np


def synthetic_images(count, image_size, channels, seed):
    """`count` uint8 images (count, image_size, image_size, channels): random colours in 4 x 4
    blocks, plus Gaussian noise (std 20), the same for the same seed.

    Args:
        count: the number of images, >= 1.
        image_size: their side in pixels, >= 1.
        channels: 1 (grayscale) or 3 (RGB).
        seed: the seed of NumPy's generator.

    Returns:
        A uint8 NumPy array.
    """
    for name, value in (("count", count), ("image_size", image_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(count, 4, 4, channels))
    repeat = -(-image_size // 4)
    images = np.repeat(np.repeat(coarse, repeat, axis=1), repeat, axis=2)[:, :image_size,
                                                                          :image_size]
    images = images + rng.normal(0, 20, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def synthetic_multilabel(count, image_size, num_classes, seed, difficult_rate=0.1,
                         palette_seed=0):
    """Generated multi-label images with VOC-style targets, for the SVM protocol's smoke runs.

    Each class has a colour; an image is dark noise with 1 to 3 classes drawn as squares of their
    colour (a quarter to a half of the side) at random places. A class drawn as a small square (an
    eighth of the side), with probability `difficult_rate`, is marked -1 ("difficult") instead.

    Args:
        count, image_size: the number of images and their side (>= 8).
        num_classes: the classes (>= 2).
        seed: the seed of NumPy's generator.
        difficult_rate: the probability that a drawn class is small and marked difficult.
        palette_seed: the seed of the classes' colours: keep it for a training and a test split
            (drawn with different `seed`s) of one task.

    Returns:
        (uint8 images (count, size, size, 3), int64 targets (count, classes) of 1 present,
        0 absent, -1 difficult only).
    """
    if image_size < 8 or num_classes < 2:
        raise ValueError("`image_size` must be >= 8 and `num_classes` >= 2. Received: "
                         f"image_size={image_size}, num_classes={num_classes}")
    colours = np.random.default_rng(palette_seed).uniform(0, 255, size=(num_classes, 3))
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 10, size=(count, image_size, image_size, 3))
    targets = np.zeros((count, num_classes), np.int64)
    for index in range(count):
        classes = rng.choice(num_classes, size=rng.integers(1, 4), replace=False)
        for cls in classes:
            difficult = rng.random() < difficult_rate
            side = max(1, image_size // 8) if difficult else rng.integers(
                image_size // 4, image_size // 2 + 1)
            top, left = rng.integers(0, image_size - side + 1, size=2)
            images[index, top:top + side, left:left + side] = colours[cls]
            targets[index, cls] = -1 if difficult else 1
    return np.clip(images, 0, 255).astype(np.uint8), targets


SYNTHETIC_CLASSES = 4


def synthetic_labels(images):
    """Labels of `synthetic_images` for an online probe: the quartile of each image's mean value.

    The class is a function of the image alone (its mean brightness against the quartiles of the
    mean of the uniform blocks, whose spread is known), so the images stay those of the unlabelled
    data, and it survives crops and flips roughly: a probe can learn it. Classes 0..3.

    Args:
        images: uint8 (count, height, width, channels) from `synthetic_images`.

    Returns:
        int32 NumPy array (count,).
    """
    images = np.asarray(images, np.float32)
    # The mean of 16 * channels uniform(0, 255) blocks: centre 127.5, std 255 / sqrt(12 * 16 c).
    spread = 255.0 / np.sqrt(12.0 * 16 * images.shape[-1])
    edges = 127.5 + spread * np.array([-0.6745, 0.0, 0.6745])  # the normal's quartiles
    return np.digitize(images.mean(axis=(1, 2, 3)), edges).astype(np.int32)
