"""Backbones built offline from explicit arguments, and torchvision-layout weights for them."""

from keras_vicreg.models.backbones.catalog import NAMES  # noqa: F401
from keras_vicreg.models.backbones.catalog import build  # noqa: F401
from keras_vicreg.models.backbones.convnext_backbone import convnext  # noqa: F401
from keras_vicreg.models.backbones.resnet_backbone import SOURCES  # noqa: F401
from keras_vicreg.models.backbones.resnet_backbone import STEMS  # noqa: F401
from keras_vicreg.models.backbones.resnet_backbone import resnet  # noqa: F401
from keras_vicreg.models.backbones.resnet_backbone import zero_init_residual_branches  # noqa: F401
from keras_vicreg.models.backbones.torchvision import assign_torchvision_weights  # noqa: F401
from keras_vicreg.models.backbones.torchvision import describe_torchvision_resnet  # noqa: F401
from keras_vicreg.models.backbones.torchvision import load_torchvision_resnet  # noqa: F401
from keras_vicreg.models.backbones.torchvision import save_torchvision_resnet  # noqa: F401
from keras_vicreg.models.backbones.torchvision import torchvision_state_dict  # noqa: F401
from keras_vicreg.models.backbones.vit_backbone import POOLINGS as VIT_POOLINGS  # noqa: F401
from keras_vicreg.models.backbones.vit_backbone import vit  # noqa: F401
