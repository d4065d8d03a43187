"""The photometric half of large views with OpenCV: the host's fast path at 224 pixels.

The same computation as `apply.apply_view_params_batch` (flip, colour jitter in each image's own
order, grayscale, blur, solarize, normalise) for the same `ViewParams`, pixel for pixel to float
rounding (tests/test_opencv_photometric.py), in float32 as there. Why OpenCV: at 224 pixels a
TensorFlow op in a tf.data map is a pass over the image that costs several times OpenCV's
vectorised kernel for the same pass, and a jitter step is several ops; here a jitter step is one
OpenCV pass (a scalar blend, or `cv2.transform`'s colour matrix) and a clip, and the blur one
separable filter of the same taps (`cv2.sepFilter2D`, reflected borders) instead of two dense
matrix products. Written by hand: no library has torchvision's jitter on float images with an
order per image. The measurements are in docs/performance.md.

The choices still come from TensorFlow's stateless draws (`draws.sample_view_uniforms`, mapped by
`view_params` as `draws` maps them), so a seed gives the same views whichever kernels run. A batch
crosses into NumPy once, both views in one `tf.numpy_function` call: each OpenCV call hands
Python's lock back, and long calls share two threads better than an image's worth of short ones.
Without OpenCV (`available()` False) the pipeline keeps TensorFlow's ops.
"""

import functools
import threading
import typing

import numpy as np
import tensorflow as tf

from keras_vicreg.data.transforms import draws
from keras_vicreg.data.transforms import presets

# OpenCV, imported on first use (`available`): its import starts a thread pool, which processes
# that never build a large-view pipeline have no use for.
cv2 = None

_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
# Blur taps below this are 0 (`gaussian_kernel`).
_SMALLEST_TAP = np.float32(1e-9)


def available():
    """Whether OpenCV imports here (the `opencv-python-headless` dependency); imports it."""
    global cv2
    if cv2 is None:
        try:
            import cv2 as module
        except ImportError:  # the pipeline falls back to TensorFlow's ops
            return False
        cv2 = module
    return True


class _ViewConstants(typing.NamedTuple):
    """What `view_params` and `apply_view` derive from a view alone, once per view."""

    jitter_low: np.ndarray
    jitter_range: np.ndarray
    sigma_low: np.float32
    sigma_range: np.float32
    luma: np.ndarray
    mean: tuple
    inverse_std: tuple


@functools.lru_cache(maxsize=None)
def _constants(view):
    low, high = (np.array(bounds, np.float32) for bounds in draws.jitter_bounds(view))
    sigma_low, sigma_high = view.blur_sigma
    return _ViewConstants(
        jitter_low=low,
        jitter_range=high - low,
        sigma_low=np.float32(sigma_low),
        sigma_range=np.float32(sigma_high - sigma_low),
        luma=np.array(presets.LUMA if view.channels == 3 else (1.0,), np.float32),
        mean=_scalar(view.mean),
        inverse_std=_scalar([np.float32(1.0 / s) for s in view.std]),
    )


def _scalar(values):
    """Per-channel values as OpenCV's 4-tuple scalar. A bare number would reach the first channel
    only: OpenCV reads it as (number, 0, 0, 0)."""
    values = [float(np.float32(v)) for v in values]
    return tuple(values) + (0.0,) * (4 - len(values))


@functools.lru_cache(maxsize=None)
def _uniform_scalar(value, channels):
    return _scalar([value] * channels)


def view_params(uniforms, view):
    """`draws.ViewParams` of one view's uniforms (`draws.VIEW_UNIFORMS`,), in NumPy.

    The same float32 arithmetic as `draws.sample_view_params`, so the same values bit for bit
    (tests/test_opencv_photometric.py): the pipeline draws only the uniforms in TensorFlow, one op
    per view instead of a dozen.
    """
    constants = _constants(view)
    return draws.ViewParams(
        flip=uniforms[0] < view.flip_prob,
        jitter=uniforms[1] < view.jitter_prob,
        jitter_factors=constants.jitter_low + constants.jitter_range * uniforms[2:6],
        jitter_order=np.argsort(uniforms[6:10], kind="stable"),
        grayscale=uniforms[10] < view.grayscale_prob,
        blur=uniforms[11] < view.blur_prob,
        blur_sigma=constants.sigma_low + constants.sigma_range * uniforms[12],
        solarize=uniforms[13] < view.solarize_prob,
    )


