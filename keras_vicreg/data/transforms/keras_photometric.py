"""The photometric half of a view in keras.ops: flip, jitter, grayscale, blur, solarize, normalise.

The same computation as `apply.apply_view_params_batch` (TensorFlow, for tf.data on the host),
written with `keras.ops` so that it runs on every backend inside a train step, on the accelerator
(`keras_vicreg.models.PhotometricAugmentation`): the host then only reads, decodes, crops and
resizes. Given the same `ViewParams`, the pixels agree with the TensorFlow path to float rounding
(tests/test_photometric.py); `view_params` maps uniforms to `ViewParams` as `draws` does.

Layout: images channels last, (batch, height, width, channels), float32 in [0, 1]. Where the host
path gathers the images that take a costly step (a hue shift, a blur of probability < 1) to spare
the others' CPU time, this path computes the step for the whole batch and selects per image: on an
accelerator gathers of data-dependent size cost more than the arithmetic, and JAX needs static
shapes.
"""

import keras
import numpy as np
from keras import ops

from keras_vicreg.data.transforms import draws
from keras_vicreg.data.transforms import presets

# Uniforms behind one view's photometric choices, with the same meaning as `draws`'.
VIEW_UNIFORMS = draws.VIEW_UNIFORMS
# The jitter's "operation" of an image it leaves unchanged (`colour._UNCHANGED`).
_UNCHANGED = 4


def view_params(uniforms, view):
    """`ViewParams` of uniforms (batch, `VIEW_UNIFORMS`) in [0, 1), as `draws._view_params`."""
    low, high = draws.jitter_bounds(view)
    low = ops.convert_to_tensor(np.array(low, np.float32))
    high = ops.convert_to_tensor(np.array(high, np.float32))
    sigma_low, sigma_high = view.blur_sigma
    return draws.ViewParams(
        flip=uniforms[:, 0] < view.flip_prob,
        jitter=uniforms[:, 1] < view.jitter_prob,
        jitter_factors=low + (high - low) * uniforms[:, 2:6],
        jitter_order=ops.cast(ops.argsort(uniforms[:, 6:10], axis=-1), "int32"),
        grayscale=uniforms[:, 10] < view.grayscale_prob,
        blur=uniforms[:, 11] < view.blur_prob,
        blur_sigma=sigma_low + (sigma_high - sigma_low) * uniforms[:, 12],
        solarize=uniforms[:, 13] < view.solarize_prob,
    )


def _per_image(values):
    """Per-image values (batch,) shaped to broadcast against images."""
    return values[:, None, None, None]


def _select_images(condition, x, y):
    return ops.where(_per_image(condition), x, y)


def luma(images):
    """The (batch, height, width) luma with PIL's weights (ITU-R 601-2)."""
    if images.shape[-1] == 1:
        return images[..., 0]
    weights = presets.LUMA
    return weights[0] * images[..., 0] + weights[1] * images[..., 1] + weights[2] * images[..., 2]


def adjust_color(images, op, factor):
    """`colour.adjust_color`: brightness (0), contrast (1), saturation (2) or none (3, 4)."""
    gray = luma(images)
    rest = 1.0 - factor
    zero = ops.zeros_like(factor)
    scale = ops.where(op < 3, factor, ops.ones_like(factor))
    gray_weight = ops.where(op == 2, rest, zero)
    offset = ops.where(op == 1, rest * ops.mean(gray, axis=(1, 2)), zero)
    shift = _per_image(gray_weight) * gray[..., None] + _per_image(offset)
    return ops.clip(_per_image(scale) * images + shift, 0.0, 1.0)


