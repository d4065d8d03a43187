"""The evaluation protocols run from a config: data, backbone, training, results JSON, TensorBoard.

`trainers/linear_eval.py`, `trainers/finetune.py` and `trainers/knn_eval.py` parse their flags
(`keras_vicreg.evaluation.command_line`) and call `run_linear_eval`, `run_finetune` or `run_knn`.
The config keys (see `configs/linear_eval_imagenet.py`):

    dataset                 a tfds name ("imagenet2012", "places365_small", "voc/2007", ...) or a
                            folder of split/class/image files (`tfds.ImageFolder`)
    train_split, val_split  the splits; label_key: "" for the dataset's class label
    train_percent           0 for the whole training split, else its first percent (tfds slicing)
    image_size, resize_ratio, mean, std
                            the preprocessing; an exported SavedModel's own values win
    backbone_depth, backbone_stem
                            the ResNet of a PyTorch state dict (`load_torchvision_resnet`)
    batch_size, epochs, momentum, weight_decay, seed, shuffle_buffer
    learning_rate           linear: the head's; learning_rates: the sweep on precomputed features
    head, milestones, nesterov
                            linear: "linear" (released: global pooling, Dense) or "vissl" (VISSL's
                            res5 pooling, BatchNorm, Dense); epochs where the rate drops 10x
                            (empty: cosine); Nesterov momentum (`evaluation.vissl_linear`)
    precompute_features     linear: embed centre crops once, then train only the head
    backbone_learning_rate, head_learning_rate
                            fine-tuning
    k, temperature          kNN

The workdir gets `results.json` (the numbers, the backbone's path, the resolved config) and
`tensorboard/` (loss and accuracy per epoch).
"""

import json
import os

import keras
import ml_collections
import tensorflow as tf

from keras_vicreg import data
from keras_vicreg import export
from keras_vicreg.data import transforms
from keras_vicreg.models.backbones.torchvision import load_torchvision_resnet
from keras_vicreg.models.vicreg import VICReg
from keras_vicreg.evaluation import knn as knn_lib
from keras_vicreg.evaluation import linear
from keras_vicreg.evaluation import vissl_linear
from keras_vicreg.evaluation.finetune import finetune
from keras_vicreg.training import durable_files

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")


def default_config():
    """Every key of the evaluation configs, at the released ImageNet linear evaluation's values.

    Returns:
        An unlocked `ml_collections.ConfigDict`; a file of `configs/` sets its recipe on it.
    """
    config = ml_collections.ConfigDict()
    config.dataset = "imagenet2012"
    config.train_split = "train"
    config.val_split = "validation"
    config.label_key = ""
    config.train_percent = 0.0
    config.image_size = 224
    config.resize_ratio = 256 / 224
    config.mean = transforms.IMAGENET_MEAN
    config.std = transforms.IMAGENET_STD
    config.backbone_depth = 50
    config.backbone_stem = "imagenet"
    config.batch_size = 256
    config.epochs = 100
    config.momentum = 0.9
    config.weight_decay = 1e-6
    config.learning_rate = 0.02
    config.precompute_features = False
    config.learning_rates = (0.02,)
    config.head = "linear"
    config.milestones = ()
    config.nesterov = False
    config.backbone_learning_rate = 0.0
    config.head_learning_rate = 0.02
    config.k = 200
    config.temperature = 0.07
    config.seed = 0
    config.shuffle_buffer = 10_000
    return config


def shrink_for_local_run(config):
    """Makes a config a smoke run small enough for a CPU (point `dataset` at a small folder)."""
    config.image_size = 16
    config.batch_size = 8
    config.epochs = 1
    config.shuffle_buffer = 64
    config.k = 5
    return config


