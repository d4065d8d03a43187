"""The detection transfer run from a config: checks, backbone, data, fine-tuning, results.json.

`trainers/detect.py` calls `run_detection(config, workdir=..., data_dir=...)`. The config keys
(see `configs/detection.py`):

    dataset                 "voc" (VOC07+12 -> VOC07 test), "coco" (2017 train -> validation) or
                            "canvases" (generated Fashion-MNIST canvases, offline)
    backbone                a .keras file or a torchvision-layout .pth; "" for random weights
    backbone_depth, backbone_stem, backbone_filters
                            the ResNet built for random weights (depth and stem for a .pth too)
    image_size              the square side of the resized images (a multiple of 2**max_level)
    min_level, max_level, anchor_size, head_conv_layers
                            the RetinaNet (`keras_vicreg.transfer.detection.build_detector`)
    steps, batch_size, learning_rate, warmup_steps, weight_decay, freeze_backbone
                            the fine-tuning (AdamW, warmup then cosine decay)
    mean, std, max_boxes, score_threshold, max_detections, eval_examples, shuffle_buffer, seed
    canvas_train, canvas_test, canvas_size, canvas_items
                            the generated canvases ("canvases" only)

Everything is checked before a backbone or an image is read, so a wrong key fails in seconds with
what to change. The workdir gets `results.json` (ap, ap50, per-class APs, the backbone's path,
the backend, the config) and `tensorboard/`.

Not the paper's protocol: see `keras_vicreg.transfer.detection`.
"""

import json
import os

import keras

from keras_vicreg.data import detection_data
from keras_vicreg.evaluation import runs
from keras_vicreg.models.backbones import resnet_backbone
from keras_vicreg.training import durable_files
from keras_vicreg.transfer import backbone as transfer_backbone
from keras_vicreg.transfer import detection

NUM_CLASSES = {"voc": 20, "coco": 80, "canvases": 10}
BACKBONE_SUFFIXES = (".keras", *runs.TORCH_SUFFIXES)
BACKENDS = ("tensorflow", "jax", "torch")


