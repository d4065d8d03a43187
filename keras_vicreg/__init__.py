"""keras-vicreg: VICReg self-supervised pretraining for Keras 3 (TensorFlow, JAX and PyTorch)."""

from keras_vicreg.losses import covariance_loss
from keras_vicreg.losses import invariance_loss
from keras_vicreg.losses import variance_loss
from keras_vicreg.losses import vicreg_loss

__version__ = "0.1.0"
