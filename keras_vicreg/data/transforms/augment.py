"""VICReg's two asymmetric augmented views, as presets (data) and small pure TensorFlow functions.

Bardes, Ponce and LeCun, "VICReg", ICLR 2022, appendix C; the views follow BYOL (Grill et al.):

    | transform                                                  | view a  | view b  |
    |------------------------------------------------------------|---------|---------|
    | random resized crop: scale (0.08, 1), ratio (3/4, 4/3), bicubic | always | always |
    | horizontal flip                                            | p = 0.5 | p = 0.5 |
    | colour jitter: brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 | 0.8 | 0.8 |
    | grayscale                                                  | p = 0.2 | p = 0.2 |
    | Gaussian blur, sigma ~ U[0.1, 2.0]                         | p = 1.0 | p = 0.1 |
    | solarization (invert pixels >= 128 of 255)                 | p = 0.0 | p = 0.2 |
    | normalise with ImageNet's mean and std                     | always  | always  |

The semantics are torchvision's, which the released code used: the crop window is sampled as
`RandomResizedCrop` does (10 tries, then a central crop); the colour jitter applies its four
operations in a random order drawn per image, as torchvision's `ColorJitter` does, with
torchvision's definitions (brightness scales, contrast blends with the mean luma, saturation blends
with the luma image, hue shifts the HSV hue). The Gaussian blur's kernel is about 10% of the image
side (23 taps at 224), as in BYOL and SimCLR. One difference by default: the bicubic resize is not
antialiased, as in BYOL's and SimCLR's TensorFlow pipelines (`tf.image.resize`); the released
code's PIL resize is, which `antialias=True` reproduces at about 1 ms more per view.

Every random choice is a stateless function of a seed of shape (2,), so that a view is a pure
function of (image, seed): `sample_view_params` draws the choices, `apply_view_params` applies them.
Images are channels last, (height, width, channels), uint8 or float32 in [0, 1].

Everything after the resize runs on batches (`apply_view_params_batch`), each image with its own
choices, as a few ops on the whole batch: for small images tf.data's cost is the number of ops,
not their size. Choices that change a step's formula select per image (the jitter's random order
looks up one affine formula's coefficients), and the costly steps that only some images take (the
hue shift, a blur of probability < 1) run on the gathered images that take them; a batch of one
(`apply_view_params`) branches instead. The operations take planes (channels, batch, height,
width): TensorFlow's CPU kernels run elementwise work on contiguous planes faster than on
interleaved pixels, and a channel is a slice that copies nothing.
"""

import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fashion-MNIST's training set, for one-channel data.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# ITU-R 601-2 luma, as PIL's convert("L") and torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
INTERPOLATIONS = ("bicubic", "bilinear", "area", "nearest")
# Solarization inverts the pixels >= 128 of 255 (PIL's ImageOps.solarize default).
SOLARIZE_THRESHOLD = 128.0 / 255.0


def _check_range(name, value, low, high=None):
    valid = isinstance(value, (tuple, list)) and len(value) == 2 and low < value[0] <= value[1]
    if not valid or (high is not None and value[1] > high):
        bounds = f"{low} < min <= max" + ("" if high is None else f" <= {high}")
        raise ValueError(
            f"`{name}` must be a pair (min, max) with {bounds}. Received: {name}={value}"
        )


