r"""Semantic segmentation transfer: keras-hub's DeepLabV3(+) around the pretrained ResNet, mIoU.

    python -m trainers.segment --config=configs/segmentation.py:voc \
        --config.backbone=$HOME/vicreg/r50_1000ep/export/backbone.keras \
        --workdir=$HOME/vicreg/r50_seg_voc --data_dir=$HOME/tensorflow_datasets

NOT the paper's protocol: the paper's COCO numbers (39.4 box AP, 36.4 mask AP) are detectron2's
Mask R-CNN, run through `python -m trainers.export_torchvision` and detectron2
(docs/reproducing.md). This is an all-Keras check of dense transfer
(`keras_vicreg.transfer.segmentation` lists how it differs from DeepLabV3 as published).

The argument picks the data:
- `voc` (default): tfds has no VOC segmentation masks, so this is tfds `coco/2017_panoptic`
  restricted to VOC's 20 classes (the rest background): 21 classes, not the VOC 2012 benchmark.
- `coco`: tfds `coco/2017_panoptic`, its 133 panoptic categories as semantic classes.
Both download and prepare COCO 2017 with its panoptic annotations the first time (tens of GB).
`runlocal` (with either): Fashion-MNIST canvases (`keras_vicreg.data.canvases`, 11 classes with
background), a small random ResNet-18 unless `backbone` is given, under a minute on a CPU.

The recipe follows DeepLabV3 on VOC (SGD with momentum 0.9, poly decay, learning rate 0.007,
batch 16, 30k steps, weight decay 1e-4, atrous rates 6, 12, 18) at 512 pixels.
"""

import ml_collections

from keras_vicreg.config import common
from keras_vicreg.data import transforms


def get_config(arg=None):
    """The segmentation transfer; `arg`: "voc" or "coco", optionally with "runlocal"."""
    args = common.parse_arg(arg, dataset=("voc", "coco"))
    config = ml_collections.ConfigDict()
    config.backbone = ""  # a .keras file or torchvision .pth; "": random weights
    config.backbone_depth = 50  # the ResNet of a .pth, or of random weights
    config.backbone_stem = "imagenet"
    config.backbone_filters = (64, 128, 256, 512)  # random weights only
    config.dataset = args.dataset
    config.train_split = "train"
    config.test_split = "validation"
    config.image_size = 512
    config.mean = transforms.IMAGENET_MEAN
    config.std = transforms.IMAGENET_STD
    config.decoder = True  # DeepLabV3+ decoder on the stage of a quarter of the deepest stride
    config.dilation_rates = (6, 12, 18)
    config.projection_filters = 48
    config.freeze_backbone = False
    config.steps = 30_000
    config.batch_size = 16
    config.eval_batch_size = 16
    config.optimizer = "sgd"  # poly decay; "adamw": cosine decay
    config.learning_rate = 0.007
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.jit_compile = True  # Keras' "auto": XLA on JAX, and on TF with a GPU or TPU
    config.seed = 0
    config.canvas_train = 1  # the canvases' counts, with `dataset="canvases"`
    config.canvas_test = 1
    config.canvas_max_items = 4
    if args.runlocal:
        common.canvases_for_local_run(config)
        config.dilation_rates = (1, 2, 3)
        config.steps = 40
        config.batch_size = 16
        config.eval_batch_size = 64
        config.optimizer = "adamw"
        config.learning_rate = 3e-3
        config.weight_decay = 1e-4
    return config
