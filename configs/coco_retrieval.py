r"""MS-COCO image-text retrieval with a two-branch VICReg, the paper's flexibility experiment.

    python -m trainers.retrieval --config=configs/coco_retrieval.py --workdir=$HOME/vicreg/coco \
        [--config.image_backbone=$HOME/resnet152.pth] [--data_dir=$HOME/tensorflow_datasets]

tfds coco_captions/2014 (COCO 2014 with Karpathy's splits; tfds downloads and prepares it, about
20 GB, on the first run): training on "train+restval" (113,287 images), testing on "test" (5,000
images, the first 5 captions of each). Image branch: a ResNet-152; text branch: word embeddings
(300) and a GRU (1024); each with its own "1024-1024-1024" expander; VICReg 25 / 25 / 1 between an
image and one of its captions. Training as VSE++'s (the code the paper's experiment builds on):
Adam 2e-4, divided by 10 after 15 of 30 epochs, batch 128, random resized crops and flips of 224
pixels. The paper's recall@1/5/10 (5K test images): image to text 33.6 / 62.7 / 77.9, text to
image 45.2 / 76.1 / 84.2 (docs/reproducing.md says what differs here).

`:runlocal`: generated Fashion-MNIST canvases with five templated captions each (offline), a
narrow ResNet-18, a small GRU: a smoke run, small enough for a CPU, that still learns the
task far above chance (docs/results.md).
"""

from keras_vicreg.config import common
from keras_vicreg.config import retrieval


def get_config(arg=None):
    """The MS-COCO experiment; `arg="runlocal"`: generated captioned canvases, tiny models."""
    args = common.parse_arg(arg)
    config = retrieval.default_config()
    if args.runlocal:
        config.dataset = "canvases"
        config.canvases.train = 2048
        config.canvases.test = 200
        config.canvases.size = 48
        config.fold_images = 100
        config.vocabulary_size = 64
        config.max_length = 12
        config.image_depth = 18
        config.image_filters = (16, 32, 64, 128)
        config.image_size = 48
        config.mean = (0.5,)
        config.std = (0.5,)
        config.augment = False  # a flip would falsify "left of"
        config.crop_fraction = 1.0
        config.text.embedding_dim = 16
        config.text.units = 64
        config.expander = "128-128"
        config.batch_size = 64
        config.epochs = 12
        config.learning_rate = 3e-3
        config.lr_decay_epochs = 100
        config.centering_size = 512
        config.evaluate_untrained = True
    return config
