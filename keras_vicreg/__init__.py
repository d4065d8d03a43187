"""keras-vicreg: VICReg self-supervised pretraining for Keras 3 (TensorFlow, JAX and PyTorch)."""

from keras_vicreg import augment
from keras_vicreg import backbones
from keras_vicreg import callbacks
from keras_vicreg import data
from keras_vicreg import optimizers
from keras_vicreg import schedules
from keras_vicreg.expander import build_expander
from keras_vicreg.losses import covariance_loss
from keras_vicreg.losses import invariance_loss
from keras_vicreg.losses import variance_loss
from keras_vicreg.losses import vicreg_loss
from keras_vicreg.model import VICReg
from keras_vicreg.optimizers import LARS
from keras_vicreg.schedules import WarmupCosine

__version__ = "0.1.0"