@dataclasses.dataclass(frozen=True)
class ViewAugmentation:
    """The augmentation of one view: every number of one column of VICReg's table.

    Args:
        image_size: side of the square output, in pixels.
        crop_scale: range of the crop's area, as a fraction of the image's area.
        crop_ratio: range of the crop's aspect ratio (width / height).
        interpolation: resize method, one of `INTERPOLATIONS`.
        antialias: antialias the resize when it shrinks the crop, as PIL does (the released
            code); off by default, as in BYOL's and SimCLR's TensorFlow code, for speed.
        flip_prob: probability of a horizontal flip.
        jitter_prob: probability of applying the colour jitter.
        brightness, contrast, saturation: jitter strengths; each factor is drawn from
            U[max(0, 1 - s), 1 + s]. 0 turns the operation off.
        hue: hue jitter strength, the shift is drawn from U[-hue, hue] (of a full turn), <= 0.5.
        grayscale_prob: probability of converting to grayscale (kept as three equal channels).
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation, in pixels.
        blur_kernel_fraction: the blur kernel's side as a fraction of `image_size` (rounded to an
            odd number of taps, at least 3).
        solarize_prob: probability of solarization.
        mean, std: per-channel normalisation; their length is the number of output channels (1 or
            3).
    """

    image_size: int = 224
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    interpolation: str = "bicubic"
    antialias: bool = False
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: float = 0.0
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(
                f"`image_size` must be a positive int. Received: image_size={self.image_size}"
            )
        _check_range("crop_scale", self.crop_scale, 0.0, 1.0)
        _check_range("crop_ratio", self.crop_ratio, 0.0)
        _check_range("blur_sigma", self.blur_sigma, 0.0)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {INTERPOLATIONS}. "
                f"Received: interpolation={self.interpolation!r}"
            )
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
        for name in ("brightness", "contrast", "saturation", "blur_kernel_fraction"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"`hue` must be in [0, 0.5]. Received: hue={self.hue}")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            raise ValueError(
                "`mean` and `std` must both have 1 or 3 values (one per channel). "
                f"Received: mean={self.mean}, std={self.std}"
            )
        if min(self.std) <= 0:
            raise ValueError(f"`std` must be positive. Received: std={self.std}")
        if len(self.mean) == 1 and (self.saturation or self.hue or self.grayscale_prob):
            raise ValueError(
                "One-channel views have no saturation, hue or grayscale conversion; set them to 0. "
                f"Received: saturation={self.saturation}, hue={self.hue}, "
                f"grayscale_prob={self.grayscale_prob}"
            )

    @property
    def channels(self):
        """Number of output channels: 1 or 3."""
        return len(self.mean)

    @property
    def blur_kernel_size(self):
        """Odd number of taps of the Gaussian kernel: 23 at 224 pixels."""
        return 2 * max(1, int(self.blur_kernel_fraction * self.image_size) // 2) + 1


@dataclasses.dataclass(frozen=True)
class TwoViewAugmentation:
    """A named pair of view augmentations (view a, view b).

    Args:
        name: the preset's name.
        view_a: the first view's `ViewAugmentation`.
        view_b: the second view's `ViewAugmentation`; it must have the same size and channels.
    """

    name: str
    view_a: ViewAugmentation
    view_b: ViewAugmentation

    def __post_init__(self):
        a, b = self.view_a, self.view_b
        if (a.image_size, a.channels) != (b.image_size, b.channels):
            raise ValueError(
                "Both views must have the same image size and number of channels. "
                f"Received: view_a=({a.image_size}, {a.channels}), "
                f"view_b=({b.image_size}, {b.channels})"
            )

    def with_image_size(self, image_size):
        """Returns a copy whose views output `image_size` pixels (the blur kernel follows)."""
        return dataclasses.replace(
            self,
            view_a=dataclasses.replace(self.view_a, image_size=image_size),
            view_b=dataclasses.replace(self.view_b, image_size=image_size),
        )


def _small_view(**kwargs):
    # The small-scale settings of public VICReg reproductions (CIFAR at 32 pixels): crop scale
    # (0.2, 1.0), no blur, solarization 0.1, the same for both views.
    return ViewAugmentation(
        image_size=32, crop_scale=(0.2, 1.0), blur_prob=0.0, solarize_prob=0.1, **kwargs
    )


AUGMENTATIONS = {
    "imagenet": TwoViewAugmentation(
        name="imagenet",
        view_a=ViewAugmentation(blur_prob=1.0, solarize_prob=0.0),
        view_b=ViewAugmentation(blur_prob=0.1, solarize_prob=0.2),
    ),
    "small": TwoViewAugmentation(name="small", view_a=_small_view(), view_b=_small_view()),
    "grayscale": TwoViewAugmentation(
        name="grayscale",
        **{
            view: _small_view(
                saturation=0.0,
                hue=0.0,
                grayscale_prob=0.0,
                mean=FASHION_MNIST_MEAN,
                std=FASHION_MNIST_STD,
            )
            for view in ("view_a", "view_b")
        },
    ),
}


def get_augmentation(augmentation, image_size=None):
    """Returns a `TwoViewAugmentation` from a preset name or an instance.

    Args:
        augmentation: "imagenet" (224 pixels), "small" (32 pixels), "grayscale" (one channel,
            32 pixels) or a `TwoViewAugmentation`.
        image_size: if given, the output side in pixels (e.g. 96 for STL-10, 28 for Fashion-MNIST).

    Returns:
        The `TwoViewAugmentation`.
    """
    if isinstance(augmentation, str):
        if augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"Unknown augmentation preset; expected one of {sorted(AUGMENTATIONS)}. "
                f"Received: augmentation={augmentation!r}"
            )
        augmentation = AUGMENTATIONS[augmentation]
    if not isinstance(augmentation, TwoViewAugmentation):
        raise ValueError(
            "`augmentation` must be a preset name or a TwoViewAugmentation. "
            f"Received: augmentation={augmentation!r}"
        )
    if image_size is not None and image_size != augmentation.view_a.image_size:
        augmentation = augmentation.with_image_size(image_size)
    return augmentation


