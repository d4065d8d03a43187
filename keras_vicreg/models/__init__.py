"""The VICReg model, its expander and the backbones it trains."""

from keras_vicreg.models import backbones  # noqa: F401
from keras_vicreg.models.expander import build_expander  # noqa: F401
from keras_vicreg.models.vicreg import VICReg  # noqa: F401
