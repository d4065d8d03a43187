"""Object detection transfer: keras-hub's RetinaNet around a pretrained ResNet, fine-tuned on boxes.

`build_detector` puts the backbone's stage outputs (`pyramid.pyramid_encoder`, sharing its
weights) under keras-hub's `RetinaNetBackbone` (a feature pyramid) and `RetinaNetObjectDetector`
(anchors, focal-loss classification and Huber box heads, non-maximum suppression);
`train_detector` fine-tunes it on batches of `(images, {"boxes", "labels"})`; `predict_boxes`
and `evaluate_detector` turn its predictions into COCO-style AP and AP50 (pycocotools,
`average_precision.detection_ap`).

This is not the paper's detection protocol. VICReg's VOC07+12 detection figure (AP50 82.4) is
detectron2's Faster R-CNN R50-C4, trained 24k iterations with synchronised BatchNorm at 480-800
pixel multi-scale training; that protocol runs in detectron2 on the backbone exported with
`python -m trainers.export_torchvision` (docs/reproducing.md). RetinaNet here is a one-stage
detector with an FPN, trained on square resized images, so its figures compare backbones with
each other (pretrained against random, one pretraining against another), not with the paper.
"""

import keras
import keras_hub
import numpy as np

from keras_vicreg.transfer import average_precision
from keras_vicreg.transfer import pyramid

BOX_FORMAT = "yxyx"  # absolute pixels (ymin, xmin, ymax, xmax), as the data pipelines give


def build_detector(backbone, num_classes, *, min_level=3, max_level=7, anchor_size=4.0,
                   head_conv_layers=4, freeze_backbone=False, score_threshold=0.05,
                   max_detections=100, image_shape=None):
    """A `keras_hub.models.RetinaNetObjectDetector` whose image encoder is `backbone`.

    Args:
        backbone: the package's ResNet (see `pyramid.pyramid_encoder`); its weights are shared.
        num_classes: the object classes (no background class).
        min_level, max_level: the pyramid's levels (stride 2**level). The backbone gives the
            levels of its stages; levels above its last are extra stride-2 convolutions. The
            ImageNet stem's stages are levels 2-5 (RetinaNet's usual 3-7), the small stem's 0-3.
        anchor_size: anchors at level l are `anchor_size * 2**l` pixels (times 3 scales and 3
            aspect ratios); keras-hub's default 4 gives RetinaNet's 32 pixels at level 3.
        head_conv_layers: 3x3 convolutions (256 filters, keras-hub's fixed width) before each
            head's output; RetinaNet's is 4.
        freeze_backbone: train only the pyramid and the heads.
        score_threshold: the lowest class score kept by non-maximum suppression; low (0.05, as
            detectron2's evaluation) so that AP sees the whole precision-recall curve.
        max_detections: the most boxes kept per image.
        image_shape: the detector's input shape; default: the backbone's (a torchvision
            `.pth` read by `load_backbone` has a fixed side).

    Returns:
        A `RetinaNetObjectDetector` (`bounding_box_format="yxyx"`, pixels), not compiled.
    """
    if not 0 <= min_level <= max_level <= 9:
        raise ValueError("`min_level` and `max_level` must satisfy 0 <= min_level <= max_level "
                         f"<= 9. Received: min_level={min_level}, max_level={max_level}")
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be positive. Received: num_classes={num_classes}")
    encoder = pyramid.pyramid_encoder(backbone)
    levels = sorted(int(name[1:]) for name in encoder.pyramid_outputs)
    if min_level < levels[0] or min_level > levels[-1]:
        raise ValueError(
            f"`min_level` must be one of the backbone's stage levels {levels} (a stage of "
            f"stride 2**level). Received: min_level={min_level}"
        )
    encoder.trainable = not freeze_backbone
    image_shape = tuple(image_shape or encoder.inputs[0].shape[1:])
    retina_backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=min_level, max_level=max_level, use_p5=False,
        image_shape=image_shape,
    )
    anchors = keras_hub.layers.AnchorGenerator(
        BOX_FORMAT, min_level=min_level, max_level=max_level, num_scales=3,
        aspect_ratios=[0.5, 1.0, 2.0], anchor_size=anchor_size,
    )
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=BOX_FORMAT, from_logits=True, confidence_threshold=score_threshold,
        max_detections=max_detections,
    )
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=retina_backbone, num_classes=num_classes, bounding_box_format=BOX_FORMAT,
        anchor_generator=anchors, pre_logits_num_conv_layers=head_conv_layers,
        prediction_decoder=decoder,
    )


