r"""Semantic segmentation transfer: keras-hub's DeepLabV3 around a pretrained ResNet, mIoU.

    python -m trainers.segment --config=configs/segmentation.py:voc \
        --config.backbone=$HOME/vicreg/r50_1000ep/export/backbone.keras --workdir=$HOME/seg_voc

The backbone's four stages (`transfer.pyramid.pyramid_encoder`) are the image encoder of
`keras_hub.models.DeepLabV3Backbone`: atrous spatial pyramid pooling on the deepest stage, with
the DeepLabV3+ decoder (the stage of a quarter of its stride, projected to `projection_filters`
channels) unless `decoder=False`, wrapped in a `keras_hub.models.DeepLabV3ImageSegmenter` whose
logits are trained with per-pixel cross-entropy (`ignore_class` pixels left out), every layer
fine-tuned unless `freeze_backbone`. The score is VOC's mIoU: a confusion matrix accumulated over
the whole test set (`keras.metrics.MeanIoU`), IoU = TP / (TP + FP + FN) per class, background
included, averaged over the classes present in the truth or the predictions.

This is NOT the paper's protocol. The paper reports COCO detection and instance segmentation
with detectron2's Mask R-CNN (R50-C4, 1x: 39.4 box AP, 36.4 mask AP), reproduced through
`python -m trainers.export_torchvision` and detectron2 (docs/reproducing.md). Deviations of this
head from DeepLabV3 as published: the ResNet is not dilated (output stride 32 with the ImageNet
stem, not 8 or 16), images are resized to a square instead of random scale-and-crop, and
evaluation runs at that size (`keras_vicreg.data.segmentation_data`). It is a quick, all-Keras
check that a backbone's features transfer to dense prediction, on any of Keras' backends.
"""

import json
import os

import keras
import numpy as np

from keras_vicreg import export
from keras_vicreg.data import canvases
from keras_vicreg.data import segmentation_data
from keras_vicreg.evaluation import runs
from keras_vicreg.training import durable_files
from keras_vicreg.transfer import backbone as transfer_backbone
from keras_vicreg.transfer.pyramid import deepest_level
from keras_vicreg.transfer.pyramid import pyramid_encoder

OPTIMIZERS = ("sgd", "adamw")
_STEM_STRIDE = {"imagenet": 32, "small": 8}


def build_segmenter(backbone, num_classes, *, image_size, dilation_rates=(6, 12, 18),
                    projection_filters=48, decoder=True, freeze_backbone=False):
    """A keras-hub `DeepLabV3ImageSegmenter` (logits) whose image encoder is `backbone`'s stages.

    Args:
        backbone: a keras-hub-layout ResNet (see `pyramid_encoder`); its layers are shared.
        num_classes: classes of the output, background included.
        image_size: the side of the square input images, a multiple of the encoder's stride.
        dilation_rates: the atrous rates of the spatial pyramid pooling's 3x3 convolutions.
        projection_filters: the width of the decoder's projection of the low-level stage.
        decoder: DeepLabV3+ (low-level features at a quarter of the deepest stride) or DeepLabV3.
        freeze_backbone: keep the encoder's weights (and BatchNorm statistics) fixed.

    Returns:
        A `keras_hub.models.DeepLabV3ImageSegmenter` from float images (batch, size, size, 3) to
        logits (batch, size, size, num_classes), not compiled.
    """
    import keras_hub

    encoder = pyramid_encoder(backbone)
    deep = deepest_level(encoder)
    if image_size % 2**deep:
        raise ValueError(
            f"`image_size` must be a multiple of the backbone's output stride {2**deep}. "
            f"Received: image_size={image_size}"
        )
    low = deep - 2 if decoder else None
    encoder.trainable = not freeze_backbone
    head = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key=f"P{deep}",
        upsampling_size=2 ** (deep - low) if decoder else 1,
        dilation_rates=list(dilation_rates),
        low_level_feature_key=f"P{low}" if decoder else None,
        projection_filters=projection_filters,
        image_shape=(image_size, image_size, 3),
    )
    # compile=False: keras-hub's default compile adds a dense CategoricalAccuracy, which a later
    # `compile(metrics=None)` does not remove (Keras keeps the earlier compile's metrics).
    return keras_hub.models.DeepLabV3ImageSegmenter(head, num_classes=num_classes, compile=False)


