"""The VOC07 SVM protocol run from a config: VOC 2007 with VISSL's targets, features, results.json.

`trainers/svm_eval.py` parses its flags and calls `run_svm_eval`; `keras_vicreg.evaluation.svm`
does the SVMs. The config keys (see `configs/voc07_svm.py`):

    backbone                a .keras file, SavedModel or torchvision .pth (`runs.load_backbone`);
                            "" only with dataset "generated": a random small ResNet (smoke runs)
    backbone_depth, backbone_stem
                            the ResNet of a .pth
    dataset                 "voc/2007" (tfds, prepared beforehand) or "generated"
    train_split, test_split the tfds splits ("train+validation" is VOC's trainval)
    image_size, resize_ratio, mean, std
                            the centre crop (`data.labelled_dataset`, crop 1 / resize_ratio)
    batch_size              for the feature extraction
    costs, folds, ap_method, max_iter, n_jobs
                            the SVMs (`svm.svm_protocol`)
    generated_train, generated_test, generated_classes
                            the sizes of the generated data
    seed

Targets come from tfds' "labels" (every object's class) and "labels_no_difficult": 1 where the
class has a non-difficult object, -1 where it has only difficult ones, 0 elsewhere, as VISSL's VOC
files (ImageSets/Main/<class>_<split>.txt, whose 1 / -1 / 0 VISSL maps to 1 / 0 / -1).

Deviation from VISSL's VOC07 config: VISSL resizes every image to 224 x 224 without keeping its
aspect ratio; here the images go through the one labelled pipeline (shorter side to
image_size * resize_ratio, centre crop), with resize_ratio 1 (the whole shorter side) by default.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vicreg import data
from keras_vicreg.data.synthetic import synthetic_multilabel
from keras_vicreg.evaluation import linear
from keras_vicreg.evaluation import runs
from keras_vicreg.evaluation import svm
from keras_vicreg.models.backbones.resnet_backbone import resnet
from keras_vicreg.training import durable_files

GENERATED = "generated"
TARGETS_KEY = "svm_targets"


def voc_targets(labels, labels_no_difficult, num_classes):
    """VISSL's target vector of one tfds VOC element: 1 present, 0 absent, -1 difficult only."""
    def hot(indices):
        counts = tf.reduce_sum(tf.one_hot(tf.cast(indices, tf.int32), num_classes), axis=0)
        return counts > 0

    every, easy = hot(labels), hot(labels_no_difficult)
    return tf.where(easy, 1, tf.where(every, -1, 0))


def tfds_split(name, split, data_dir=None):
    """(dataset of {"image", TARGETS_KEY}, class names) of a prepared tfds VOC split."""
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if "labels" not in features or "labels_no_difficult" not in features:
        raise ValueError(
            "The SVM protocol reads VOC's `labels` and `labels_no_difficult` features (tfds "
            f"voc/2007). Received: dataset={name!r} with features {list(features)}"
        )
    names = features["labels"].feature.names
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    dataset = dataset.map(lambda element: {
        "image": element["image"],
        TARGETS_KEY: voc_targets(element["labels"], element["labels_no_difficult"], len(names)),
    }, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, list(names)


def features_and_targets(backbone, source, config):
    """Runs the backbone over a source's centre crops: (features (n, d), targets (n, classes))."""
    batches = data.labelled_dataset(
        source, config.batch_size, train=False, seed=config.seed,
        augmentation=data.labelled_view(config.image_size, tuple(config.mean), tuple(config.std)),
        crop_fraction=1.0 / config.resize_ratio,
        label_spec=data.LabelSpec("image", TARGETS_KEY),
    )
    features, targets = linear.extract_features(backbone, batches)
    return features, targets.astype(np.int64)


def check_config(config):
    """Checks the SVM keys before any data is read or any feature extracted."""
    if config.ap_method not in svm.AP_METHODS:
        raise ValueError(f"`ap_method` must be one of {svm.AP_METHODS}. Received: "
                         f"ap_method={config.ap_method!r}")
    if not config.costs or min(config.costs) <= 0 or config.folds < 2:
        raise ValueError("`costs` must be positive numbers and `folds` at least 2. Received: "
                         f"costs={tuple(config.costs)}, folds={config.folds}")
    if not config.backbone and config.dataset != GENERATED:
        raise ValueError("Set `config.backbone` to a .keras file (or a SavedModel or .pth); only "
                         f"dataset={GENERATED!r} runs without one. Received: backbone=''")
    if config.backbone and not os.path.exists(config.backbone):
        raise ValueError(f"`config.backbone` does not exist. Received: {config.backbone!r}")


def _sources(config, data_dir):
    if config.dataset != GENERATED:
        train, names = tfds_split(config.dataset, config.train_split, data_dir)
        test, _ = tfds_split(config.dataset, config.test_split, data_dir)
        return train, test, names
    shape = (config.image_size, config.generated_classes)
    train = synthetic_multilabel(config.generated_train, *shape, seed=config.seed)
    test = synthetic_multilabel(config.generated_test, *shape, seed=config.seed + 1)
    return train, test, [f"class{c}" for c in range(config.generated_classes)]


def _backbone(config):
    if config.backbone:
        return runs.load_backbone(config.backbone, image_size=config.image_size,
                                  depth=config.backbone_depth, stem=config.backbone_stem)
    # A smoke run on generated data: random weights (still well above chance on colours).
    return resnet(18, stem="small", filters=(8, 16, 32, 64),
                  input_shape=(config.image_size, config.image_size, 3))


def run_svm_eval(config, *, workdir, data_dir=None):
    """Extracts the features of both splits, trains and scores the SVMs, writes results.json.

    Returns:
        The record written to `<workdir>/results.json`: `map`, `ap` (class -> test AP), `cost`
        (class -> chosen cost), `cv_ap`, `unconverged`, and the run's settings.
    """
    check_config(config)
    keras.utils.set_random_seed(config.seed)
    train_source, test_source, names = _sources(config, data_dir)
    backbone = _backbone(config)
    train_features, train_targets = features_and_targets(backbone, train_source, config)
    test_features, test_targets = features_and_targets(backbone, test_source, config)
    results = svm.svm_protocol(
        train_features, train_targets, test_features, test_targets, class_names=names,
        costs=tuple(config.costs), folds=config.folds, method=config.ap_method,
        max_iter=config.max_iter, n_jobs=config.n_jobs or None,
    )
    record = dict(
        protocol="voc07_svm", dataset=config.dataset, backbone=config.backbone,
        backend=keras.backend.backend(), train_images=len(train_features),
        test_images=len(test_features), feature_width=int(train_features.shape[1]), **results,
        config=json.loads(config.to_json_best_effort()),
    )
    durable_files.write_results_json(workdir, record)
    return record
