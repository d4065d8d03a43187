"""The presets of VICReg's two asymmetric views: what each view does, as data, validated.

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

A `ViewAugmentation` is one column of that table, a `TwoViewAugmentation` the pair, and
`AUGMENTATIONS` the named presets: the whole augmentation reads as data, and the functions of the
other modules of `keras_vicreg.data.transforms` take it as their argument. One difference by
default: the bicubic resize is not antialiased, as in BYOL's and SimCLR's TensorFlow pipelines
(`tf.image.resize`); the released code's PIL resize is, which `antialias=True` reproduces at some
CPU cost (docs/performance.md).
"""

import dataclasses

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fashion-MNIST's training set, for one-channel data.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# ITU-R 601-2 luma, as PIL's convert("L") and torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
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


def view_shape(view):
    """The shape of one view's images: (image_size, image_size, channels)."""
    return (view.image_size, view.image_size, view.channels)