def compile_segmenter(segmenter, *, steps, learning_rate, optimizer="sgd", momentum=0.9,
                      weight_decay=1e-4, ignore_class=segmentation_data.IGNORE_CLASS,
                      jit_compile=True):
    """Per-pixel cross-entropy on logits, SGD with DeepLab's poly decay (power 0.9) or AdamW with
    a cosine decay, over `steps` steps; `jit_compile=True` is Keras' "auto" (XLA on
    JAX, and on TensorFlow with an accelerator; never on PyTorch)."""
    if optimizer == "sgd":
        schedule = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, steps, end_learning_rate=0.0, power=0.9)
        opt = keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    segmenter.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        ignore_class=ignore_class),
        metrics=None,
        jit_compile="auto" if jit_compile else False,
    )
    return segmenter


def evaluate_miou(segmenter, dataset, num_classes, *, ignore_class=segmentation_data.IGNORE_CLASS,
                  class_names=None):
    """mIoU, per-class IoU and pixel accuracy of the segmenter's argmax over a whole dataset.

    One `keras.metrics.MeanIoU` accumulates the confusion matrix over every batch (VOC's way: not
    a mean of per-image IoUs); pixels whose truth is `ignore_class` are left out.

    Returns:
        A dict: `miou`, `iou` (class name -> IoU, None for a class absent from both the truth and
        the predictions, which the mean leaves out), `pixel_accuracy`, `confusion` (rows: truth).
    """
    metric = keras.metrics.MeanIoU(num_classes, ignore_class=ignore_class, sparse_y_pred=False)
    for images, masks in dataset:
        metric.update_state(np.asarray(masks), segmenter.predict_on_batch(images))
    confusion = keras.ops.convert_to_numpy(metric.total_cm).astype(np.int64)
    true_positives = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    names = class_names or [str(index) for index in range(num_classes)]
    iou = {name: (float(tp / total) if total else None)
           for name, tp, total in zip(names, true_positives, union)}
    return dict(
        miou=float(keras.ops.convert_to_numpy(metric.result())),
        iou=iou,
        pixel_accuracy=float(true_positives.sum() / max(confusion.sum(), 1)),
        confusion=confusion.tolist(),
    )