def train_detector(detector, dataset, *, steps, learning_rate, weight_decay=1e-4,
                   warmup_steps=0, callbacks=None, jit_compile="auto"):
    """Fine-tunes `detector` for `steps` batches of `dataset` with AdamW and a cosine decay.

    Args:
        detector: from `build_detector`.
        dataset: a repeating `tf.data.Dataset` (or iterable) of `(images, {"boxes": (b, n, 4),
            "labels": (b, n)})`, boxes in pixels, padding rows with label -1 and boxes -1.
        steps: the optimizer steps.
        learning_rate: the peak rate; warmed up linearly over `warmup_steps`, then cosine to 0.
        weight_decay: AdamW's decoupled weight decay.
        callbacks: Keras callbacks for `fit`.
        jit_compile: `keras.Model.compile`'s; False skips XLA's compilation of the detector,
            which on a small CPU run can take longer than the training.

    Returns:
        The `keras.callbacks.History` of `fit` (one epoch of `steps` steps).
    """
    if steps < 1 or learning_rate <= 0:
        raise ValueError("`steps` and `learning_rate` must be positive. "
                         f"Received: steps={steps}, learning_rate={learning_rate}")
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate, decay_steps=max(steps - warmup_steps, 1),
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps,
    )
    detector.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=weight_decay, clipnorm=10.0),
        box_loss=keras.losses.Huber(reduction="sum"),
        classification_loss=keras.losses.BinaryFocalCrossentropy(
            alpha=0.25, gamma=2.0, from_logits=True, reduction="sum"),
        jit_compile=jit_compile,
    )
    return detector.fit(dataset, steps_per_epoch=steps, epochs=1, callbacks=callbacks,
                        verbose=2)


def predict_boxes(detector, dataset):
    """Detections and ground truth of every batch of `dataset`, as `detection_ap` takes them.

    Args:
        detector: a trained `RetinaNetObjectDetector`.
        dataset: a finite iterable of `(images, {"boxes", "labels"[, "crowd"]})` batches.

    Returns:
        (ground truth, detections): lists with one dict per image.
    """
    truth, found = [], []
    for images, targets in dataset:
        # `predict` hands keras-hub's `decode_predictions` a 1-tuple it cannot unpack
        # (keras-hub 0.32), so the model is called and its outputs decoded here.
        images = keras.ops.convert_to_tensor(np.asarray(images))
        predictions = detector.decode_predictions(detector(images, training=False), images)
        predictions = {k: keras.ops.convert_to_numpy(v) for k, v in predictions.items()}
        targets = {k: np.asarray(v) for k, v in targets.items()}
        for index in range(len(targets["labels"])):
            keep = targets["labels"][index] >= 0
            truth.append({
                "boxes": targets["boxes"][index][keep],
                "classes": targets["labels"][index][keep],
                "crowd": targets.get("crowd", np.zeros_like(targets["labels"]))[index][keep],
            })
            count = int(predictions["num_detections"][index])
            found.append({
                "boxes": predictions["boxes"][index][:count],
                "classes": predictions["labels"][index][:count],
                "scores": predictions["confidence"][index][:count],
            })
    return truth, found


def evaluate_detector(detector, dataset, num_classes, class_names=None):
    """COCO-style AP and AP50 of `detector` on `dataset` (see `average_precision.detection_ap`)."""
    truth, found = predict_boxes(detector, dataset)
    return average_precision.detection_ap(truth, found, num_classes, class_names)