# Uniform draws behind one crop window and behind the other choices of one view.
CROP_DRAWS = 22
VIEW_DRAWS = 14


def crop_windows(image_shape, draws, scales, ratios):
    """Crop windows of one image from `CROP_DRAWS` uniform draws each, as `sample_crop_window`.

    Vectorised over the rows of `draws` (the views of one image), each row with its own scale and
    ratio ranges: per element of a tf.data map, the cost is the number of ops.

    Args:
        image_shape: the image's shape (height, width, ...).
        draws: float32 (windows, `CROP_DRAWS`) uniform draws in [0, 1).
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
    area = height * width * (column([low for low, _ in scales]) + area_range * draws[:, 0:10])
    log_range = column([high - low for low, high in log_ratios])
    aspect = tf.exp(column([low for low, _ in log_ratios]) + log_range * draws[:, 10:20])
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
    offset_y = tf.where(found, tf.floor(draws[:, 20] * (free_h + 1)), free_h // 2)
    offset_x = tf.where(found, tf.floor(draws[:, 21] * (free_w + 1)), free_w // 2)
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
    draws = tf.random.stateless_uniform([1, CROP_DRAWS], seed)
    return crop_windows(image_shape, draws, [scale], [ratio])[0]


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


def resize(image, image_size, interpolation="bicubic", antialias=False):
    """Resizes a crop to `image_size` x `image_size`; returns float32 in [0, 1].

    Args:
        image: uint8 (0..255) or float (0..1) image of shape (height, width, channels).
        image_size: the output side.
        interpolation: one of `INTERPOLATIONS`.
        antialias: low-pass filter when shrinking, as PIL's resize does.

    Returns:
        float32 tensor of shape (image_size, image_size, channels).
    """
    scale = 1.0 / 255.0 if image.dtype == tf.uint8 else 1.0
    image = tf.image.resize(image, [image_size, image_size], interpolation, antialias=antialias)
    return tf.clip_by_value(image * scale, 0.0, 1.0)


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
        return tf.tensordot(image, tf.constant(_LUMA, image.dtype), axes=[[-1], [0]])[..., None]
    return image


def resize_crop(crop, view):
    """A crop at the view's size and channels, float32 in [0, 1]: the per-image part of a view.

    The rest of the view, `apply_view_params_batch`, runs on batches of these.
    """
    image = resize(crop, view.image_size, view.interpolation, view.antialias)
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
            "Batches are resized bilinearly or bicubically without antialiasing; resize other views "
            "image by image (`resize_crop`). Received: "
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


def batch_two_views(images, seed, augmentation):
    """Both views of a batch of same-size images, every random choice drawn for the batch at once.

    The cheapest route (`keras_vicreg.data.two_view_dataset(..., whole_batches=True)`): crop
    windows, crops and resizes (`resize_windows`) and the other choices
    (`apply_view_params_batch`) are batch operations. The choices follow the same distributions as
    `two_views`, but they are drawn from the batch's seed, so the views are not those of
    `two_views` with per-image seeds.

    Args:
        images: uint8 or float tensor (batch, height, width, channels), one size.
        seed: int tensor of shape (2,), the batch's seed.
        augmentation: a `TwoViewAugmentation` or a preset name.

    Returns:
        (view_a, view_b), each float32 (batch, image_size, image_size, channels), normalised.
    """
    augmentation = get_augmentation(augmentation)
    batch = tf.shape(images)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    views = []
    for view, crop_seed, params_seed in zip(
        (augmentation.view_a, augmentation.view_b), seeds[0::2], seeds[1::2]
    ):
        draws = tf.random.stateless_uniform([batch, CROP_DRAWS], crop_seed)
        windows = crop_windows(tf.shape(images)[1:], draws, [view.crop_scale], [view.crop_ratio])
        params = view_params(tf.random.stateless_uniform([batch, VIEW_DRAWS], params_seed), view)
        views.append(apply_view_params_batch(resize_windows(images, windows, view), params, view))
    return tuple(views)


def view_shape(view):
    """The shape of one view's images: (image_size, image_size, channels)."""
    return (view.image_size, view.image_size, view.channels)


