"""COCO-style average precision of detections, computed by pycocotools' `COCOeval`.

`detection_ap` hands arrays of boxes to pycocotools (the reference implementation of the COCO
metric, rather than a re-implementation here) and returns AP averaged over the IoU thresholds
0.5:0.05:0.95 ("ap"), AP at IoU 0.5 ("ap50"), both per class too. This is COCO's 101-point
interpolated AP, also at IoU 0.5: it is not the VOC 2007 devkit's 11-point AP50 nor the VOC
2010+ all-points AP50 that detectron2's VOC evaluator reports, and the figures differ slightly.

VOC's "difficult" objects are given to pycocotools as crowd regions (`iscrowd=1`): a detection on
one is neither a true nor a false positive, as in VOC, but pycocotools matches crowds by the
intersection over the detection's area rather than by IoU, a small departure.
"""

import contextlib
import io

import numpy as np
from pycocotools import coco as coco_lib
from pycocotools import cocoeval


def detection_ap(ground_truth, detections, num_classes, class_names=None):
    """AP (IoU 0.5:0.95) and AP50 of `detections` against `ground_truth`, overall and per class.

    Args:
        ground_truth: a list, one dict per image, of "boxes" (n, 4) in pixels as (ymin, xmin,
            ymax, xmax), "classes" (n,) ints in [0, num_classes), and optionally "crowd" (n,)
            bools (regions a detection may hit without counting: COCO's crowds, VOC's
            difficult objects). Padding rows (class < 0) are dropped.
        detections: a list, one dict per image in the same order, of "boxes" (m, 4) as above,
            "classes" (m,) and "scores" (m,). Rows with class < 0 are dropped.
        num_classes: the number of classes.
        class_names: names for the per-class dicts; default: "0", "1", ...

    Returns:
        A dict: "ap", "ap50" (floats in [0, 1]), "per_class_ap", "per_class_ap50" ({name: AP},
        only for classes with ground truth), "num_detections", "num_ground_truth".
    """
    if len(ground_truth) != len(detections):
        raise ValueError(
            "`ground_truth` and `detections` must hold one entry per image. "
            f"Received: {len(ground_truth)} and {len(detections)} images"
        )
    names = list(class_names) if class_names is not None else [str(k) for k in range(
        num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"`class_names` must have {num_classes} names. Received: {names}")
    gt_dataset = {"images": [], "annotations": [],
                  "categories": [{"id": k + 1, "name": names[k]} for k in range(num_classes)]}
    results = []
    for image_id, (truth, found) in enumerate(zip(ground_truth, detections), start=1):
        gt_dataset["images"].append({"id": image_id})
        classes = np.asarray(truth["classes"]).reshape(-1)
        boxes = np.asarray(truth["boxes"], np.float64).reshape(-1, 4)
        crowd = np.asarray(truth.get("crowd", np.zeros(len(classes), bool))).reshape(-1)
        for box, label, is_crowd in zip(boxes, classes, crowd):
            if label < 0:
                continue
            xywh = _xywh(box)
            gt_dataset["annotations"].append({
                "id": len(gt_dataset["annotations"]) + 1, "image_id": image_id,
                "category_id": int(label) + 1, "bbox": xywh, "area": xywh[2] * xywh[3],
                "iscrowd": int(bool(is_crowd)),
            })
        for box, label, score in zip(np.asarray(found["boxes"], np.float64).reshape(-1, 4),
                                     np.asarray(found["classes"]).reshape(-1),
                                     np.asarray(found["scores"]).reshape(-1)):
            if label >= 0:
                results.append({"image_id": image_id, "category_id": int(label) + 1,
                                "bbox": _xywh(box), "score": float(score)})
    num_truth = sum(1 for a in gt_dataset["annotations"] if not a["iscrowd"])
    record = {"ap": 0.0, "ap50": 0.0, "per_class_ap": {}, "per_class_ap50": {},
              "num_detections": len(results), "num_ground_truth": num_truth}
    if not results or not num_truth:
        return record  # pycocotools cannot load an empty result list; nothing found scores 0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth_api = coco_lib.COCO()
        truth_api.dataset = gt_dataset
        truth_api.createIndex()
        evaluator = cocoeval.COCOeval(truth_api, truth_api.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: (IoU thresholds, recall points, classes, area ranges, max detections); -1 where
    # a class has no ground truth. Area range 0 is "all", max detections index -1 is 100.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    record["ap"] = _mean_valid(precision)
    record["ap50"] = _mean_valid(precision[0])
    for k in range(num_classes):
        if (precision[:, :, k] > -1).any():
            record["per_class_ap"][names[k]] = _mean_valid(precision[:, :, k])
            record["per_class_ap50"][names[k]] = _mean_valid(precision[0, :, k])
    return record


def _xywh(box):
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def _mean_valid(values):
    """The mean of the entries > -1 (pycocotools' mark for "no ground truth"), 0 if none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0
