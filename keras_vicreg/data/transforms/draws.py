"""The random draws of a view, by name: its crop window's and those of every other choice.

Every random choice of a view is a stateless function of a seed of shape (2,), so that a view is a
pure function of (image, seed) and a pipeline yields the same batches whatever its parallelism. The
draws are named structures, `CropDraws` and `ViewParams`, so that the code that draws them (here)
and the code that uses them (`geometry.crop_windows`, `apply.apply_view_params_batch`) share field
names, not positions in a vector of uniforms. The positions live in this module only: they fix
which uniform of a seed's stream feeds which choice, so they must not change, or the same seed
would give other views.

Each structure comes one view at a time (`sample_crop_draws`, `sample_view_params`: the per-image
pipelines, one seed per image) or a batch at a time from one seed (`sample_batch_crop_draws`,
`sample_batch_view_params`: `apply.batch_two_views`, where drawing per image would cost ops per
image). A batch's draws have the same distributions as an image's, from another stream.
"""

import typing

import tensorflow as tf

# The uniforms behind one crop window: 10 candidate areas, 10 candidate aspect ratios (torchvision's
# 10 tries), 2 offsets (y, x).
_CROP_UNIFORMS = 22
_CROP_FIELDS = {"area": (0, 10), "log_ratio": (10, 20), "offset": (20, 22)}
# The uniforms behind the other choices of one view; `_view_params` gives each its meaning.
VIEW_UNIFORMS = 14


class CropDraws(typing.NamedTuple):
    """Uniforms in [0, 1) behind crop windows, one row per window (leading axes alike).

    Attributes:
        area: float32 (..., 10): the candidates' areas, within the view's `crop_scale`.
        log_ratio: float32 (..., 10): the candidates' log aspect ratios, within `crop_ratio`.
        offset: float32 (..., 2): where the window lies in the free space, (y, x).
    """

    area: tf.Tensor
    log_ratio: tf.Tensor
    offset: tf.Tensor


class ViewParams(typing.NamedTuple):
    """Every random choice of a view but its crop window (leading axes: images, or none).

    Attributes:
        flip: bool, flip horizontally.
        jitter: bool, apply the colour jitter.
        jitter_factors: float32 (..., 4): brightness, contrast and saturation factors and the hue
            shift (in turns); a factor of 1 (a shift of 0) leaves an image as it is.
        jitter_order: int32 (..., 4): the jitter's order, a permutation of 0..3 (indices into
            `jitter_factors`).
        grayscale: bool, convert to grayscale.
        blur: bool, blur.
        blur_sigma: float32, the blur's standard deviation in pixels.
        solarize: bool, solarize.
    """

    flip: tf.Tensor
    jitter: tf.Tensor
    jitter_factors: tf.Tensor
    jitter_order: tf.Tensor
    grayscale: tf.Tensor
    blur: tf.Tensor
    blur_sigma: tf.Tensor
    solarize: tf.Tensor


def _crop_draws(uniforms):
    return CropDraws(**{name: uniforms[..., a:b] for name, (a, b) in _CROP_FIELDS.items()})


def sample_crop_draws(seeds):
    """The `CropDraws` of one window per seed, stacked: the crops of several views of one image.

    Args:
        seeds: a list of int tensors of shape (2,).

    Returns:
        `CropDraws` with a leading axis of `len(seeds)`.
    """
    uniforms = [tf.random.stateless_uniform([_CROP_UNIFORMS], seed) for seed in seeds]
    return _crop_draws(tf.stack(uniforms))


def sample_batch_crop_draws(seed, count):
    """The `CropDraws` of `count` windows from one seed (the windows of a batch of images)."""
    return _crop_draws(tf.random.stateless_uniform([count, _CROP_UNIFORMS], seed))


def jitter_bounds(view):
    """(low, high): the ranges of the jitter's brightness, contrast and saturation factors and hue
    shift, as lists of 4 numbers; every mapping of uniforms to `ViewParams` reads them here."""
    low = [max(0.0, 1.0 - s) for s in (view.brightness, view.contrast, view.saturation)]
    low.append(-view.hue)
    high = [1.0 + view.brightness, 1.0 + view.contrast, 1.0 + view.saturation, view.hue]
    return low, high


def _view_params(uniforms, view):
    """`ViewParams` of uniforms (..., `VIEW_UNIFORMS`) under a `ViewAugmentation`."""
    low, high = (tf.constant(bounds) for bounds in jitter_bounds(view))
    sigma_low, sigma_high = view.blur_sigma
    return ViewParams(
        flip=uniforms[..., 0] < view.flip_prob,
        jitter=uniforms[..., 1] < view.jitter_prob,
        jitter_factors=low + (high - low) * uniforms[..., 2:6],
        jitter_order=tf.argsort(uniforms[..., 6:10]),
        grayscale=uniforms[..., 10] < view.grayscale_prob,
        blur=uniforms[..., 11] < view.blur_prob,
        blur_sigma=sigma_low + (sigma_high - sigma_low) * uniforms[..., 12],
        solarize=uniforms[..., 13] < view.solarize_prob,
    )


def sample_view_uniforms(seed):
    """The uniforms (`VIEW_UNIFORMS`,) behind `sample_view_params(seed, view)`, for code that maps
    them to `ViewParams` itself (`opencv_photometric.view_params`)."""
    return tf.random.stateless_uniform([VIEW_UNIFORMS], seed)


def sample_view_params(seed, view):
    """Draws every random choice of one view except its crop window.

    Args:
        seed: int tensor of shape (2,).
        view: a `ViewAugmentation`.

    Returns:
        `ViewParams` of scalars (vectors of 4 for the jitter's factors and order).
    """
    return _view_params(sample_view_uniforms(seed), view)


def sample_batch_view_params(seed, view, count):
    """`ViewParams` of `count` images from one seed, each image with its own choices."""
    return _view_params(tf.random.stateless_uniform([count, VIEW_UNIFORMS], seed), view)


def fixed_view_params(view, count):
    """`ViewParams` of `count` images for a view that draws nothing (every probability 0 or 1).

    Such a view's choices do not depend on the uniforms; those of 0 give them without a draw.
    """
    return _view_params(tf.zeros([count, VIEW_UNIFORMS]), view)


def stack_draws(draws):
    """Stacks a list of `CropDraws` or `ViewParams` along a new leading axis."""
    return tf.nest.map_structure(lambda *parts: tf.stack(parts), *draws)


def split_view_seed(seed):
    """Splits a view's seed into (crop seed, seed of the other choices)."""
    crop_seed, params_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return crop_seed, params_seed