def _select(condition, x, y):
    """`x` where `condition`, else `y`: a scalar condition picks a whole tensor.

    The Select op (no broadcasting) is several times faster on a CPU than `tf.where`'s SelectV2.
    """
    return tf.raw_ops.Select(condition=condition, x=x, y=y)


def _per_image(values):
    """Per-image values, shape (batch,), shaped to broadcast against planes."""
    return values[None, :, None, None]


def _select_images(condition, x, y):
    """The images of planes `x` where `condition` (shape (batch,)), else those of `y`."""
    if x.shape[1] == 1:  # a scalar condition picks a whole tensor, without a pass over it
        return _select(condition[0], x, y)
    return _select(tf.broadcast_to(_per_image(condition), tf.shape(x)), x, y)


def _apply_where(condition, fn, planes, *values):
    """`fn(planes, *values)` on the images where `condition`, the others left as they are.

    For the costly steps that only some images take (a hue shift at one step of the jitter, a blur
    of probability < 1): the images that take it are gathered, so that the others cost nothing. A
    batch of one (`apply_view_params`) branches instead, which copies nothing.

    Args:
        condition: bool tensor of shape (batch,).
        fn: maps planes and per-image values of the chosen images to their new planes.
        planes: float32 (channels, batch, height, width).
        *values: per-image tensors of shape (batch, ...), gathered alike.

    Returns:
        The planes, the chosen images replaced.
    """
    if planes.shape[1] == 1:
        return tf.cond(condition[0], lambda: fn(planes, *values), lambda: planes)
    index = tf.where(condition)[:, 0]
    chosen = fn(tf.gather(planes, index, axis=1), *(tf.gather(value, index) for value in values))
    # The (channel, image) pairs to replace, one (height, width) plane each.
    channels = tf.range(tf.shape(planes, tf.int64)[0])
    pairs = tf.stack(tf.meshgrid(channels, index, indexing="ij"), axis=-1)
    return tf.tensor_scatter_nd_update(planes, pairs, chosen)


def luma(planes):
    """The (batch, height, width) luma of planes, with PIL's weights (ITU-R 601-2)."""
    if planes.shape[0] == 1:
        return planes[0]
    return _LUMA[0] * planes[0] + _LUMA[1] * planes[1] + _LUMA[2] * planes[2]


def to_grayscale(planes):
    """Replaces every channel by the luma, keeping the number of channels."""
    return tf.broadcast_to(luma(planes)[None], tf.shape(planes))


def adjust_color(planes, op, factor):
    """torchvision's brightness, contrast or saturation adjustment, as one affine blend per image.

    With L the luma image and m its mean, the result is clipped to [0, 1]:
    brightness (op 0) `factor * P`, contrast (op 1) `factor * P + (1 - factor) * m`, saturation
    (op 2) `factor * P + (1 - factor) * L`; ops 3 and 4 return the image unchanged. One formula
    whose coefficients are looked up by `op` lets each image of a batch take its own operation.

    Args:
        planes: float32 (channels, batch, height, width) in [0, 1].
        op: int32 tensor (batch,) in 0..4.
        factor: float32 tensor (batch,), the adjustment factors.

    Returns:
        The adjusted planes.
    """
    gray = luma(planes)
    rest = 1.0 - factor
    zero = tf.zeros_like(factor)
    scale = tf.where(op < 3, factor, tf.ones_like(factor))
    gray_weight = tf.where(tf.equal(op, 2), rest, zero)
    offset = tf.where(tf.equal(op, 1), rest * tf.reduce_mean(gray, axis=[1, 2]), zero)
    # At most one of the two terms of `shift` is nonzero: summed first, they cost one pass less.
    shift = _per_image(gray_weight) * gray[None] + _per_image(offset)
    return tf.clip_by_value(_per_image(scale) * planes + shift, 0.0, 1.0)