def load_backbone(path, *, image_size, depth=50, stem="imagenet"):
    """A backbone from a `.keras` file, an exported SavedModel or a PyTorch state dict.

    Args:
        path: a `.keras` file (a backbone, or a `VICReg` model whose backbone is taken), a
            SavedModel directory from `keras_vicreg.export` (TensorFlow backend only, through
            `keras.layers.TFSMLayer`), or a torchvision-layout state dict (`.pth`, `.pt`,
            `.pth.tar`).
        image_size: the side of the input images.
        depth, stem: the ResNet of a PyTorch state dict.

    Returns:
        A `keras.Model` from images to features.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False)
        return model.backbone if isinstance(model, VICReg) else model
    if path.endswith(TORCH_SUFFIXES):
        return load_torchvision_resnet(
            path, depth, input_shape=(image_size, image_size, 3), stem=stem
        )
    if export.is_exported(path):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "A SavedModel can be a Keras layer (TFSMLayer) on the tensorflow backend only; use "
                "KERAS_BACKEND=tensorflow, the .keras file, or precompute_features=True. "
                f"Received: path={path!r}, KERAS_BACKEND={keras.backend.backend()!r}"
            )
        metadata = export.load_metadata(path)
        side, channels = metadata["image_size"], metadata["channels"]
        inputs = keras.Input((side, side, channels), name="images")
        features = keras.layers.TFSMLayer(path, call_endpoint="serve_features")(inputs)
        return keras.Model(inputs, features, name=metadata["backbone"])
    raise ValueError(
        "The backbone must be a .keras file, a SavedModel directory written by "
        "keras_vicreg.export.export_backbone, or a PyTorch state dict (.pth, .pt). "
        f"Received: path={path!r}"
    )


def preprocessing(config, backbone_path):
    """(image_size, resize_ratio, mean, std): an exported SavedModel's own, else the config's."""
    path = os.fspath(backbone_path)
    if export.is_exported(path):
        meta = export.load_metadata(path)
        return meta["image_size"], meta["resize_ratio"], tuple(meta["mean"]), tuple(meta["std"])
    return config.image_size, config.resize_ratio, tuple(config.mean), tuple(config.std)


def labelled_splits(config, backbone_path, data_dir=None, *, train_augmented=True):
    """(train batches, validation batches, `data.LabelSpec`) of the config's dataset.

    Both read through `keras_vicreg.data.labelled_dataset`, the centre crop's `crop_fraction` being
    `1 / resize_ratio` (an exported SavedModel's own, else the config's).
    """
    image_size, resize_ratio, mean, std = preprocessing(config, backbone_path)
    label_key = config.label_key or None
    train, spec = data.load_labelled(
        config.dataset, config.train_split, data_dir=data_dir, label_key=label_key,
        percent=config.train_percent or None, shuffle_files=train_augmented, seed=config.seed,
    )
    val, _ = data.load_labelled(config.dataset, config.val_split, data_dir=data_dir,
                                label_key=label_key)
    common = dict(augmentation=data.labelled_view(image_size, mean, std),
                  crop_fraction=1.0 / resize_ratio, batch_size=config.batch_size,
                  seed=config.seed, label_spec=spec)
    shuffle_buffer = config.shuffle_buffer if train_augmented else 0
    train = data.labelled_dataset(train, train=train_augmented, shuffle_buffer=shuffle_buffer,
                                  **common)
    val = data.labelled_dataset(val, train=False, **common)
    return train, val, spec


def run_linear_eval(config, *, backbone_path, workdir, data_dir=None):
    """Linear evaluation (or transfer) of a frozen backbone; writes results.json and TensorBoard.

    With `config.precompute_features`, the centre-cropped training images are embedded once and a
    head is trained for each of `config.learning_rates`; otherwise the head trains on augmented
    images through the frozen backbone at `config.learning_rate`.

    Returns:
        The results dict written to `<workdir>/results.json`.
    """
    vissl_linear.check_recipe(config)
    keras.utils.set_random_seed(config.seed)
    precompute = config.precompute_features
    train, val, spec = labelled_splits(
        config, backbone_path, data_dir, train_augmented=not precompute
    )
    recipe = dict(num_classes=spec.num_classes, epochs=config.epochs, momentum=config.momentum,
                  weight_decay=config.weight_decay, multi_label=spec.multi_label)
    tensorboard = os.path.join(workdir, "tensorboard")
    if precompute:
        extractor = _feature_extractor(config, backbone_path)
        train_features = linear.extract_features(extractor, train)
        val_features = linear.extract_features(extractor, val)
        results = linear.linear_evaluation_on_features(
            train_features, val_features, learning_rates=tuple(config.learning_rates),
            batch_size=config.batch_size, seed=config.seed,
            callbacks=lambda lr: [keras.callbacks.TensorBoard(f"{tensorboard}/lr_{lr}")],
            **recipe,
        )
    else:
        backbone = load_backbone(backbone_path, image_size=preprocessing(config, backbone_path)[0],
                                 depth=config.backbone_depth, stem=config.backbone_stem)
        model = None
        if config.head == "vissl":
            model = vissl_linear.vissl_classifier(backbone, spec.num_classes)
        results, _, _ = linear.linear_evaluation(
            backbone, train, val, learning_rate=config.learning_rate,
            callbacks=[keras.callbacks.TensorBoard(tensorboard)], model=model,
            milestones=tuple(config.milestones), nesterov=config.nesterov,
            no_weight_decay=vissl_linear.batch_norm_variables(model) if model else (), **recipe,
        )
    return write_results(workdir, "linear", results, config, backbone_path, spec)


def run_finetune(config, *, backbone_path, workdir, data_dir=None):
    """Fine-tunes the backbone with a linear head; writes results.json and TensorBoard.

    Returns:
        The results dict written to `<workdir>/results.json`.
    """
    keras.utils.set_random_seed(config.seed)
    train, val, spec = labelled_splits(config, backbone_path, data_dir)
    if spec.multi_label:
        raise ValueError(
            "Fine-tuning is single-label classification. "
            f"Received: dataset={config.dataset!r} with multi-label {spec.label_key!r}"
        )
    if export.is_exported(os.fspath(backbone_path)):
        raise ValueError(
            "Fine-tuning trains the backbone's weights: give the .keras file (or a PyTorch state "
            f"dict), not the exported SavedModel. Received: backbone_path={backbone_path!r}"
        )
    backbone = load_backbone(backbone_path, image_size=config.image_size,
                             depth=config.backbone_depth, stem=config.backbone_stem)
    results, _, _ = finetune(
        backbone, train, val, num_classes=spec.num_classes, epochs=config.epochs,
        backbone_learning_rate=config.backbone_learning_rate,
        head_learning_rate=config.head_learning_rate, momentum=config.momentum,
        weight_decay=config.weight_decay,
        callbacks=[keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"))],
    )
    return write_results(workdir, "finetune", results, config, backbone_path, spec)


def run_knn(config, *, backbone_path, workdir, data_dir=None):
    """Weighted kNN of centre-crop features; writes results.json and a TensorBoard scalar.

    Returns:
        The results dict written to `<workdir>/results.json`.
    """
    keras.utils.set_random_seed(config.seed)
    train, val, spec = labelled_splits(config, backbone_path, data_dir, train_augmented=False)
    if spec.multi_label:
        raise ValueError(
            "kNN classification needs single labels. "
            f"Received: dataset={config.dataset!r} with multi-label {spec.label_key!r}"
        )
    extractor = _feature_extractor(config, backbone_path)
    train_features, train_labels = linear.extract_features(extractor, train)
    val_features, val_labels = linear.extract_features(extractor, val)
    results = knn_lib.knn_accuracy(
        train_features, train_labels, val_features, val_labels, num_classes=spec.num_classes,
        k=min(config.k, len(train_features)), temperature=config.temperature,
    )
    _write_scalars(os.path.join(workdir, "tensorboard"), {f"knn_{k}": v for k, v in
                                                           results.items()})
    return write_results(workdir, "knn", results, config, backbone_path, spec)


def write_results(workdir, protocol, results, config, backbone_path, spec):
    """Writes `<workdir>/results.json` and returns what it wrote."""
    record = {
        "protocol": protocol,
        "dataset": config.dataset,
        "num_classes": spec.num_classes,
        "multi_label": spec.multi_label,
        "backbone": os.fspath(backbone_path),
        "backend": keras.backend.backend(),
        "results": results,
        "config": json.loads(config.to_json_best_effort()) if hasattr(
            config, "to_json_best_effort") else dict(config),
    }
    durable_files.write_results_json(workdir, record)
    return record


def _feature_extractor(config, backbone_path):
    """Images -> features: a SavedModel's `serve_features` (any backend), else the backbone."""
    path = os.fspath(backbone_path)
    if export.is_exported(path):
        loaded = tf.saved_model.load(path)  # the closure keeps it, and so its variables, alive
        return lambda images: loaded.serve_features(tf.convert_to_tensor(images)).numpy()
    return load_backbone(path, image_size=config.image_size, depth=config.backbone_depth,
                         stem=config.backbone_stem)


def _write_scalars(logdir, scalars):
    with tf.summary.create_file_writer(logdir).as_default():
        for name, value in scalars.items():
            tf.summary.scalar(name, value, step=0)
