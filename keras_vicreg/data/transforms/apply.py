"""Applying a view: a random resized crop, then flip, jitter, grayscale, blur, solarize, normalise.

`augment_view` and `two_views` make one image's views from a seed, `apply_view_params_batch` the
photometric half of a view for a batch (each image its own `ViewParams`), and `batch_two_views` both
views of a batch of same-size images from one seed. Everything after the resize runs on batches,
each image with its own choices, as a few ops on the whole batch: for small images tf.data's cost
is the number of ops, not their size. The costly steps that only some images take (the hue shift,
a blur of probability < 1) run on the gathered images that take them; a batch of one
(`apply_view_params`) branches instead.
"""

import functools

import tensorflow as tf

from keras_vicreg.data.transforms import blur
from keras_vicreg.data.transforms import colour
from keras_vicreg.data.transforms import draws
from keras_vicreg.data.transforms import geometry
from keras_vicreg.data.transforms import planes as planes_lib
from keras_vicreg.data.transforms import presets


def apply_view_params_batch(images, params, view):
    """Applies a view's flip, jitter, grayscale, blur, solarize and normalise to a batch.

    Each image takes its own choices. Cheap steps (flip, grayscale, solarize) are computed for the
    batch and selected per image; the hue shift and a blur of probability < 1 run on the images
    that take them.

    Args:
        images: float32 (batch, image_size, image_size, channels) in [0, 1], from `resize_crop`.
        params: the batch's `ViewParams`: tensors with a leading batch axis.
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of the images' shape, normalised.
    """
    if tuple(images.shape[1:]) != presets.view_shape(view):
        raise ValueError(
            f"`images` must be resized crops of shape (batch,) + {presets.view_shape(view)}. "
            f"Received: images.shape={images.shape}"
        )
    planes = tf.transpose(images, [3, 0, 1, 2])
    if view.flip_prob > 0:
        planes = planes_lib.select_images(params.flip, tf.reverse(planes, [3]), planes)
    if view.jitter_prob > 0:
        planes = colour.color_jitter(
            planes,
            params.jitter_factors,
            params.jitter_order,
            hue=view.hue > 0,
            apply=params.jitter,
        )
    if view.grayscale_prob > 0:
        planes = planes_lib.select_images(params.grayscale, colour.to_grayscale(planes), planes)
    if view.blur_prob > 0:
        blur_fn = functools.partial(blur.gaussian_blur, kernel_size=view.blur_kernel_size)
        if view.blur_prob < 1:
            planes = planes_lib.apply_where(params.blur, blur_fn, planes, params.blur_sigma)
        else:
            planes = blur_fn(planes, params.blur_sigma)
    if view.solarize_prob > 0:
        # 2: nothing inverted
        threshold = tf.where(params.solarize, presets.SOLARIZE_THRESHOLD, 2.0)
        planes = colour.solarize(planes, planes_lib.per_image(threshold))
    return tf.transpose(colour.normalize(planes, view.mean, view.std), [1, 2, 3, 0])


def apply_view_params(crop, params, view):
    """Resizes a crop and applies a view's flip, jitter, grayscale, blur, solarize and normalise.

    `resize_crop`, then `apply_view_params_batch` on a batch of one.

    Args:
        crop: the cropped image, channels last, uint8 or float in [0, 1], with 1, 3 or 4 channels
            (converted to the view's channels).
        params: the view's `ViewParams` (`draws.sample_view_params`).
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of shape (image_size, image_size, channels), normalised.
    """
    batch = tf.nest.map_structure(lambda value: value[None], params)
    return apply_view_params_batch(geometry.resize_crop(crop, view)[None], batch, view)[0]


def augment_crop(crop, seed, view):
    """Augments an already cropped image (`seed` is the second half of `split_view_seed`)."""
    return apply_view_params(crop, draws.sample_view_params(seed, view), view)


def augment_view(image, seed, view):
    """One augmented view of a decoded image: random resized crop, then `apply_view_params`.

    Args:
        image: uint8 (0..255) or float (0..1) tensor of shape (height, width, channels), any size.
        seed: int tensor of shape (2,); the same seed gives the same view.
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of shape (image_size, image_size, channels), normalised.
    """
    crop_seed, params_seed = draws.split_view_seed(seed)
    window = geometry.sample_crop_window(
        tf.shape(image), crop_seed, view.crop_scale, view.crop_ratio
    )
    return augment_crop(geometry.crop_to_window(image, window), params_seed, view)


def two_views(image, seed, augmentation):
    """The pair (view a, view b) of one decoded image.

    Args:
        image: uint8 or float tensor of shape (height, width, channels).
        seed: int tensor of shape (2,).
        augmentation: a `TwoViewAugmentation` or a preset name.

    Returns:
        (view_a, view_b), each float32 of shape (image_size, image_size, channels).
    """
    augmentation = presets.get_augmentation(augmentation)
    seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return (
        augment_view(image, seed_a, augmentation.view_a),
        augment_view(image, seed_b, augmentation.view_b),
    )


def batch_two_views(images, seed, augmentation, photometric=True):
    """Both views of a batch of same-size images, every random choice drawn for the batch at once.

    The route of images held in memory (`keras_vicreg.data.two_view_dataset` of an array): crop
    windows, crops and resizes (`resize_windows`) and the other choices
    (`apply_view_params_batch`) are batch operations. The choices follow the same distributions as
    `two_views`, but they are drawn from the batch's seed, so the views are not those of
    `two_views` with per-image seeds.

    Args:
        images: uint8 or float tensor (batch, height, width, channels), one size.
        seed: int tensor of shape (2,), the batch's seed.
        augmentation: a `TwoViewAugmentation` or a preset name.
        photometric: False: stop after the crop and resize, for the photometric half on the
            accelerator (`keras_vicreg.models.PhotometricAugmentation`); the crops are the same.

    Returns:
        (view_a, view_b), each float32 (batch, image_size, image_size, channels), normalised; or
        without `photometric`, uint8 crops (`geometry.to_uint8`).
    """
    augmentation = presets.get_augmentation(augmentation)
    batch = tf.shape(images)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    views = []
    for view, crop_seed, params_seed in zip(
        (augmentation.view_a, augmentation.view_b), seeds[0::2], seeds[1::2]
    ):
        crop_draws = draws.sample_batch_crop_draws(crop_seed, batch)
        windows = geometry.crop_windows(
            tf.shape(images)[1:], crop_draws, [view.crop_scale], [view.crop_ratio]
        )
        resized = geometry.resize_windows(images, windows, view)
        if not photometric:
            views.append(geometry.to_uint8(resized))
            continue
        params = draws.sample_batch_view_params(params_seed, view, batch)
        views.append(apply_view_params_batch(resized, params, view))
    return tuple(views)