def gaussian_kernel(sigma, kernel_size):
    """The normalised 1-D Gaussian of `blur.gaussian_kernel`, in NumPy float32.

    The outer taps under `_SMALLEST_TAP` are left out, a shorter kernel of the same centre: fewer
    products per pixel, and none that would be a subnormal float (which CPUs compute up to 100
    times slower: a blur of sigma 0.1 took 4x as long with them). The taps left out sum to under
    2.3e-8 of a pixel's value, less than half a float32 step at 1, so a pixel changes by a rounding
    at most.
    """
    radius = kernel_size // 2
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (np.float32(2.0) * np.float32(sigma) ** 2))
    kernel = kernel / np.sum(kernel, dtype=np.float32)
    kept = np.flatnonzero(kernel >= _SMALLEST_TAP)
    outer = min(kept[0], kernel_size - 1 - kept[-1])  # symmetric: the same count each side
    return kernel[outer : kernel_size - outer]


class _Planes:
    """The image being augmented and a scratch array of its size: a step that is faster out of
    place writes to the other one, and they swap. OpenCV's images of one channel are 2-D."""

    def __init__(self, out, scratch):
        self.image, self.other = out, scratch

    def swap(self):
        self.image, self.other = self.other, self.image

    def clip(self, low=True):
        """Clips to [0, 1] in place (the upper bound only where nothing can go below 0)."""
        cv2.threshold(self.image, 1.0, 1.0, cv2.THRESH_TRUNC, dst=self.image)
        if low:
            cv2.threshold(self.image, 0.0, 0.0, cv2.THRESH_TOZERO, dst=self.image)


def _colour_step(planes, op, factor, constants, channels):
    """One step of torchvision's jitter (brightness, contrast or saturation), as in `colour`:
    brightness `f P`, contrast `f P + (1 - f) m` (m the mean luma), saturation `f P + (1 - f) L`
    (L the luma image), each clipped to [0, 1].

    With f <= 1 each is a blend of values in [0, 1], in [0, 1] already (to a rounding), so the clip
    is left out there."""
    image, rest = planes.image, np.float32(1.0) - factor
    if op == _BRIGHTNESS:
        cv2.multiply(image, _scalar([factor] * channels), dst=image)  # exact: float products
    elif op == _CONTRAST:
        mean_luma = np.dot(constants.luma, np.array(cv2.mean(image)[:channels], np.float32))
        cv2.addWeighted(image, float(factor), image, 0.0, float(rest * mean_luma), dst=image)
    else:
        matrix = factor * np.eye(channels, dtype=np.float32) + rest * constants.luma[None, :]
        cv2.transform(image, matrix, dst=planes.other)
        planes.swap()
    if factor > 1.0:
        planes.clip(low=op != _BRIGHTNESS)


def _hue_step(planes, delta):
    """torchvision's hue shift by `delta` turns, through HSV (hue in degrees): the shift is taken
    modulo a turn, since OpenCV wraps hues of 360 degrees and more but not negative ones."""
    cv2.cvtColor(planes.image, cv2.COLOR_RGB2HSV, dst=planes.other)
    cv2.add(planes.other, (360.0 * (float(delta) % 1.0), 0.0, 0.0, 0.0), dst=planes.other)
    cv2.cvtColor(planes.other, cv2.COLOR_HSV2RGB, dst=planes.image)