def adjust_hue(planes, delta):
    """Shifts the HSV hue by `delta` turns, in [-0.5, 0.5], as torchvision's `adjust_hue`.

    Written with elementwise ops on the planes: the maximum, minimum (so value and saturation) stay,
    and the channels are rebuilt from the shifted hue h (in sixths of a turn) as
    `channel_n = max - chroma * clip(min(k, 4 - k), 0, 1)`, `k = (n + h) mod 6`, n = 5, 3, 1.
    It agrees with `tf.image.adjust_hue` to float precision and is about 3x faster on a CPU.

    Args:
        planes: float32 (3, batch, height, width) in [0, 1].
        delta: float32 tensor (batch,), the hue shifts in turns.

    Returns:
        The shifted planes.
    """
    red, green, blue = planes[0], planes[1], planes[2]
    high = tf.maximum(tf.maximum(red, green), blue)
    chroma = high - tf.minimum(tf.minimum(red, green), blue)
    inverse = 1.0 / tf.maximum(chroma, 1e-12)
    hue = _select(
        tf.equal(high, red),
        (green - blue) * inverse,
        _select(tf.equal(high, green), (blue - red) * inverse + 2.0, (red - green) * inverse + 4.0),
    )
    hue += 6.0 * delta[:, None, None]
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = hue + n
        k -= 6.0 * tf.floor(k * (1.0 / 6.0))  # k mod 6; tf.math.floormod is 20x slower
        channels.append(high - chroma * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0))
    return tf.stack(channels)


# The jitter's "operation" of an image it leaves unchanged (see `adjust_color`).
_UNCHANGED = 4


def color_jitter(planes, factors, order, hue=True, apply=True):
    """Applies brightness, contrast, saturation and hue in each image's own order.

    At each of the four steps every image takes its own operation: the affine blend of
    `adjust_color` for the batch, then the hue shift on the images whose operation is hue. A
    batch of one branches to its operation instead.

    Args:
        planes: float32 (channels, batch, height, width) in [0, 1].
        factors: float32 (batch, 4): brightness, contrast, saturation factors and hue shift; a
            factor of 1 (a shift of 0) leaves an image as it is.
        order: int32 (batch, 4), permutations of 0..3 (indices into `factors`).
        hue: whether to apply the hue shift (False for one-channel images).
        apply: bool (batch,), or True: the images to jitter; the others are left unchanged.

    Returns:
        The jittered planes.
    """
    for step in range(4):
        op = tf.where(apply, order[:, step], _UNCHANGED)
        factor = tf.gather(factors, tf.minimum(op, 3), batch_dims=1)
        if planes.shape[1] == 1:
            planes = _jitter_step_of_one(planes, op, factor, hue)
            continue
        # The blend leaves the images whose operation is another unchanged.
        planes = adjust_color(planes, op, factor)
        if hue:
            planes = _apply_where(tf.equal(op, 3), adjust_hue, planes, factor)
    return planes


def _jitter_step_of_one(planes, op, factor, hue):
    """A jitter step of a batch of one: one branch to its operation (a blend, the hue or none).

    In tf.data one `tf.switch_case` costs less than the blend and a branch for the hue.
    """
    branches = [lambda: adjust_color(planes, op, factor), lambda: planes]
    if hue:
        branches.append(lambda: adjust_hue(planes, factor))
    branch = tf.gather([0, 0, 0, 2 if hue else 1, 1], op[0])  # by operation, 4: unchanged
    return tf.switch_case(branch, branches)


def gaussian_kernel(sigma, kernel_size):
    """Normalised 1-D Gaussians of `kernel_size` taps (odd), one per standard deviation in `sigma`.

    Args:
        sigma: the standard deviation in pixels, a scalar or a tensor of any shape.
        kernel_size: odd number of taps.

    Returns:
        float32 tensor of shape `sigma.shape + (kernel_size,)`.
    """
    radius = kernel_size // 2
    x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-(x**2) / (2.0 * tf.cast(sigma, tf.float32)[..., None] ** 2))
    return kernel / tf.reduce_sum(kernel, axis=-1, keepdims=True)


