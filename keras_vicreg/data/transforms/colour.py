"""The colour operations of a view: jitter (torchvision's), grayscale, solarize, normalise.

The colour jitter applies its four operations in a random order drawn per image, as torchvision's
`ColorJitter` does, with torchvision's definitions: brightness scales, contrast blends with the mean
luma, saturation blends with the luma image, hue shifts the HSV hue. Choices that change a step's
formula select per image (the jitter's order looks up one affine formula's coefficients); the hue
shift, costlier, runs only on the images that take it. Every function takes planes
(`keras_vicreg.data.transforms.planes`).
"""

import tensorflow as tf

from keras_vicreg.data.transforms import planes as planes_lib
from keras_vicreg.data.transforms import presets


def luma(planes):
    """The (batch, height, width) luma of planes, with PIL's weights (ITU-R 601-2)."""
    if planes.shape[0] == 1:
        return planes[0]
    return presets.LUMA[0] * planes[0] + presets.LUMA[1] * planes[1] + presets.LUMA[2] * planes[2]


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
    shift = planes_lib.per_image(gray_weight) * gray[None] + planes_lib.per_image(offset)
    return tf.clip_by_value(planes_lib.per_image(scale) * planes + shift, 0.0, 1.0)


def adjust_hue(planes, delta):
    """Shifts the HSV hue by `delta` turns, in [-0.5, 0.5], as torchvision's `adjust_hue`.

    Written with elementwise ops on the planes: the maximum, minimum (so value and saturation) stay,
    and the channels are rebuilt from the shifted hue h (in sixths of a turn) as
    `channel_n = max - chroma * clip(min(k, 4 - k), 0, 1)`, `k = (n + h) mod 6`, n = 5, 3, 1.
    It agrees with `tf.image.adjust_hue` to float precision, faster on a CPU (no HSV round trip).

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
    hue = planes_lib.select(
        tf.equal(high, red),
        (green - blue) * inverse,
        planes_lib.select(
            tf.equal(high, green), (blue - red) * inverse + 2.0, (red - green) * inverse + 4.0
        ),
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
            planes = planes_lib.apply_where(tf.equal(op, 3), adjust_hue, planes, factor)
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


def solarize(planes, threshold=presets.SOLARIZE_THRESHOLD):
    """Inverts the values >= `threshold` (PIL's `ImageOps.solarize` at 128 of 255).

    `threshold` is a number, or any tensor that broadcasts against `planes` (one per image).
    """
    return planes_lib.select(planes >= threshold, 1.0 - planes, planes)


def normalize(planes, mean, std):
    """`(planes - mean) / std` per channel, on planes (channels, batch, height, width)."""
    mean = tf.constant(mean, tf.float32)[:, None, None, None]
    return (planes - mean) * tf.constant([1.0 / s for s in std], tf.float32)[:, None, None, None]