def _grayscale(planes):
    luma = planes.other.reshape(-1)[: planes.image.size // 3].reshape(planes.image.shape[:2])
    cv2.cvtColor(planes.image, cv2.COLOR_RGB2GRAY, dst=luma)
    cv2.cvtColor(luma, cv2.COLOR_GRAY2RGB, dst=planes.image)


def _solarize(planes):
    """Inverts the values >= `presets.SOLARIZE_THRESHOLD`: `x - 2 [x >= t] x + [x >= t]`, which
    is `x` or rounds to `1 - x` as `colour.solarize` does (`x - 2x` is exact)."""
    below = float(np.nextafter(np.float32(presets.SOLARIZE_THRESHOLD), np.float32(0.0)))
    image, chosen = planes.image, planes.other
    cv2.threshold(image, below, 0.0, cv2.THRESH_TOZERO, dst=chosen)  # [x >= t] x
    cv2.addWeighted(image, 1.0, chosen, -2.0, 0.0, dst=image)
    cv2.threshold(chosen, 0.0, 1.0, cv2.THRESH_BINARY, dst=chosen)  # [x >= t]
    cv2.add(image, chosen, dst=image)


def apply_view(image, params, view, out=None, input_scale=1.0, scratch=None):
    """The photometric half of one view of one image.

    Each step runs in place or into a scratch array, never a new array: fresh memory per step
    would cost more than most steps do.

    Args:
        image: float32 NumPy array (height, width, channels), a resized crop, in [0, 1] once
            multiplied by `input_scale` and clipped (as `geometry.resize` would have).
        params: the view's `draws.ViewParams` (`view_params`).
        view: a `ViewAugmentation`.
        out: a C-contiguous float32 array of the image's shape to write the view to, or None.
        input_scale: see `image`; 1 / 255 for the resize of a uint8 crop.
        scratch: a C-contiguous float32 array of the image's shape that the steps may overwrite,
            or None.

    Returns:
        `out` (or a new array), the view, normalised.
    """
    if not available():
        raise ImportError("OpenCV's kernels need `pip install opencv-python-headless`.")
    channels = image.shape[-1]
    out = np.empty(image.shape, np.float32) if out is None else out
    scratch = np.empty(image.shape, np.float32) if scratch is None else scratch
    result, source = (out, image) if channels > 1 else (out[..., 0], image[..., 0])
    planes = _Planes(result, scratch if channels > 1 else scratch[..., 0])
    constants = _constants(view)
    if view.flip_prob > 0 and params.flip:
        source = cv2.flip(source, 1, dst=planes.other)
    cv2.multiply(source, _uniform_scalar(input_scale, channels), dst=planes.image)
    planes.clip()
    if view.jitter_prob > 0 and params.jitter:
        for step in params.jitter_order:
            factor = params.jitter_factors[step]
            if step != _HUE:
                _colour_step(planes, step, factor, constants, channels)
            elif view.hue > 0 and channels == 3:
                _hue_step(planes, factor)
    if view.grayscale_prob > 0 and params.grayscale and channels == 3:
        _grayscale(planes)
    if view.blur_prob > 0 and params.blur:
        kernel = gaussian_kernel(params.blur_sigma, view.blur_kernel_size)
        cv2.sepFilter2D(planes.image, -1, kernel, kernel, dst=planes.other,
                        borderType=cv2.BORDER_REFLECT_101)
        planes.swap()
    if view.solarize_prob > 0 and params.solarize:
        _solarize(planes)
    cv2.subtract(planes.image, constants.mean, dst=result)
    cv2.multiply(result, constants.inverse_std, dst=result)
    return out


_THREAD_STATE = threading.local()


def _scratch(shape):
    """This thread's scratch array of `shape`, kept from call to call: the first writes to fresh
    memory fault its pages in, which cost a fifth of a view's steps (tf.data calls the pipeline's
    Python from its own threads, so one array per thread)."""
    arrays = getattr(_THREAD_STATE, "scratch", None)
    if arrays is None:
        arrays = _THREAD_STATE.scratch = {}
    if shape not in arrays:
        arrays[shape] = np.empty(shape, np.float32)
    return arrays[shape]


def _apply_batch(images, uniforms, view, input_scale):
    out = np.empty(images.shape, np.float32)
    scratch = _scratch(images.shape[1:])
    for image, image_uniforms, view_out in zip(images, uniforms, out):
        params = view_params(image_uniforms, view)
        apply_view(image, params, view, view_out, input_scale, scratch)
    return out


def apply_two_views(image_a, uniforms_a, image_b, uniforms_b, augmentation, input_scale=1.0):
    """`apply.apply_view_params_batch` of both views with OpenCV, in one `tf.numpy_function`.

    Args:
        image_a, image_b: float32 (batch, size, size, channels), resized crops: in [0, 1], or
            as `geometry.resize(..., scaled=False)` leaves them with their `input_scale`.
        uniforms_a, uniforms_b: float32 (batch, `draws.VIEW_UNIFORMS`), their draws
            (`draws.sample_view_uniforms`).
        augmentation: the `TwoViewAugmentation`.
        input_scale: what maps the images to [0, 1] before they are clipped to it.

    Returns:
        (view_a, view_b), float32 of the images' shapes, normalised.
    """
    if not available():
        raise ImportError("OpenCV's kernels need `pip install opencv-python-headless`.")
    views = (augmentation.view_a, augmentation.view_b)
    # tf.data's threads are the parallelism: OpenCV's own pool beside them only costs CPU time
    # (a fifth more per image here, docs/performance.md). This sets it for the whole process.
    cv2.setNumThreads(1)

    def both(images_a, rows_a, images_b, rows_b):
        return (_apply_batch(images_a, rows_a, views[0], input_scale),
                _apply_batch(images_b, rows_b, views[1], input_scale))

    inputs = [image_a, uniforms_a, image_b, uniforms_b]
    view_a, view_b = tf.numpy_function(both, inputs, [tf.float32, tf.float32], stateful=False)
    view_a.set_shape(image_a.shape)
    view_b.set_shape(image_b.shape)
    return view_a, view_b
