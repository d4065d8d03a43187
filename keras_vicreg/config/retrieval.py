"""The image-text retrieval config: its keys and defaults, and `validate`.

`configs/coco_retrieval.py` starts from `default_config()` (the paper's MS-COCO experiment as far
as it is published, VSE++'s training otherwise, see docs/reproducing.md) and
`keras_vicreg.evaluation.caption_retrieval.run_retrieval` validates it before it reads any data.

    dataset                 "coco_captions/2014" (tfds, Karpathy's splits) or "canvases"
                            (generated Fashion-MNIST canvases with templated captions, offline)
    train_split, test_split Karpathy's splits in tfds syntax ("train+restval", "test")
    captions_per_image      the first captions kept per image (5; COCO has 5 to 7)
    canvases.train, canvases.test, canvases.size, canvases.max_items
                            the generated data (only with dataset "canvases")
    vocabulary_size, max_length
                            the word tokenizer (`coco_captions.caption_tokenizer`): token ids,
                            padding and out-of-vocabulary included; tokens per caption
    image_backbone          "" (a new ResNet) or a .keras / torchvision .pth file to start from
    image_depth, image_stem, image_filters
                            the image branch's ResNet (`keras_vicreg.backbones.resnet`)
    image_size, mean, std, augment, crop_fraction
                            the images: side, normalisation (its length is the channels),
                            VSE++'s random crop and flip or the centre crop only
    text.embedding_dim, text.units
                            the text branch (`models.text_branch.text_encoder`)
    expander, loss.*        each branch's expander spec, vicreg_loss's coefficients
    batch_size, epochs, learning_rate, lr_decay_epochs, lr_decay_factor, shuffle_buffer
                            Adam, its rate times lr_decay_factor every lr_decay_epochs epochs
    centering_size          training images (and their captions) whose mean embedding centres
                            each side before the cosine similarities (0: none)
    protocols, fold_images, ks, headline
                            recall@K in both directions: "5k" (all test images at once) and "1k"
                            (the mean over folds of fold_images images); headline's copied to the
                            top of results.json
    evaluate_untrained      also score the model before training (the baseline of the results)
    checkpoint_every_steps  the interval of the training's checkpoints (also written at each
                            epoch end and on SIGTERM or SIGINT); a rerun in the workdir resumes
    eval_batch_size, seed, verbose
"""

import ml_collections

from keras_vicreg.config import checks
from keras_vicreg.data import coco_captions
from keras_vicreg.data import transforms
from keras_vicreg.models import expander as expander_lib
from keras_vicreg.models.backbones import resnet_backbone

DATASETS = (coco_captions.DATASET, "canvases")
PROTOCOLS = ("5k", "1k")
RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)


def default_config():
    """Every key of a retrieval config, with the MS-COCO experiment's values."""
    config = ml_collections.ConfigDict()
    config.dataset = coco_captions.DATASET
    config.train_split = "train+restval"  # Karpathy's 113,287 training images
    config.test_split = "test"  # Karpathy's 5,000 test images
    config.captions_per_image = coco_captions.CAPTIONS_PER_IMAGE
    config.canvases = ml_collections.ConfigDict(dict(train=0, test=0, size=64, max_items=4))
    config.vocabulary_size = 12000  # VSE++ keeps words seen 4 times or more: about 11,000
    config.max_length = 40
    config.image_backbone = ""
    config.image_depth = 152
    config.image_stem = "imagenet"
    config.image_filters = (64, 128, 256, 512)
    config.image_size = 224
    config.mean = transforms.IMAGENET_MEAN
    config.std = transforms.IMAGENET_STD
    config.augment = True
    config.crop_fraction = 224.0 / 256.0
    config.text = ml_collections.ConfigDict(dict(embedding_dim=300, units=1024))
    config.expander = "1024-1024-1024"
    config.loss = ml_collections.ConfigDict(dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0))
    config.batch_size = 128
    config.epochs = 30
    config.learning_rate = 2e-4
    config.lr_decay_epochs = 15
    config.lr_decay_factor = 0.1
    config.shuffle_buffer = 10_000
    config.centering_size = 5000
    config.protocols = PROTOCOLS
    config.fold_images = 1000
    config.ks = (1, 5, 10)
    config.headline = "5k"
    config.evaluate_untrained = False
    config.checkpoint_every_steps = 1000
    config.eval_batch_size = 256
    config.seed = 0
    config.verbose = 2
    return config


