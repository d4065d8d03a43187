"""Kernels that only pay on a small CPU with TensorFlow: opt-in, on in the demo config only.

`use_cpu_kernels(model)` swaps a model's BatchNormalization and stride-1 Conv2D layers, in place,
for subclasses that compute the same on a CPU with faster TensorFlow kernels
(`FusedBatchNormalization`, `MatmulGradConv2D`); `use_stock_layers(model)` swaps them back, so
that a saved `.keras` file loads with Keras (and keras-hub) alone. The pretraining recipe applies
the first when `config.model.experimental_cpu_kernels` is set and the second before it saves the
backbone. docs/performance.md has what they measured.
"""

from keras_vicreg.experimental.cpu.batch_norm import FusedBatchNormalization  # noqa: F401
from keras_vicreg.experimental.cpu.batch_norm import fuse_batch_norm  # noqa: F401
from keras_vicreg.experimental.cpu.conv import MatmulGradConv2D  # noqa: F401
from keras_vicreg.experimental.cpu.conv import use_matmul_filter_gradients  # noqa: F401
from keras_vicreg.experimental.cpu.kernels import use_cpu_kernels  # noqa: F401
from keras_vicreg.experimental.cpu.kernels import use_stock_layers  # noqa: F401
