"""Decoding encoded images with their crop: a JPEG decodes only the pixels of its crop window.

`tf.image.decode_and_crop_jpeg` decodes a window chosen from the JPEG's header
(`tf.image.extract_jpeg_shape`), so that the pixels outside a random crop, most of an ImageNet
photo at crop scale 0.08, are never decoded. Any other format `tf.io.decode_image` reads (PNG, GIF,
BMP, WebP) is decoded whole, then cropped: the same crop as of the decoded image.

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
    """The crops of several views of an image, a JPEG decoded per view with its crop only.

    Only the decoding branches on the format (control flow inside tf.data functions is costly,
    nested control flow more so); the crop windows are drawn in one vectorised computation.

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

    if image.dtype != tf.string:
        return [transforms.crop_to_window(image, window) for window in windows(tf.shape(image))]

    def fused():
        shape = tf.image.extract_jpeg_shape(image)
        with tf.control_dependencies(image_headers.budget_checks(shape[0], shape[1], max_pixels)):
            return [
                tf.image.decode_and_crop_jpeg(image, window, channels=view.channels)
                for window, view in zip(windows(shape), views)
            ]

    def decode_once():
        with tf.control_dependencies(_other_checks(image, max_pixels)):
            decoded = tf.io.decode_image(
                image, channels=views[0].channels, expand_animations=False
            )
        return [transforms.crop_to_window(decoded, window) for window in windows(tf.shape(decoded))]

    return tf.cond(tf.io.is_jpeg(image), fused, decode_once)
