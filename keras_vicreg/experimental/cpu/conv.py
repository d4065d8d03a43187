"""Conv2D whose filter gradient, on small feature maps on a CPU, is one matrix product.

On a CPU, TensorFlow computes a convolution's filter gradient with oneDNN's backward-weights
kernel, which for small maps and many channels runs far below its forward speed, as on the 4 x 4
maps of 256 channels in the last stage of a ResNet on 28- or 32-pixel images; there the same sum
written as one product of the input's patches (im2col) by the output gradient is faster, and that
stage's filter gradients are a large part of a small CPU's training step (docs/performance.md has
the figures, from `python benchmarks/train_step.py --models demo demo_conv`).
`MatmulGradConv2D` is a `keras.layers.Conv2D` (same arguments, weights and config) that
computes its filter gradient that way where it is faster: on the TensorFlow backend, with no GPU or
TPU visible, for stride-1 undilated ungrouped channels-last convolutions whose output map has at
most `MAX_POSITIONS` positions. Everywhere else it is Keras' Conv2D. The forward pass and the input
gradient are TensorFlow's own; the filter gradient equals TensorFlow's to float rounding.
"""

import functools

import keras

from keras_vicreg.experimental.cpu import layer_classes

# Output maps of at most this many positions take the matrix-product filter gradient: it pays on
# 4 x 4 maps, while at 7 x 7 oneDNN's kernel is already faster (docs/performance.md).
MAX_POSITIONS = 16


@functools.lru_cache(maxsize=None)
def _cpu_only():
    """Whether TensorFlow sees no accelerator (cuDNN's filter gradients are fast on a GPU)."""
    import tensorflow as tf

    return all(device.device_type == "CPU" for device in tf.config.list_logical_devices())


@keras.saving.register_keras_serializable(package="keras_vicreg")
class MatmulGradConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose filter gradient on small maps on a CPU is one matrix product.

    Args:
        **kwargs: those of `keras.layers.Conv2D`.
    """

    def _matmul_gradient_applies(self, inputs):
        shape = inputs.shape
        return (
            keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and len(shape) == 4
            and None not in shape[1:]
            and _output_positions(shape, self.kernel_size, self.padding) <= MAX_POSITIONS
            and _cpu_only()
        )

    def convolution_op(self, inputs, kernel):
        if not self._matmul_gradient_applies(inputs):
            return super().convolution_op(inputs, kernel)
        return _convolution(inputs, kernel, self.padding)


def _output_positions(shape, kernel_size, padding):
    if padding == "same":
        return shape[1] * shape[2]
    return max(shape[1] - kernel_size[0] + 1, 0) * max(shape[2] - kernel_size[1] + 1, 0)


def _convolution(inputs, kernel, padding):
    """A stride-1 convolution with the patches-by-gradient filter gradient."""
    import tensorflow as tf

    @tf.custom_gradient
    def convolution(images, filters):
        outputs = tf.nn.convolution(images, filters, padding=padding.upper())

        def gradients(output_gradient):
            input_gradient = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(images), filter=filters, out_backprop=output_gradient,
                strides=[1, 1, 1, 1], padding=padding.upper(),
            )
            return input_gradient, filter_gradient(images, output_gradient, filters.shape, padding)

        return outputs, gradients

    # A tensor, not the variable: the gradient flows to the variable through the read.
    return convolution(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


def filter_gradient(images, output_gradient, kernel_shape, padding):
    """The gradient of a stride-1 convolution's filters: patches^T @ output gradient.

    Args:
        images: (batch, height, width, channels), the convolution's input.
        output_gradient: (batch, out_height, out_width, filters), of static spatial size.
        kernel_shape: (kernel_height, kernel_width, channels, filters).
        padding: "same" or "valid".

    Returns:
        The gradient, of shape `kernel_shape`.
    """
    import tensorflow as tf

    rows, columns, channels, filters = kernel_shape
    out_height, out_width = output_gradient.shape[1:3]
    if padding == "same":  # TensorFlow's: the odd pixel of padding goes after
        pads = [[0, 0], [(rows - 1) // 2, rows // 2], [(columns - 1) // 2, columns // 2], [0, 0]]
        images = tf.pad(images, pads)
    patches = tf.concat(
        [
            tf.reshape(images[:, i : i + out_height, j : j + out_width, :], [-1, channels])
            for i in range(rows)
            for j in range(columns)
        ],
        axis=1,
    )
    gradient = tf.matmul(patches, tf.reshape(output_gradient, [-1, filters]), transpose_a=True)
    return tf.reshape(gradient, kernel_shape)


def use_matmul_filter_gradients(model):
    """Makes every plain stride-1 `Conv2D` of `model` a `MatmulGradConv2D`, in place.

    As `keras_vicreg.experimental.cpu.batch_norm.fuse_batch_norm` does for BatchNormalization: the layers keep
    their weights, names, config and place; only their class changes. Each decides per call
    whether its filter gradient takes the matrix product (see the module docstring).

    Args:
        model: a Keras model or layer.

    Returns:
        The number of layers converted.
    """
    return layer_classes.swap_class(
        model, keras.layers.Conv2D, MatmulGradConv2D,
        accept=lambda layer: tuple(layer.strides) == (1, 1),
    )
