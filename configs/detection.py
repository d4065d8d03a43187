r"""Object detection transfer: keras-hub's RetinaNet around a (VICReg-pretrained) ResNet.

    python -m trainers.detect --config=configs/detection.py:voc \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_detect_voc \
        [--data_dir=~/tensorflow_datasets]

`voc` (default): VOC07+12 (tfds voc/2007 and voc/2012 trainval, 16551 images) -> VOC07 test
(4952), 20 classes. `coco`: COCO 2017 train -> validation, 80 classes. tfds downloads and
prepares them on first use. `runlocal`: generated Fashion-MNIST canvases, a narrow random
ResNet-18 with the small stem, a minute on a CPU. results.json holds COCO-style `ap`
(IoU 0.5:0.95) and `ap50`, per class too (pycocotools).

NOT the paper's detection protocol. VICReg's VOC07+12 AP50 (82.4) is detectron2's Faster R-CNN
R50-C4; run it with `python -m trainers.export_torchvision` and detectron2 (docs/reproducing.md).
This RetinaNet (an FPN, focal loss, square resized images, AdamW) is a Keras-only comparison of
backbones; its numbers are not comparable with the paper's.
"""

import ml_collections

from keras_vicreg.config import common
from keras_vicreg.data import transforms


def get_config(arg=None):
    """The detection transfer; `arg`: "voc" or "coco", and "runlocal" for generated canvases."""
    args = common.parse_arg(arg, dataset=("voc", "coco"))
    config = ml_collections.ConfigDict()
    config.dataset = args.dataset
    config.backbone = ""  # a .keras file or torchvision .pth; "" trains from random weights
    config.backbone_depth = 50
    config.backbone_stem = "imagenet"
    config.backbone_filters = (64, 128, 256, 512)  # random weights only
    config.image_size = 512 if args.dataset == "voc" else 640
    config.min_level = 3  # RetinaNet's P3-P7 (the ImageNet stem's stages are levels 2-5)
    config.max_level = 7
    config.anchor_size = 4.0  # 32 pixels at P3
    config.head_conv_layers = 4
    config.freeze_backbone = False
    # detectron2's VOC and COCO 1x schedules in steps of 16 images
    config.steps = 18_000 if args.dataset == "voc" else 90_000
    config.batch_size = 16
    config.learning_rate = 1e-4  # AdamW peak
    config.warmup_steps = 1000
    config.weight_decay = 1e-4
    config.mean = transforms.IMAGENET_MEAN
    config.std = transforms.IMAGENET_STD
    config.max_boxes = 100
    config.score_threshold = 0.05
    config.max_detections = 100
    config.eval_examples = 0  # 0: the whole test split
    config.shuffle_buffer = 1000
    config.seed = 0
    config.canvas_train = 0
    config.canvas_test = 0
    config.canvas_size = 48
    config.canvas_items = 3
    if args.runlocal:
        common.canvases_for_local_run(config)
        config.min_level = 3  # the small stem's last two stages (strides 4 and 8)
        config.max_level = 4
        config.anchor_size = 3.0  # 24 pixels at P3: Fashion-MNIST items are up to 28
        config.head_conv_layers = 1
        config.steps = 60
        config.warmup_steps = 10
        config.learning_rate = 3e-3
        config.shuffle_buffer = 512
    return config
