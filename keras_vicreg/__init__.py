"""keras-vicreg: VICReg self-supervised pretraining for Keras 3 (TensorFlow, JAX and PyTorch)."""

from keras_vicreg import data
from keras_vicreg import moved
from keras_vicreg.data import transforms
from keras_vicreg.losses import covariance_loss
from keras_vicreg.losses import invariance_loss
from keras_vicreg.losses import variance_loss
from keras_vicreg.losses import vicreg_loss
from keras_vicreg.models import backbones
from keras_vicreg.models.expander import build_expander
from keras_vicreg.models.online_probe import OnlineProbe
from keras_vicreg.models.photometric import PhotometricAugmentation
from keras_vicreg.models.vicreg import VICReg
from keras_vicreg.training.optimizers import LARS
from keras_vicreg.training.schedules import WarmupCosine

__version__ = "0.1.0"

moved.install()


def __getattr__(name):
    """`keras_vicreg.optimizers` and the other 0.1 module paths, with a DeprecationWarning."""
    if f"keras_vicreg.{name}" in moved.MOVED:
        return moved.resolve(f"keras_vicreg.{name}")
    raise AttributeError(f"module 'keras_vicreg' has no attribute {name!r}")
