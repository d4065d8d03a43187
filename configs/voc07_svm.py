r"""VOC07 linear SVMs on frozen features, VISSL's protocol behind the paper's VOC07 number (86.6).

    python -m trainers.svm_eval --config=configs/voc07_svm.py \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_voc07_svm \
        [--data_dir=~/tensorflow_datasets]

tfds voc/2007 (prepare it first: `tfds build voc/2007`), features of trainval ("train+validation",
5011 images) and test (4952), per-class LinearSVCs on L2-normalised features, the cost chosen from
VISSL's list by 3-fold cross-validation, test AP as VISSL computes it (`ap_method="all_points"`;
"11_point" gives the VOC 2007 devkit's), mAP over the 20 classes (`keras_vicreg.evaluation.svm`).
`:runlocal` runs on generated multi-label images (6 classes, a random ResNet when no backbone is
given) in seconds.
"""

import ml_collections

from keras_vicreg.config import common
from keras_vicreg.data import transforms
from keras_vicreg.evaluation import svm


def get_config(arg=None):
    """The VOC07 SVM protocol; `arg="runlocal"`: generated data, small everything."""
    args = common.parse_arg(arg)
    config = ml_collections.ConfigDict()
    config.backbone = ""
    config.backbone_depth = 50
    config.backbone_stem = "imagenet"
    config.dataset = "voc/2007"
    config.train_split = "train+validation"
    config.test_split = "test"
    config.image_size = 224
    config.resize_ratio = 1.0  # the whole shorter side (VISSL squashes the image to 224 x 224)
    config.mean = transforms.IMAGENET_MEAN
    config.std = transforms.IMAGENET_STD
    config.batch_size = 64
    config.costs = svm.VISSL_VOC07_COSTS
    config.folds = 3
    config.ap_method = "all_points"
    config.max_iter = 2000
    config.n_jobs = 0  # 0: one class at a time; -1: every core (joblib)
    config.generated_train = 0
    config.generated_test = 0
    config.generated_classes = 0
    config.seed = 0
    if args.runlocal:
        config.dataset = "generated"
        config.image_size = 32
        config.batch_size = 32
        config.generated_train = 120
        config.generated_test = 60
        config.generated_classes = 6
        config.costs = (0.1, 1.0, 10.0)
    return config
