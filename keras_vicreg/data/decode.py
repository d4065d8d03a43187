"""Decoding encoded images with their crops.

One crop of a JPEG is decoded with its window (`tf.image.decode_and_crop_jpeg`, the window chosen
from the JPEG's header, `tf.image.extract_jpeg_shape`), so that the pixels outside it are never
decoded; the two views of a pretraining pair share one whole decode (`decode_view_crops`). Any
other format `tf.io.decode_image` reads (PNG, GIF, BMP, WebP) is decoded whole, then cropped: the
same crop as of the decoded image.

Given a pixel budget, the size the header declares is checked first (`image_headers`), so that an
image over the budget fails before a decoder allocates it, and the pipeline skips it.
"""

import tensorflow as tf

from keras_vicreg.data import image_headers
from keras_vicreg.data import transforms


def decode_and_crop(data, window_fn, channels, max_pixels=None):
    """Decodes an encoded image and crops it to the window `window_fn(shape)` chooses.

    A JPEG is decoded and cropped in one step (`tf.image.decode_and_crop_jpeg`, the window chosen
    from the header's shape), so that the pixels outside the crop are never decoded; any other
    format `tf.io.decode_image` reads (PNG, GIF, BMP, WebP) is decoded whole, then cropped.
    Grayscale and CMYK JPEGs come out with `channels` channels.

    Args:
        data: a scalar string tensor, the encoded image.
        window_fn: maps an image shape (height, width, channels) to an int32 window
            `[offset_y, offset_x, height, width]`.
        channels: 1 or 3.
        max_pixels: the pixel budget (`image_headers.budget_checks`); None: no check.

    Returns:
        uint8 tensor of shape (height, width, channels).
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        with tf.control_dependencies(image_headers.budget_checks(shape[0], shape[1], max_pixels)):
            return tf.image.decode_and_crop_jpeg(data, window_fn(shape), channels=channels)

    def other():
        with tf.control_dependencies(_other_checks(data, max_pixels)):
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return transforms.crop_to_window(image, window_fn(tf.shape(image)))

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def _other_checks(data, max_pixels):
    if max_pixels is None:  # no header parsed
        return []
    height, width, known = image_headers.other_size(data)
    return image_headers.budget_checks(height, width, max_pixels, known)


def decode_view_crops(image, crop_seeds, views, max_pixels=None):
    """The crops of several views of an image, decoded once.

    With two views or more, a JPEG is decoded whole once and cropped per view: decoding with a
    crop window (`tf.image.decode_and_crop_jpeg`) still reads the whole compressed stream up to
    the window's last row, so two windowed decodes of an ImageNet-size photo cost more than one
    whole decode (docs/performance.md), and the crops are exactly those of the decoded image. A
    single view keeps the windowed decode. Only the decoding branches on the format (control flow
    inside tf.data functions is costly); the crop windows are drawn in one vectorised computation.

    Args:
        image: a scalar string tensor (encoded image), or a decoded image tensor.
        crop_seeds: one seed of shape (2,) per view, that of its crop window.
        views: the `ViewAugmentation`s, one per seed.
        max_pixels: the pixel budget of an encoded image (`image_headers.budget_checks`), checked
            from its header before it is decoded; None: no check.

    Returns:
        The list of crops, uint8 or the image's dtype, channels last.
    """
    draws = transforms.sample_crop_draws(crop_seeds)

    def windows(shape):
        scales, ratios = [v.crop_scale for v in views], [v.crop_ratio for v in views]
        return tf.unstack(transforms.crop_windows(shape, draws, scales, ratios))

    def crops_of(decoded):
        return [transforms.crop_to_window(decoded, window) for window in windows(tf.shape(decoded))]

    if image.dtype != tf.string:
        return crops_of(image)
    channels = views[0].channels

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image)
        with tf.control_dependencies(image_headers.budget_checks(shape[0], shape[1], max_pixels)):
            if len(views) > 1:
                return crops_of(tf.image.decode_jpeg(image, channels=channels))
            return [tf.image.decode_and_crop_jpeg(image, windows(shape)[0], channels=channels)]

    def other():
        with tf.control_dependencies(_other_checks(image, max_pixels)):
            decoded = tf.io.decode_image(image, channels=channels, expand_animations=False)
        return crops_of(decoded)

    return tf.cond(tf.io.is_jpeg(image), jpeg, other)
