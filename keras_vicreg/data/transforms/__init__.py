"""Image augmentations of VICReg's views, one concern a module, re-exported here.

- `presets`: what a view does (`ViewAugmentation`, `TwoViewAugmentation`, `AUGMENTATIONS`).
- `draws`: the random draws of a view, by name (`CropDraws`, `ViewParams`), from a seed.
- `geometry`: crop windows, crops, and resizes of one image or of a batch.
- `colour`: colour jitter, grayscale, solarize, normalise; `blur`: the Gaussian blur;
  `planes`: the per-image selection they share.
- `apply`: a view of an image or of a batch, from its draws or from a seed.
- `keras_photometric`: the photometric half of `apply` in keras.ops, for a train step on any
  backend (`keras_vicreg.models.PhotometricAugmentation`).
- `opencv_photometric`: the photometric half of `apply` with OpenCV's kernels, the pipeline's
  route for large views (the same views to float rounding, several times less CPU at 224).
"""

from keras_vicreg.data.transforms.apply import apply_view_params  # noqa: F401
from keras_vicreg.data.transforms.apply import apply_view_params_batch  # noqa: F401
from keras_vicreg.data.transforms.apply import augment_crop  # noqa: F401
from keras_vicreg.data.transforms.apply import augment_view  # noqa: F401
from keras_vicreg.data.transforms.apply import batch_two_views  # noqa: F401
from keras_vicreg.data.transforms.apply import two_views  # noqa: F401
from keras_vicreg.data.transforms.blur import gaussian_blur  # noqa: F401
from keras_vicreg.data.transforms.blur import gaussian_kernel  # noqa: F401
from keras_vicreg.data.transforms.colour import adjust_color  # noqa: F401
from keras_vicreg.data.transforms.colour import adjust_hue  # noqa: F401
from keras_vicreg.data.transforms.colour import color_jitter  # noqa: F401
from keras_vicreg.data.transforms.colour import luma  # noqa: F401
from keras_vicreg.data.transforms.colour import normalize  # noqa: F401
from keras_vicreg.data.transforms.colour import solarize  # noqa: F401
from keras_vicreg.data.transforms.colour import to_grayscale  # noqa: F401
from keras_vicreg.data.transforms.draws import CropDraws  # noqa: F401
from keras_vicreg.data.transforms.draws import ViewParams  # noqa: F401
from keras_vicreg.data.transforms.draws import fixed_view_params  # noqa: F401
from keras_vicreg.data.transforms.draws import sample_batch_crop_draws  # noqa: F401
from keras_vicreg.data.transforms.draws import sample_batch_view_params  # noqa: F401
from keras_vicreg.data.transforms.draws import sample_crop_draws  # noqa: F401
from keras_vicreg.data.transforms.draws import sample_view_params  # noqa: F401
from keras_vicreg.data.transforms.draws import split_view_seed  # noqa: F401
from keras_vicreg.data.transforms.draws import stack_draws  # noqa: F401
from keras_vicreg.data.transforms.geometry import BATCH_RESIZE_INTERPOLATIONS  # noqa: F401
from keras_vicreg.data.transforms.geometry import centre_crop_window  # noqa: F401
from keras_vicreg.data.transforms.geometry import convert_channels  # noqa: F401
from keras_vicreg.data.transforms.geometry import crop_to_window  # noqa: F401
from keras_vicreg.data.transforms.geometry import crop_windows  # noqa: F401
from keras_vicreg.data.transforms.geometry import input_scale  # noqa: F401
from keras_vicreg.data.transforms.geometry import resize  # noqa: F401
from keras_vicreg.data.transforms.geometry import resize_crop  # noqa: F401
from keras_vicreg.data.transforms.geometry import resize_windows  # noqa: F401
from keras_vicreg.data.transforms.geometry import sample_crop_window  # noqa: F401
from keras_vicreg.data.transforms.geometry import to_uint8  # noqa: F401
from keras_vicreg.data.transforms.presets import AUGMENTATIONS  # noqa: F401
from keras_vicreg.data.transforms.presets import FASHION_MNIST_MEAN  # noqa: F401
from keras_vicreg.data.transforms.presets import FASHION_MNIST_STD  # noqa: F401
from keras_vicreg.data.transforms.presets import IMAGENET_MEAN  # noqa: F401
from keras_vicreg.data.transforms.presets import IMAGENET_STD  # noqa: F401
from keras_vicreg.data.transforms.presets import INTERPOLATIONS  # noqa: F401
from keras_vicreg.data.transforms.presets import SOLARIZE_THRESHOLD  # noqa: F401
from keras_vicreg.data.transforms.presets import TwoViewAugmentation  # noqa: F401
from keras_vicreg.data.transforms.presets import ViewAugmentation  # noqa: F401
from keras_vicreg.data.transforms.presets import get_augmentation  # noqa: F401
from keras_vicreg.data.transforms.presets import view_shape  # noqa: F401
