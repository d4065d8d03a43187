"""The Gaussian blur of a view: a separable convolution with reflected borders, per image sigma.

As in BYOL and SimCLR the kernel is about 10% of the image side (23 taps at 224,
`ViewAugmentation.blur_kernel_size`), sigma drawn per image. Written as two matrix products per
image with banded matrices (`V @ P @ H^T`), the exact `kernel_size`-tap result, rather than a
depthwise convolution: fewer ops for a batch whose images each have their own kernel, and faster
on a CPU (docs/performance.md).
"""

import numpy as np
import tensorflow as tf


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
    `kernel_size`-tap result, cheaper on a CPU than a depthwise convolution.

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
