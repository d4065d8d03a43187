"""Geometry of a view: crop windows, crops, and resizes of one image or of a whole batch.

The crop window is sampled as torchvision's `RandomResizedCrop` does (10 tries, then a central
crop), the released code's transform, from a view's `CropDraws`; a window is
`[offset_y, offset_x, height, width]`, the `crop_window` of `tf.image.decode_and_crop_jpeg`, so that
a JPEG's window can be chosen from its header and only the crop decoded. Images are channels last,
uint8 (0..255) or float in [0, 1]; resized crops are float32 in [0, 1].

Two ways to resize: image by image (`resize_crop`, any interpolation, antialiased or not), and a
batch of same-size images at once (`resize_windows`): one matrix product per axis, the same numbers
as `tf.image.resize` of each crop, for pipelines whose cost is the number of ops, not the pixels
(small images held in memory).
"""

import math

import tensorflow as tf

from keras_vicreg.data.transforms import presets
from keras_vicreg.data.transforms.draws import sample_crop_draws


def crop_windows(image_shape, draws, scales, ratios):
    """Crop windows of one image from their `CropDraws`, as `sample_crop_window`.

    Vectorised over the rows of `draws` (the views of one image), each row with its own scale and
    ratio ranges: per element of a tf.data map, the cost is the number of ops.

    Args:
        image_shape: the image's shape (height, width, ...).
        draws: `CropDraws` with a leading axis of windows.
        scales: one range of the crop's area (a fraction of the image's) per window.
        ratios: one range of the crop's aspect ratio (width / height) per window.

    Returns:
        int32 tensor (windows, 4) of `[offset_y, offset_x, crop_height, crop_width]`.
    """
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)

    def column(values):  # one number per window, against (windows, candidates)
        return tf.constant(values, tf.float32, shape=[len(values), 1])

    log_ratios = [(math.log(low), math.log(high)) for low, high in ratios]
    area_range = column([high - low for low, high in scales])
    area = height * width * (column([low for low, _ in scales]) + area_range * draws.area)
    log_range = column([high - low for low, high in log_ratios])
    aspect = tf.exp(column([low for low, _ in log_ratios]) + log_range * draws.log_ratio)
    crop_w = tf.round(tf.sqrt(area * aspect))
    crop_h = tf.round(tf.sqrt(area / aspect))
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1)
    # The central crop of torchvision's fallback, clamped to the ratio range.
    in_ratio = width / height
    low_ratio, high_ratio = (tf.constant(bound, tf.float32) for bound in zip(*ratios))
    fallback_w = tf.where(in_ratio > high_ratio, tf.round(height * high_ratio), width)
    fallback_h = tf.where(in_ratio < low_ratio, tf.round(width / low_ratio), height)
    found = tf.reduce_any(fits, axis=1)
    crop_h = tf.maximum(tf.where(found, tf.gather(crop_h, first, batch_dims=1), fallback_h), 1.0)
    crop_w = tf.maximum(tf.where(found, tf.gather(crop_w, first, batch_dims=1), fallback_w), 1.0)
    # torchvision: offset = randint(0, size - crop + 1); the central crop floors (size - crop) / 2.
    free_h, free_w = height - crop_h, width - crop_w
    offset_y = tf.where(found, tf.floor(draws.offset[:, 0] * (free_h + 1)), free_h // 2)
    offset_x = tf.where(found, tf.floor(draws.offset[:, 1] * (free_w + 1)), free_w // 2)
    return tf.cast(tf.stack([offset_y, offset_x, crop_h, crop_w], axis=1), tf.int32)


def sample_crop_window(image_shape, seed, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """Samples a crop window as torchvision's `RandomResizedCrop.get_params` does.

    Ten candidates of area U(scale) * area and log-uniform aspect ratio are drawn at once; the first
    that fits is taken at a uniform offset, else a central crop clamped to `ratio`.

    Args:
        image_shape: the image's shape (height, width, ...), e.g. from `tf.shape` or
            `tf.image.extract_jpeg_shape` (so that a JPEG need not be decoded to choose its crop).
        seed: int tensor of shape (2,).
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        int32 tensor `[offset_y, offset_x, crop_height, crop_width]`, the `crop_window` of
        `tf.image.decode_and_crop_jpeg`.
    """
    return crop_windows(image_shape, sample_crop_draws([seed]), [scale], [ratio])[0]


def centre_crop_window(image_shape, crop_fraction=224.0 / 256.0):
    """The window of "resize the shorter side to size / crop_fraction, centre-crop size".

    Args:
        image_shape: the image's shape (height, width, ...).
        crop_fraction: the crop's side as a fraction of the shorter side (224 / 256).

    Returns:
        int32 tensor `[offset_y, offset_x, side, side]`.
    """
    height, width = image_shape[0], image_shape[1]
    side = tf.cast(
        tf.round(tf.cast(tf.minimum(height, width), tf.float32) * crop_fraction), tf.int32
    )
    side = tf.maximum(side, 1)
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def crop_to_window(image, window):
    """Crops an image to a `[offset_y, offset_x, height, width]` window, as one `tf.slice`."""
    crop = tf.slice(image, tf.concat([window[:2], [0]], 0), tf.concat([window[2:], [-1]], 0))
    crop.set_shape([None, None, image.shape[-1]])  # the slice's size hides the channels
    return crop


def resize(image, image_size, interpolation="bicubic", antialias=False, scaled=True):
    """Resizes a crop to `image_size` x `image_size`; returns float32 in [0, 1].

    Args:
        image: uint8 (0..255) or float (0..1) image of shape (height, width, channels).
        image_size: the output side.
        interpolation: one of `INTERPOLATIONS`.
        antialias: low-pass filter when shrinking, as PIL's resize does.
        scaled: False: leave the values as `tf.image.resize` gives them, in the input's range and
            not clipped (cubic filters overshoot), for a caller that scales and clips them itself
            (`opencv_photometric`: `input_scale(image.dtype)`, then clip to [0, 1]).

    Returns:
        float32 tensor of shape (image_size, image_size, channels).
    """
    resized = tf.image.resize(image, [image_size, image_size], interpolation, antialias=antialias)
    if not scaled:
        return resized
    return tf.clip_by_value(resized * input_scale(image.dtype), 0.0, 1.0)


def input_scale(dtype):
    """What maps images of `dtype` to [0, 1]: 1 / 255 for uint8, 1 for floats."""
    return 1.0 / 255.0 if dtype == tf.uint8 else 1.0


def to_uint8(image):
    """Float images in [0, 1] as uint8 0..255, rounded to the nearest: resized crops as PIL's
    resize leaves them (the released code's), and a quarter of the bytes to move to a device."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)


def convert_channels(image, channels):
    """Converts channels-last images with 1, 3 or 4 (RGBA: alpha dropped) channels to 1 or 3.

    `image` is one image (height, width, channels) or a batch of them.
    """
    have = image.shape[-1]
    if have not in (1, 3, 4):
        raise ValueError(
            "Images must have a known number of channels: 1, 3 or 4. "
            f"Received: image.shape={image.shape}"
        )
    if have == 4:
        image = image[..., :3]
    if have == 1 and channels == 3:
        return tf.tile(image, [1] * (len(image.shape) - 1) + [3])
    if have != 1 and channels == 1:
        luma = tf.constant(presets.LUMA, image.dtype)
        return tf.tensordot(image, luma, axes=[[-1], [0]])[..., None]
    return image


def resize_crop(crop, view, scaled=True):
    """A crop at the view's size and channels, float32 in [0, 1]: the per-image part of a view.

    The rest of the view, `apply_view_params_batch`, runs on batches of these. `scaled`: see
    `resize`.
    """
    image = resize(crop, view.image_size, view.interpolation, view.antialias, scaled)
    return convert_channels(image, view.channels)


# The interpolations `resize_windows` computes as `tf.image.resize` does (without antialiasing).
BATCH_RESIZE_INTERPOLATIONS = ("bilinear", "bicubic")
# TensorFlow's bicubic resize reads its weights from a table of 1024 fractions of a pixel.
_BICUBIC_TABLE_SIZE = 1024


def _keys_cubic(distance):
    """The Keys cubic convolution kernel (a = -0.5) of TensorFlow's half-pixel bicubic resize."""
    x = tf.abs(distance)
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return tf.where(x <= 1.0, near, tf.where(x < 2.0, far, 0.0))


def _resize_matrices(offsets, lengths, in_size, out_size, interpolation):
    """(batch, out_size, in_size) matrices that resize each row's window of an axis.

    Row b maps the `in_size` pixels of an axis to `out_size` samples of its window
    `[offsets[b], offsets[b] + lengths[b])`, as `tf.image.resize` of the cropped window does:
    half-pixel centres, taps clamped to the window (bilinear) or outside it weighted 0 and the rest
    renormalised (bicubic, whose fractions are rounded to TensorFlow's table of 1/1024 pixel).
    """
    offsets = tf.cast(offsets, tf.float32)[:, None, None]
    lengths = tf.cast(lengths, tf.float32)[:, None, None]
    samples = tf.range(out_size, dtype=tf.float32)[None, :, None]
    position = (samples + 0.5) * lengths / out_size - 0.5  # in the window's coordinates
    base = tf.floor(position)
    fraction = position - base
    if interpolation == "bilinear":
        taps = tf.constant([0.0, 1.0])
        weights = tf.concat([1.0 - fraction, fraction], axis=-1)
        index = tf.clip_by_value(base + taps, 0.0, lengths - 1.0)
    else:
        fraction = tf.round(fraction * _BICUBIC_TABLE_SIZE) / _BICUBIC_TABLE_SIZE
        taps = tf.constant([-1.0, 0.0, 1.0, 2.0])
        index = base + taps
        inside = (index >= 0.0) & (index <= lengths - 1.0)
        weights = tf.where(inside, _keys_cubic(fraction - taps), 0.0)
        weights /= tf.reduce_sum(weights, axis=-1, keepdims=True)
        index = tf.clip_by_value(index, 0.0, lengths - 1.0)
    columns = tf.one_hot(tf.cast(offsets + index, tf.int32), in_size)  # (batch, out, taps, in)
    return tf.einsum("bot,boti->boi", weights, columns)


def resize_windows(images, windows, view):
    """The crops `windows` of a batch of same-size images, each resized as `resize_crop` does.

    One matrix product per axis resizes the whole batch (`_resize_matrices`), where cropping and
    resizing image by image costs a few ops per image: for small images (Fashion-MNIST, CIFAR) the
    ops, not the pixels, are the cost of a tf.data pipeline.

    Args:
        images: uint8 (0..255) or float (0..1) tensor (batch, height, width, channels).
        windows: int32 (batch, 4), `[offset_y, offset_x, crop_height, crop_width]` per image.
        view: a `ViewAugmentation` with an interpolation of `BATCH_RESIZE_INTERPOLATIONS` and
            without antialiasing.

    Returns:
        float32 (batch, image_size, image_size, view channels) in [0, 1]: equal, to float
        rounding, to `resize_crop(crop_to_window(image, window), view)` image by image.
    """
    if view.interpolation not in BATCH_RESIZE_INTERPOLATIONS or view.antialias:
        raise ValueError(
            "Batches are resized bilinearly or bicubically without antialiasing; resize other "
            "views image by image (`resize_crop`). Received: "
            f"interpolation={view.interpolation!r}, antialias={view.antialias}"
        )
    if len(images.shape) != 4 or None in images.shape[1:]:
        raise ValueError(
            "`images` must be a batch of images of one known size, (batch, height, width, "
            f"channels). Received: images.shape={images.shape}"
        )
    _, height, width, _ = images.shape
    size = view.image_size
    rows = _resize_matrices(windows[:, 0], windows[:, 2], height, size, view.interpolation)
    columns = _resize_matrices(windows[:, 1], windows[:, 3], width, size, view.interpolation)
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0
    pixels = tf.cast(images, tf.float32)
    resized = tf.einsum("bswc,btw->bstc", tf.einsum("bsh,bhwc->bswc", rows, pixels), columns)
    return convert_channels(tf.clip_by_value(resized * scale, 0.0, 1.0), view.channels)