def validate(config):
    """Raises ValueError naming the key to change; reads no file but the backbone's existence."""
    def need(condition, message, **received):
        if not condition:
            shown = ", ".join(f"config.{k}={v!r}" for k, v in received.items())
            raise ValueError(f"{message} Received: {shown}")

    need(keras.backend.backend() in BACKENDS, f"The backend must be one of {BACKENDS}.",
         backend=keras.backend.backend())
    need(config.dataset in NUM_CLASSES, f"`dataset` must be one of {tuple(NUM_CLASSES)}.",
         dataset=config.dataset)
    path = config.backbone
    need(not path or (path.endswith(BACKBONE_SUFFIXES) and os.path.exists(path)),
         "`backbone` must be '' (random weights), an existing .keras file or a torchvision .pth "
         "state dict (fine-tuning needs the layers: not an exported SavedModel).", backbone=path)
    need(config.backbone_stem in resnet_backbone.STEMS,
         f"`backbone_stem` must be one of {resnet_backbone.STEMS}.",
         backbone_stem=config.backbone_stem)
    need(config.backbone_depth in (18, 34, 50, 101, 152, 200),
         "`backbone_depth` must be 18, 34, 50, 101, 152 or 200.",
         backbone_depth=config.backbone_depth)
    need(0 <= config.min_level <= config.max_level <= 9,
         "`min_level` and `max_level` need 0 <= min_level <= max_level <= 9.",
         min_level=config.min_level, max_level=config.max_level)
    need(config.image_size > 0 and config.image_size % 2**config.max_level == 0,
         f"`image_size` must be a positive multiple of 2**max_level = {2**config.max_level}.",
         image_size=config.image_size, max_level=config.max_level)
    need(config.steps >= 1 and 0 <= config.warmup_steps < config.steps,
         "`steps` must be positive and `warmup_steps` in [0, steps).",
         steps=config.steps, warmup_steps=config.warmup_steps)
    need(config.batch_size >= 1, "`batch_size` must be positive.", batch_size=config.batch_size)
    need(config.learning_rate > 0 and config.weight_decay >= 0,
         "`learning_rate` must be positive and `weight_decay` non-negative.",
         learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    need(len(config.mean) == 3 and len(config.std) == 3 and min(config.std) > 0,
         "`mean` and `std` must be three per-channel values, std positive.",
         mean=config.mean, std=config.std)
    need(config.anchor_size > 0 and config.head_conv_layers >= 0 and config.max_boxes >= 1,
         "`anchor_size` must be positive, `head_conv_layers` >= 0, `max_boxes` >= 1.",
         anchor_size=config.anchor_size, head_conv_layers=config.head_conv_layers,
         max_boxes=config.max_boxes)
    need(0.0 <= config.score_threshold < 1.0 and config.max_detections >= 1,
         "`score_threshold` must be in [0, 1) and `max_detections` positive.",
         score_threshold=config.score_threshold, max_detections=config.max_detections)
    need(config.eval_examples >= 0, "`eval_examples` must be >= 0 (0: the whole test split).",
         eval_examples=config.eval_examples)
    if config.dataset == "canvases":
        need(config.canvas_train >= config.batch_size and config.canvas_test >= 1,
             "`canvas_train` must hold a batch and `canvas_test` be positive.",
             canvas_train=config.canvas_train, canvas_test=config.canvas_test,
             batch_size=config.batch_size)
        need(config.canvas_size >= 28 and 1 <= config.canvas_items <= 4,
             "`canvas_size` must be at least 28 (an item's side), `canvas_items` 1 to 4.",
             canvas_size=config.canvas_size, canvas_items=config.canvas_items)


def datasets(config, data_dir=None):
    """(training batches, evaluation batches, class names) of the config's dataset."""
    if config.dataset == "canvases":
        common = dict(canvas_size=config.canvas_size, max_items=config.canvas_items)
        train, names = detection_data.canvas_detection(
            config.canvas_train, seed=config.seed, split="train", **common)
        test, _ = detection_data.canvas_detection(
            config.canvas_test, seed=config.seed + 1, split="test", **common)
    else:
        parts = {"voc": (detection_data.VOC_TRAIN, detection_data.VOC_TEST),
                 "coco": (detection_data.COCO_TRAIN, detection_data.COCO_TEST)}[config.dataset]
        train, names = detection_data.tfds_detection(parts[0], train=True, data_dir=data_dir)
        test, _ = detection_data.tfds_detection(parts[1], train=False, data_dir=data_dir)
    if config.eval_examples:
        test = test.take(config.eval_examples)
    common = dict(image_size=config.image_size, mean=tuple(config.mean), std=tuple(config.std),
                  max_boxes=config.max_boxes, seed=config.seed)
    train = detection_data.detection_batches(
        train, batch_size=config.batch_size, train=True, shuffle_buffer=config.shuffle_buffer,
        **common)
    test = detection_data.detection_batches(test, batch_size=config.batch_size, **common)
    return train, test, names


def run_detection(config, *, workdir, data_dir=None):
    """Fine-tunes a RetinaNet around the config's backbone and writes `<workdir>/results.json`.

    Returns:
        The dict written to results.json.
    """
    validate(config)
    keras.utils.set_random_seed(config.seed)
    backbone = transfer_backbone.load_or_build(config)
    detector = detection.build_detector(
        backbone, NUM_CLASSES[config.dataset], min_level=config.min_level,
        max_level=config.max_level, anchor_size=config.anchor_size,
        head_conv_layers=config.head_conv_layers, freeze_backbone=config.freeze_backbone,
        score_threshold=config.score_threshold, max_detections=config.max_detections,
    )
    train, test, names = datasets(config, data_dir)
    history = detection.train_detector(
        detector, train, steps=config.steps, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        callbacks=[keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"))],
    )
    results = detection.evaluate_detector(detector, test, len(names), names)
    record = {
        "protocol": "retinanet_detection",
        "dataset": config.dataset,
        "ap50": results.pop("ap50"),
        "ap": results.pop("ap"),
        **results,
        "final_train_loss": float(history.history["loss"][-1]),
        "backbone": config.backbone or "random",
        "backend": keras.backend.backend(),
        "config": json.loads(config.to_json_best_effort()),
    }
    durable_files.write_results_json(workdir, record)
    return record