def _blur_matrices(kernels, kernel_size, size):
    """The (batch, size, size) banded matrices of 1-D convolutions with reflected borders."""
    radius = kernel_size // 2
    rows = np.repeat(np.arange(size), kernel_size)
    taps = np.tile(np.arange(kernel_size), size)
    cols = np.abs(rows + taps - radius)
    cols = np.where(cols > size - 1, 2 * (size - 1) - cols, cols)
    # Which tap goes where, as a sparse (size * size, taps) matrix of ones: its product with the
    # kernels sums the taps that reflection sends to the same entry, for every image at once.
    indices = np.stack([rows * size + cols, taps], axis=1)
    indices = indices[np.lexsort((indices[:, 1], indices[:, 0]))]  # row-major, as sparse ops want
    placement = tf.SparseTensor(indices, tf.ones([len(indices)]), [size * size, kernel_size])
    matrices = tf.sparse.sparse_dense_matmul(placement, kernels, adjoint_b=True)
    return tf.transpose(tf.reshape(matrices, [size, size, -1]), [2, 0, 1])


def gaussian_blur(planes, sigma, kernel_size):
    """Separable Gaussian blur with reflected borders, as two matrix products per image.

    `blur(P) = V @ P @ H^T` with V, H the banded matrices of the 1-D convolution: the exact
    `kernel_size`-tap result, and on a CPU about twice as fast as a depthwise convolution.

    Args:
        planes: float32 (channels, batch, height, width) of static size, each side >
            `kernel_size // 2`.
        sigma: float32 (batch,), each image's standard deviation in pixels.
        kernel_size: odd number of taps.

    Returns:
        The blurred planes, same shape.
    """
    channels, _, height, width = planes.shape
    kernels = gaussian_kernel(sigma, kernel_size)
    vertical = _blur_matrices(kernels, kernel_size, height)
    horizontal = vertical if width == height else _blur_matrices(kernels, kernel_size, width)
    # Rows (batch, height, channels, width) make both products plain batched ones: TensorFlow's
    # broadcasting matmul crashes on some shapes ((3, 1, n, n) by (1, 1, n, n), n >= 96).
    rows = tf.transpose(planes, [1, 2, 0, 3])
    rows = tf.matmul(vertical, tf.reshape(rows, [-1, height, channels * width]))
    rows = tf.matmul(tf.reshape(rows, [-1, height * channels, width]), horizontal, transpose_b=True)
    return tf.transpose(tf.reshape(rows, [-1, height, channels, width]), [2, 0, 1, 3])


def solarize(planes, threshold=SOLARIZE_THRESHOLD):
    """Inverts the values >= `threshold` (PIL's `ImageOps.solarize` at 128 of 255).

    `threshold` is a number, or any tensor that broadcasts against `planes` (one per image).
    """
    return _select(planes >= threshold, 1.0 - planes, planes)


def normalize(planes, mean, std):
    """`(planes - mean) / std` per channel, on planes (channels, batch, height, width)."""
    mean = tf.constant(mean, tf.float32)[:, None, None, None]
    return (planes - mean) * tf.constant([1.0 / s for s in std], tf.float32)[:, None, None, None]


def view_params(draws, view):
    """Every random choice of one view except its crop window, from `VIEW_DRAWS` uniform draws.

    Args:
        draws: float32 (..., `VIEW_DRAWS`) in [0, 1): one row per image.
        view: a `ViewAugmentation`.

    Returns:
        dict of tensors of shape `draws.shape[:-1] + ...`: booleans `flip`, `jitter`,
        `grayscale`, `blur`, `solarize`; float32 `jitter_factors` (brightness, contrast,
        saturation, hue; last axis 4) and `blur_sigma`; int32 `jitter_order`, a permutation of
        0..3 (last axis 4).
    """
    low = [max(0.0, 1.0 - s) for s in (view.brightness, view.contrast, view.saturation)]
    low.append(-view.hue)
    high = [1.0 + view.brightness, 1.0 + view.contrast, 1.0 + view.saturation, view.hue]
    low, high = tf.constant(low), tf.constant(high)
    sigma_low, sigma_high = view.blur_sigma
    return {
        "flip": draws[..., 0] < view.flip_prob,
        "jitter": draws[..., 1] < view.jitter_prob,
        "jitter_factors": low + (high - low) * draws[..., 2:6],
        "jitter_order": tf.argsort(draws[..., 6:10]),
        "grayscale": draws[..., 10] < view.grayscale_prob,
        "blur": draws[..., 11] < view.blur_prob,
        "blur_sigma": sigma_low + (sigma_high - sigma_low) * draws[..., 12],
        "solarize": draws[..., 13] < view.solarize_prob,
    }