def check_config(config):
    """Refuses a bad config, backbone path or backend before any data is read or model built."""
    def fail(message, **received):
        shown = ", ".join(f"{key}={value!r}" for key, value in received.items())
        raise ValueError(f"{message} Received: {shown}")

    if config.dataset not in segmentation_data.DATASETS:
        fail(f"`dataset` must be one of {segmentation_data.DATASETS}.", dataset=config.dataset)
    if config.backbone_stem not in _STEM_STRIDE:
        fail(f"`backbone_stem` must be one of {tuple(_STEM_STRIDE)}.",
             backbone_stem=config.backbone_stem)
    if config.backbone_depth not in (18, 34, 50, 101, 152, 200):
        fail("`backbone_depth` must be 18, 34, 50, 101, 152 or 200.",
             backbone_depth=config.backbone_depth)
    stride = _STEM_STRIDE[config.backbone_stem]
    if config.image_size <= 0 or config.image_size % stride:
        fail(f"`image_size` must be a positive multiple of {stride}, the output stride of the "
             f"{config.backbone_stem!r} stem.", image_size=config.image_size)
    if config.dataset == "canvases" and config.image_size < 28:
        fail("Canvases hold 28-pixel items: `image_size` must be at least 28.",
             image_size=config.image_size)
    for key in ("steps", "batch_size", "eval_batch_size", "canvas_train", "canvas_test"):
        if int(config[key]) < 1:
            fail(f"`{key}` must be a positive int.", **{key: config[key]})
    if config.learning_rate <= 0 or config.weight_decay < 0:
        fail("`learning_rate` must be positive and `weight_decay` not negative.",
             learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer not in OPTIMIZERS:
        fail(f"`optimizer` must be one of {OPTIMIZERS}.", optimizer=config.optimizer)
    if not config.dilation_rates or min(config.dilation_rates) < 1:
        fail("`dilation_rates` must be positive ints such as (6, 12, 18).",
             dilation_rates=tuple(config.dilation_rates))
    path = config.backbone
    if path:
        if export.is_exported(path):
            fail("An exported SavedModel serves pooled features only; segmentation needs the "
                 "stages' feature maps: give its .keras file or a torchvision .pth.", backbone=path)
        if not path.endswith((".keras", *runs.TORCH_SUFFIXES)):
            fail("`backbone` must be a .keras file, a torchvision .pth or '' (random weights).",
                 backbone=path)
        if not os.path.exists(path):
            fail("`backbone` does not exist.", backbone=path)


def segmentation_datasets(config, data_dir=None):
    """(train batches repeated forever, test batches, class names) of the config's dataset."""
    common = dict(mean=tuple(config.mean), std=tuple(config.std))
    if config.dataset == "canvases":
        def split(count, seed, name):
            return canvases.fashion_mnist_canvases(
                count, canvas_size=config.image_size, max_items=config.canvas_max_items,
                seed=seed, split=name)
        train = segmentation_data.canvas_dataset(
            split(config.canvas_train, config.seed, "train"), batch_size=config.batch_size,
            train=True, seed=config.seed, **common)
        test = segmentation_data.canvas_dataset(
            split(config.canvas_test, config.seed + 1, "test"),
            batch_size=config.eval_batch_size, train=False, **common)
        return train, test, segmentation_data.CANVAS_CLASSES
    shared = dict(image_size=config.image_size, data_dir=data_dir, **common)
    train, names = segmentation_data.panoptic_dataset(
        config.dataset, config.train_split, batch_size=config.batch_size, train=True,
        seed=config.seed, **shared)
    test, _ = segmentation_data.panoptic_dataset(
        config.dataset, config.test_split, batch_size=config.eval_batch_size, train=False,
        **shared)
    return train, test, names


def run_segmentation(config, *, workdir, data_dir=None):
    """Checks the config, fine-tunes a DeepLabV3 on the config's data, writes results.json.

    Returns:
        The record written to `<workdir>/results.json`: `miou`, `iou` (class -> IoU),
        `pixel_accuracy`, `confusion`, the backbone's path, the backend and the config.
    """
    check_config(config)
    keras.utils.set_random_seed(config.seed)
    backbone = transfer_backbone.load_or_build(
        config, input_shape=(config.image_size, config.image_size, 3))
    train, test, names = segmentation_datasets(config, data_dir)
    segmenter = build_segmenter(
        backbone, len(names), image_size=config.image_size,
        dilation_rates=tuple(config.dilation_rates), projection_filters=config.projection_filters,
        decoder=config.decoder, freeze_backbone=config.freeze_backbone,
    )
    compile_segmenter(
        segmenter, steps=config.steps, learning_rate=config.learning_rate,
        optimizer=config.optimizer, momentum=config.momentum, weight_decay=config.weight_decay,
        jit_compile=config.jit_compile,
    )
    history = segmenter.fit(
        train, epochs=1, steps_per_epoch=config.steps, verbose=2,
        callbacks=[keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"))],
    )
    results = evaluate_miou(segmenter, test, len(names), class_names=names)
    record = dict(
        protocol="deeplabv3_segmentation", dataset=config.dataset, backbone=config.backbone,
        backend=keras.backend.backend(), num_classes=len(names),
        final_train_loss=float(history.history["loss"][-1]), **results,
        config=json.loads(config.to_json_best_effort()),
    )
    durable_files.write_results_json(workdir, record)
    return record