def validate(config):
    """Raises one ValueError listing every problem of a retrieval config, before any data is read.
    """
    flat = checks.flatten(config)
    problems = checks.key_problems(flat, default_config(), "retrieval")
    if problems:
        raise ValueError("Invalid retrieval config:\n  " + "\n  ".join(problems))
    checks.choice(problems, "config.dataset", config.dataset, DATASETS, "the captioned data")
    if config.dataset == coco_captions.DATASET:
        for key in ("train_split", "test_split"):
            try:
                coco_captions.check_split(config[key])
            except ValueError as error:
                problems.append(f"config.{key}: {error}")
    else:
        for key in ("train", "test"):
            checks.at_least(problems, f"config.canvases.{key}", config.canvases[key], 1)
        checks.at_least(problems, "config.canvases.size", config.canvases.size, 28)
        if not 1 <= config.canvases.max_items <= 4:
            problems.append("config.canvases.max_items must be 1 to 4. Received: "
                            f"config.canvases.max_items={config.canvases.max_items!r}")
        if config.augment:
            problems.append(
                "The canvases' captions say 'left of' and 'right of', which a flip falsifies: "
                "set config.augment=False with dataset 'canvases'. Received: config.augment=True")
        if "1k" in config.protocols and config.fold_images and config.canvases.test % max(
                config.fold_images, 1):
            problems.append(
                "protocol '1k' scores folds of fold_images test images: make config.canvases.test "
                f"a multiple of config.fold_images. Received: canvases.test={config.canvases.test},"
                f" fold_images={config.fold_images}")
    for key, least in (("captions_per_image", 1), ("vocabulary_size", 3), ("max_length", 1),
                       ("image_size", 8), ("text.embedding_dim", 1), ("text.units", 1),
                       ("batch_size", 2), ("epochs", 0), ("lr_decay_epochs", 1),
                       ("shuffle_buffer", 0), ("centering_size", 0), ("fold_images", 1),
                       ("eval_batch_size", 1), ("checkpoint_every_steps", 1)):
        checks.at_least(problems, f"config.{key}", flat[f"config.{key}"], least)
    checks.at_least(problems, "config.learning_rate", config.learning_rate, 0.0, strict=True)
    checks.at_least(problems, "config.lr_decay_factor", config.lr_decay_factor, 0.0, strict=True)
    checks.choice(problems, "config.image_depth", config.image_depth, RESNET_DEPTHS, "a depth")
    checks.choice(problems, "config.image_stem", config.image_stem, resnet_backbone.STEMS,
                  "a stem")
    if len(config.mean) not in (1, 3) or len(config.std) != len(config.mean):
        problems.append("config.mean and config.std are per-channel (1 or 3 values each, as "
                        f"many of each). Received: mean={config.mean}, std={config.std}")
    if not 0.0 < config.crop_fraction <= 1.0:
        problems.append("config.crop_fraction is the centre crop's side over the shorter side, "
                        f"in (0, 1]. Received: config.crop_fraction={config.crop_fraction!r}")
    try:
        expander_lib.parse_spec(config.expander)
    except ValueError as error:
        problems.append(f"config.expander: {error}")
    if not config.protocols or any(p not in PROTOCOLS for p in config.protocols):
        problems.append(f"config.protocols must be some of {list(PROTOCOLS)}. "
                        f"Received: config.protocols={config.protocols!r}")
    elif config.headline not in config.protocols:
        problems.append("config.headline must be one of config.protocols. Received: "
                        f"headline={config.headline!r}, protocols={config.protocols!r}")
    if not config.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                            for k in config.ks):
        problems.append(f"config.ks must be positive ints such as (1, 5, 10). "
                        f"Received: config.ks={config.ks!r}")
    if problems:
        raise ValueError("Invalid retrieval config:\n  " + "\n  ".join(problems))
    return config