def sample_view_params(seed, view):
    """Draws every random choice of one view except its crop window.

    Args:
        seed: int tensor of shape (2,).
        view: a `ViewAugmentation`.

    Returns:
        dict of tensors: booleans `flip`, `jitter`, `grayscale`, `blur`, `solarize`; float32
        `jitter_factors` (brightness, contrast, saturation, hue) and `blur_sigma`; int32
        `jitter_order`, a permutation of 0..3.
    """
    return view_params(tf.random.stateless_uniform([VIEW_DRAWS], seed), view)


def apply_view_params_batch(images, params, view):
    """Applies a view's flip, jitter, grayscale, blur, solarize and normalise to a batch.

    Each image takes its own choices. Cheap steps (flip, grayscale, solarize) are computed for the
    batch and selected per image; the hue shift and a blur of probability < 1 run on the images
    that take them.

    Args:
        images: float32 (batch, image_size, image_size, channels) in [0, 1], from `resize_crop`.
        params: `view_params` of the batch: tensors with a leading batch axis.
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of the images' shape, normalised.
    """
    if tuple(images.shape[1:]) != view_shape(view):
        raise ValueError(
            f"`images` must be resized crops of shape (batch,) + {view_shape(view)}. "
            f"Received: images.shape={images.shape}"
        )
    planes = tf.transpose(images, [3, 0, 1, 2])
    if view.flip_prob > 0:
        planes = _select_images(params["flip"], tf.reverse(planes, [3]), planes)
    if view.jitter_prob > 0:
        planes = color_jitter(
            planes,
            params["jitter_factors"],
            params["jitter_order"],
            hue=view.hue > 0,
            apply=params["jitter"],
        )
    if view.grayscale_prob > 0:
        planes = _select_images(params["grayscale"], to_grayscale(planes), planes)
    if view.blur_prob > 0:
        blur = functools.partial(gaussian_blur, kernel_size=view.blur_kernel_size)
        if view.blur_prob < 1:
            planes = _apply_where(params["blur"], blur, planes, params["blur_sigma"])
        else:
            planes = blur(planes, params["blur_sigma"])
    if view.solarize_prob > 0:
        threshold = tf.where(params["solarize"], SOLARIZE_THRESHOLD, 2.0)  # 2: nothing inverted
        planes = solarize(planes, _per_image(threshold))
    return tf.transpose(normalize(planes, view.mean, view.std), [1, 2, 3, 0])


def apply_view_params(crop, params, view):
    """Resizes a crop and applies a view's flip, jitter, grayscale, blur, solarize and normalise.

    `resize_crop`, then `apply_view_params_batch` on a batch of one.

    Args:
        crop: the cropped image, channels last, uint8 or float in [0, 1], with 1, 3 or 4 channels
            (converted to the view's channels).
        params: the output of `sample_view_params`.
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of shape (image_size, image_size, channels), normalised.
    """
    batch = {key: value[None] for key, value in params.items()}
    return apply_view_params_batch(resize_crop(crop, view)[None], batch, view)[0]


def augment_crop(crop, seed, view):
    """Augments an already cropped image (`seed` is the second half of `split_view_seed`)."""
    return apply_view_params(crop, sample_view_params(seed, view), view)


def split_view_seed(seed):
    """Splits a view's seed into (crop seed, seed of the other choices)."""
    crop_seed, params_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return crop_seed, params_seed


def augment_view(image, seed, view):
    """One augmented view of a decoded image: random resized crop, then `apply_view_params`.

    Args:
        image: uint8 (0..255) or float (0..1) tensor of shape (height, width, channels), any size.
        seed: int tensor of shape (2,); the same seed gives the same view.
        view: a `ViewAugmentation`.

    Returns:
        float32 tensor of shape (image_size, image_size, channels), normalised.
    """
    crop_seed, params_seed = split_view_seed(seed)
    window = sample_crop_window(tf.shape(image), crop_seed, view.crop_scale, view.crop_ratio)
    return augment_crop(crop_to_window(image, window), params_seed, view)


def two_views(image, seed, augmentation):
    """The pair (view a, view b) of one decoded image.

    Args:
        image: uint8 or float tensor of shape (height, width, channels).
        seed: int tensor of shape (2,).
        augmentation: a `TwoViewAugmentation` or a preset name.

    Returns:
        (view_a, view_b), each float32 of shape (image_size, image_size, channels).
    """
    augmentation = get_augmentation(augmentation)
    seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return (
        augment_view(image, seed_a, augmentation.view_a),
        augment_view(image, seed_b, augmentation.view_b),
    )
