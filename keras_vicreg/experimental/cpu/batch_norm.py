"""BatchNormalization computed by TensorFlow's fused kernel, the same layer on every backend.

Keras 3's `BatchNormalization` is written in `keras.ops`: on the TensorFlow backend its moments and
normalisation are a dozen element-wise kernels forwards and as many backwards, with casts to float32
under mixed precision. On a CPU that can be most of a small ResNet's training step, which
TensorFlow's fused kernel (`FusedBatchNormV3`, which oneDNN also fuses with the following ReLU)
shortens a good deal (docs/performance.md has the demo's step with and without it, from
`python benchmarks/train_step.py --models demo demo_keras_bn`). `FusedBatchNormalization` is a
`keras.layers.BatchNormalization` (same arguments, weights, config and moving statistics) whose
`call` uses that kernel where it applies and Keras' own computation everywhere else: on JAX and
PyTorch, for synchronised or renormalised statistics, masks, float64 inputs, or an axis other than
the last.
"""

import keras

from keras_vicreg.experimental.cpu import layer_classes

# The fused kernel's input types; its scale, offset and statistics are float32.
_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="keras_vicreg")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` through `FusedBatchNormV3` on the TensorFlow backend.

    The batch statistics normalise with the biased variance, and the moving variance follows the
    biased variance, as in Keras (the kernel's Bessel-corrected batch variance is converted back),
    so outputs, gradients and moving statistics equal Keras' to float rounding.

    Args:
        **kwargs: those of `keras.layers.BatchNormalization`.
    """

    def _fused_applies(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) in (2, 4)
            and self.axis in (-1, len(inputs.shape) - 1)
            and not self.synchronized
            and not self.renorm
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        shape = tf.shape(inputs)
        images = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, shape[-1]])
        channels = self.moving_mean.shape[0]
        scale = tf.cast(self.gamma.value, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta.value, tf.float32) if self.center else tf.zeros([channels])
        train = bool(training) and self.trainable
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=images,
            scale=scale,
            offset=offset,
            mean=tf.zeros([0]) if train else tf.cast(self.moving_mean.value, tf.float32),
            variance=tf.zeros([0]) if train else tf.cast(self.moving_variance.value, tf.float32),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=train,
        )
        if train:
            count = tf.cast(tf.size(images) // shape[-1], tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # back to biased
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(
                    moving * self.momentum + tf.cast(batch, moving.dtype) * (1.0 - self.momentum)
                )
        return tf.cast(tf.reshape(outputs, shape), self.compute_dtype)


def fuse_batch_norm(model):
    """Makes every plain `BatchNormalization` of `model` a `FusedBatchNormalization`, in place.

    The layers keep their weights, names, config and place in the graph (nested models, such as
    keras-hub's `ResNetBackbone`, included); only their class changes, since the two classes hold
    the same state. A saved model then needs `import keras_vicreg` to load, as the `VICReg` model
    itself does; an exported SavedModel (`keras_vicreg.export`) needs nothing.

    Args:
        model: a Keras model or layer.

    Returns:
        The number of layers converted.
    """
    return layer_classes.swap_class(
        model, keras.layers.BatchNormalization, FusedBatchNormalization
    )