def adjust_hue(images, delta):
    """`colour.adjust_hue`: shifts the HSV hue by `delta` (batch,) turns, channels rebuilt."""
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    high = ops.maximum(ops.maximum(red, green), blue)
    chroma = high - ops.minimum(ops.minimum(red, green), blue)
    inverse = 1.0 / ops.maximum(chroma, 1e-12)
    hue = ops.where(
        high == red,
        (green - blue) * inverse,
        ops.where(high == green, (blue - red) * inverse + 2.0, (red - green) * inverse + 4.0),
    )
    hue = hue + 6.0 * delta[:, None, None]
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = hue + n
        k = k - 6.0 * ops.floor(k * (1.0 / 6.0))
        channels.append(high - chroma * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
    return ops.stack(channels, axis=-1)


def color_jitter(images, factors, order, hue, apply):
    """`colour.color_jitter`: the four operations in each image's own order.

    The hue shift is computed for every image at each step and kept where the step is the hue.
    """
    for step in range(4):
        op = ops.where(apply, order[:, step], _UNCHANGED)
        index = ops.minimum(op, 3)[:, None]
        factor = ops.take_along_axis(factors, index, axis=1)[:, 0]
        images = adjust_color(images, op, factor)
        if hue:
            images = _select_images(op == 3, adjust_hue(images, factor), images)
    return images


def gaussian_kernel(sigma, kernel_size):
    """`blur.gaussian_kernel`: normalised 1-D Gaussians (batch, kernel_size), one per sigma."""
    radius = kernel_size // 2
    x = ops.convert_to_tensor(np.arange(-radius, radius + 1, dtype=np.float32))
    kernel = ops.exp(-(x**2) / (2.0 * ops.cast(sigma, "float32")[:, None] ** 2))
    return kernel / ops.sum(kernel, axis=-1, keepdims=True)


def _placement(kernel_size, size):
    """(size * size, kernel_size) ones: which tap of a kernel lands on which matrix entry.

    The borders reflect (torchvision's and PIL's blur pad by reflection); taps that reflection
    sends to the same entry add up in the product with the kernels.
    """
    radius = kernel_size // 2
    rows = np.repeat(np.arange(size), kernel_size)
    taps = np.tile(np.arange(kernel_size), size)
    cols = np.abs(rows + taps - radius)
    cols = np.where(cols > size - 1, 2 * (size - 1) - cols, cols)
    placement = np.zeros([size * size, kernel_size], np.float32)
    np.add.at(placement, (rows * size + cols, taps), 1.0)
    return placement


def _blur_matrices(kernels, kernel_size, size):
    """(batch, size, size) banded matrices of the 1-D convolutions, as `blur._blur_matrices`."""
    placement = ops.convert_to_tensor(_placement(kernel_size, size))
    matrices = ops.matmul(placement, ops.transpose(kernels))  # (size * size, batch)
    return ops.transpose(ops.reshape(matrices, [size, size, -1]), [2, 0, 1])


def gaussian_blur(images, sigma, kernel_size):
    """`blur.gaussian_blur` on channels-last images: `V @ P @ H^T` per image and channel."""
    _, height, width, _ = images.shape
    kernels = gaussian_kernel(sigma, kernel_size)
    vertical = _blur_matrices(kernels, kernel_size, height)
    horizontal = vertical if width == height else _blur_matrices(kernels, kernel_size, width)
    images = ops.einsum("bih,bhwc->biwc", vertical, images)
    return ops.einsum("bjw,biwc->bijc", horizontal, images)


def to_float(images):
    """uint8 (0..255) images as float32 in [0, 1]; float ones cast to float32."""
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, "float32") * (1.0 / 255.0)
    return ops.cast(images, "float32")


def normalize(images, mean, std):
    """`(images - mean) / std` per channel (last axis)."""
    mean = ops.convert_to_tensor(np.array(mean, np.float32))
    inverse = ops.convert_to_tensor(np.array([1.0 / s for s in std], np.float32))
    return (images - mean) * inverse


def apply_view_params(images, params, view):
    """A view's flip, jitter, grayscale, blur, solarize and normalise on a batch, in keras.ops.

    Args:
        images: (batch, image_size, image_size, channels) uint8 (0..255) or float in [0, 1]: the
            resized crops of the host (`geometry.resize_crop`).
        params: the batch's `ViewParams` (tensors with a leading batch axis).
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of the images' shape, normalised: `apply.apply_view_params_batch` of the
        same images and `params`, to float rounding.
    """
    if tuple(images.shape[1:]) != presets.view_shape(view):
        raise ValueError(
            f"`images` must be resized crops of shape (batch,) + {presets.view_shape(view)}. "
            f"Received: images.shape={tuple(images.shape)}"
        )
    images = to_float(images)
    if view.flip_prob > 0:
        images = _select_images(params.flip, ops.flip(images, axis=2), images)
    if view.jitter_prob > 0:
        images = color_jitter(
            images, params.jitter_factors, params.jitter_order, view.hue > 0, params.jitter
        )
    if view.grayscale_prob > 0:
        gray = ops.broadcast_to(luma(images)[..., None], ops.shape(images))
        images = _select_images(params.grayscale, gray, images)
    if view.blur_prob > 0:
        blurred = gaussian_blur(images, params.blur_sigma, view.blur_kernel_size)
        images = blurred if view.blur_prob >= 1 else _select_images(params.blur, blurred, images)
    if view.solarize_prob > 0:
        inverted = (images >= presets.SOLARIZE_THRESHOLD) & _per_image(params.solarize)
        images = ops.where(inverted, 1.0 - images, images)
    return normalize(images, view.mean, view.std)

