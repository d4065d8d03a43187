"""The VICReg model, its expander, the pooling of a backbone's features and the backbones."""

from keras_vicreg.models import backbones  # noqa: F401
from keras_vicreg.models.expander import build_expander  # noqa: F401
from keras_vicreg.models.online_probe import OnlineProbe  # noqa: F401
from keras_vicreg.models.photometric import PhotometricAugmentation  # noqa: F401
from keras_vicreg.models.pooling import pooled_features  # noqa: F401
from keras_vicreg.models.vicreg import VICReg  # noqa: F401
