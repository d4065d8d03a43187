"""Per-image selection on planes, the layout every photometric operation of a view takes.

Planes are (channels, batch, height, width) float32 in [0, 1]: TensorFlow's CPU kernels run
elementwise work on contiguous planes faster than on interleaved pixels, and a channel is a slice
that copies nothing. Each image of a batch takes its own random choices; these helpers select per
image, or run a costly step on only the images that take it.
"""

import tensorflow as tf


def select(condition, x, y):
    """`x` where `condition`, else `y`: a scalar condition picks a whole tensor.

    The Select op (no broadcasting) is several times faster on a CPU than `tf.where`'s SelectV2.
    """
    return tf.raw_ops.Select(condition=condition, x=x, y=y)


def per_image(values):
    """Per-image values, shape (batch,), shaped to broadcast against planes."""
    return values[None, :, None, None]


def select_images(condition, x, y):
    """The images of planes `x` where `condition` (shape (batch,)), else those of `y`."""
    if x.shape[1] == 1:  # a scalar condition picks a whole tensor, without a pass over it
        return select(condition[0], x, y)
    return select(tf.broadcast_to(per_image(condition), tf.shape(x)), x, y)


def apply_where(condition, fn, planes, *values):
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
