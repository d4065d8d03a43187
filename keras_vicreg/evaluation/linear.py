"""Linear evaluation: a linear classifier trained on the frozen backbone's pooled features.

The protocol of the VICReg paper and its release (facebookresearch/vicreg `evaluate.py`): the
backbone is frozen and kept in inference mode (its BatchNorm statistics do not move), one Dense
layer initialised N(0, 0.01) with zero bias is trained with SGD (momentum 0.9, weight decay 1e-6
added to the gradient, learning rate 0.02 at batch 256, cosine to 0 over 100 epochs), and top-1 /
top-5 accuracy is measured on the centre-cropped validation images. The cosine here is updated
every step, the released code's every epoch.

`linear_evaluation` trains on augmented images through the frozen backbone, as released;
`extract_features` then `linear_evaluation_on_features` compute the features once (centre crops) and
train only the head, which makes sweeps over learning rates cheap.
"""

import keras
import numpy as np
from keras import ops

from keras_vicreg.evaluation.sgd import GroupSGD
from keras_vicreg.evaluation.sgd import multistep_schedule


@keras.saving.register_keras_serializable(package="keras_vicreg")
class FrozenBackbone(keras.layers.Layer):
    """A backbone without trainable weights, always called in inference mode.

    Whatever the outer `training` flag (`fit` sets it), BatchNorm normalises with its moving
    statistics and leaves them unchanged; a feature map is average-pooled unless `global_pool`
    is False (VISSL's head pools it its own way: `keras_vicreg.evaluation.vissl_linear`).

    Args:
        backbone: a Keras model or layer from images to features (batch, d) or (batch, h, w, d).
        global_pool: average a feature map over its height and width. Defaults to True.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, backbone, global_pool=True, **kwargs):
        super().__init__(**kwargs)
        backbone.trainable = False
        self.backbone = backbone
        self.global_pool = global_pool
        self.trainable = False

    def call(self, images):
        features = self.backbone(images, training=False)
        if len(features.shape) == 4 and self.global_pool:
            features = ops.mean(features, axis=(1, 2))
        return features

    def compute_output_shape(self, input_shape):
        shape = self.backbone.compute_output_shape(input_shape)
        return (shape[0], shape[-1]) if self.global_pool else tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone),
                      global_pool=self.global_pool)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def linear_head(num_classes, name="linear_head"):
    """The classifier: Dense(num_classes), weights N(0, 0.01), zero bias, logits out.

    Always float32, also under a mixed-precision policy: the logits feed the loss and the metrics.
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2. Received: num_classes={num_classes}")
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros",
        dtype="float32",
        name=name,
    )


def linear_classifier(backbone, num_classes, *, input_shape=None, name="linear_classifier"):
    """The frozen backbone followed by `linear_head`, as a functional model from images to logits.

    Args:
        backbone: a Keras model or layer from images to features; it is frozen (`trainable=False`).
        num_classes: the number of classes.
        input_shape: the images' shape without the batch; defaults to the backbone's.
        name: the model's name.
    """
    input_shape = input_shape or tuple(backbone.input_shape[1:])
    inputs = keras.Input(shape=input_shape, name="images")
    features = FrozenBackbone(backbone, name="frozen_backbone")(inputs)
    return keras.Model(inputs, linear_head(num_classes)(features), name=name)


def compile_classifier(
    model,
    *,
    num_classes,
    total_steps,
    learning_rate=0.02,
    momentum=0.9,
    weight_decay=1e-6,
    multi_label=False,
    optimizer=None,
    steps_per_execution=1,
    schedule=None,
    nesterov=False,
    no_weight_decay=(),
):
    """Compiles a classifier with PyTorch-style SGD, a per-step cosine schedule and the metrics.

    Args:
        model: a model from images (or features) to logits.
        num_classes: the number of classes.
        total_steps: the number of training steps the cosine decays over (to 0).
        learning_rate: the peak learning rate.
        momentum, weight_decay: see `GroupSGD`.
        multi_label: sigmoid cross-entropy and precision-recall AUC instead of softmax
            cross-entropy and top-1 / top-5 accuracy.
        optimizer: a `GroupSGD` to use instead of a new one (e.g. with multipliers).
        steps_per_execution: training steps per compiled call (`keras.Model.compile`; 1 on
            PyTorch): a head on precomputed features takes a step in about a millisecond, less
            than Keras' overhead per call.
        schedule: a learning-rate schedule instead of the cosine from `learning_rate`.
        nesterov: Nesterov momentum (`GroupSGD`).
        no_weight_decay: variables left out of the weight decay (VISSL's BatchNorm).
    """
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1. Received: total_steps={total_steps}")
    if optimizer is None:
        schedule = schedule or keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
        optimizer = GroupSGD(schedule, momentum=momentum, weight_decay=weight_decay,
                             nesterov=nesterov)
        if no_weight_decay:
            optimizer.exclude_from_weight_decay(var_list=list(no_weight_decay))
    if multi_label:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [keras.metrics.AUC(curve="PR", multi_label=True, from_logits=True, name="pr_auc")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                  steps_per_execution=steps_per_execution)


def evaluate_classifier(model, dataset, *, multi_label=False):
    """Top-1 / top-5 accuracy in percent, or for multi-label data the mean average precision.

    Args:
        model: a compiled classifier (see `compile_classifier`).
        dataset: (inputs, labels) batches, or a tuple (inputs, labels) of arrays.
        multi_label: evaluate multi-hot labels with `mean_average_precision`.

    Returns:
        {"top1": %, "top5": %, "loss": ...} or {"map": %}.
    """
    if multi_label:
        inputs, labels = _arrays(dataset)
        scores = model.predict(inputs, verbose=0)
        return {"map": 100.0 * mean_average_precision(scores, labels)}
    if isinstance(dataset, tuple):
        logs = model.evaluate(*dataset, verbose=0, return_dict=True)
    else:
        logs = model.evaluate(dataset, verbose=0, return_dict=True)
    return {"top1": 100.0 * logs["top1"], "top5": 100.0 * logs["top5"], "loss": logs["loss"]}


def mean_average_precision(scores, labels):
    """The mean over classes of the (non-interpolated) average precision of a ranking by score.

    Args:
        scores: (n, classes) scores or logits.
        labels: (n, classes) multi-hot labels; classes without a positive are skipped.

    Returns:
        float in [0, 1].
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(
            "`scores` and `labels` must both be (examples, classes). "
            f"Received: scores.shape={scores.shape}, labels.shape={labels.shape}"
        )
    precisions = []
    for column in range(scores.shape[1]):
        positives = labels[np.argsort(-scores[:, column], kind="stable"), column]
        if positives.any():
            hits = np.cumsum(positives)
            precisions.append(np.mean(hits[positives] / (np.flatnonzero(positives) + 1)))
    return float(np.mean(precisions)) if precisions else 0.0


def extract_features(features_fn, dataset):
    """Runs a frozen feature extractor over (images, labels) batches once.

    Args:
        features_fn: a Keras model (called in inference mode) or a function from a batch of images
            to features, e.g. the `serve_features` signature of an exported SavedModel.
        dataset: an iterable of (images, labels) batches, e.g. a `tf.data.Dataset`.

    Returns:
        (features float32 (n, d), labels (n,) or (n, classes)) as NumPy arrays.
    """
    if isinstance(features_fn, keras.Model):
        model = features_fn  # compiled by predict_on_batch, in inference mode; any backend's
        features_fn = lambda images: model.predict_on_batch(np.asarray(images))  # noqa: E731
    elif isinstance(features_fn, keras.layers.Layer):
        layer = features_fn
        features_fn = lambda images: layer(images, training=False)  # noqa: E731
    features, labels = [], []
    for images, batch_labels in dataset:
        batch = ops.convert_to_numpy(features_fn(images))
        features.append(batch.mean(axis=(1, 2)) if batch.ndim == 4 else batch)
        labels.append(ops.convert_to_numpy(batch_labels))
    return np.concatenate(features).astype("float32"), np.concatenate(labels)


def linear_evaluation(
    backbone,
    train_data,
    val_data,
    *,
    num_classes,
    epochs=100,
    learning_rate=0.02,
    momentum=0.9,
    weight_decay=1e-6,
    multi_label=False,
    steps_per_epoch=None,
    callbacks=None,
    verbose=0,
    model=None,
    milestones=(),
    nesterov=False,
    no_weight_decay=(),
):
    """Trains a linear classifier on a frozen backbone, on augmented images, and evaluates it.

    Args:
        backbone: a Keras model from images to features; frozen and kept in inference mode.
        train_data: (images, labels) training batches (e.g. `data.labelled_dataset(train=True)`).
        val_data: (images, labels) validation batches (centre crops).
        num_classes: the number of classes.
        epochs, learning_rate, momentum, weight_decay: the released recipe's defaults.
        multi_label: multi-hot labels (VOC 2007): sigmoid loss and mean average precision.
        steps_per_epoch: training steps per epoch; defaults to the dataset's cardinality.
        callbacks: Keras callbacks for `fit` (e.g. `keras.callbacks.TensorBoard`).
        verbose: `fit`'s verbosity.
        model: the classifier to train instead of `linear_classifier(backbone, num_classes)`
            (e.g. `vissl_linear.vissl_classifier`).
        milestones: epochs at which the learning rate drops 10x (`multistep_schedule`) instead
            of the cosine.
        nesterov, no_weight_decay: see `compile_classifier`.

    Returns:
        (results dict from `evaluate_classifier`, the trained classifier, the `History`).
    """
    steps_per_epoch = steps_per_epoch or dataset_steps(train_data)
    model = model or linear_classifier(backbone, num_classes)
    schedule = None
    if milestones:
        schedule = multistep_schedule(learning_rate, milestones, steps_per_epoch)
    compile_classifier(
        model, num_classes=num_classes, total_steps=epochs * steps_per_epoch,
        learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
        multi_label=multi_label, schedule=schedule, nesterov=nesterov,
        no_weight_decay=no_weight_decay,
    )
    history = model.fit(
        train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
        validation_data=val_data, callbacks=callbacks, verbose=verbose,
    )
    return evaluate_classifier(model, val_data, multi_label=multi_label), model, history


def linear_evaluation_on_features(
    train,
    val,
    *,
    num_classes,
    learning_rates=(0.02,),
    epochs=100,
    batch_size=256,
    momentum=0.9,
    weight_decay=1e-6,
    multi_label=False,
    seed=0,
    callbacks=None,
    verbose=0,
):
    """Trains one linear head per learning rate on precomputed features; keeps the best.

    Args:
        train: (features, labels) arrays from `extract_features`.
        val: (features, labels) arrays of the validation split.
        num_classes: the number of classes.
        learning_rates: the learning rates to sweep.
        epochs, batch_size, momentum, weight_decay: the training recipe.
        multi_label: multi-hot labels: sigmoid loss and mean average precision.
        seed: seeds the head's initialisation and the shuffling, the same for every rate.
        callbacks: a function from learning rate to a list of callbacks, or None.
        verbose: `fit`'s verbosity.

    Returns:
        {"best_learning_rate": lr, "best": results, "sweep": {str(lr): results}}; the best has
        the highest top-1 (or mAP), then the lowest validation loss.
    """
    if not learning_rates:
        raise ValueError(f"Give at least one learning rate. Received: {learning_rates}")
    features, labels = train
    steps_per_epoch = int(np.ceil(len(features) / batch_size))
    sweep = {}
    for learning_rate in learning_rates:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(shape=features.shape[1:], name="features")
        model = keras.Model(inputs, linear_head(num_classes)(inputs), name="linear_head_only")
        compile_classifier(
            model, num_classes=num_classes, total_steps=epochs * steps_per_epoch,
            learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
            multi_label=multi_label, steps_per_execution=_steps_per_execution(steps_per_epoch),
        )
        model.fit(
            features, labels, batch_size=batch_size, epochs=epochs, shuffle=True,
            callbacks=callbacks(learning_rate) if callbacks else None, verbose=verbose,
        )
        sweep[str(learning_rate)] = evaluate_classifier(model, val, multi_label=multi_label)
    key = "map" if multi_label else "top1"
    best = max(sweep, key=lambda lr: (sweep[lr][key], -sweep[lr].get("loss", 0.0)))
    return {"best_learning_rate": float(best), "best": sweep[best], "sweep": sweep}


def _steps_per_execution(steps_per_epoch):
    """Up to 32 steps per compiled call; 1 on PyTorch, whose Keras trainer takes only 1."""
    return 1 if keras.backend.backend() == "torch" else min(32, steps_per_epoch)


def dataset_steps(dataset):
    """The number of batches of a finite `tf.data.Dataset`, with a clear error when unknown."""
    steps = int(getattr(dataset, "cardinality", lambda: -1)())
    if steps <= 0:
        raise ValueError(
            "The number of training batches is unknown; pass `steps_per_epoch`. "
            f"Received: a dataset of cardinality {steps}"
        )
    return steps


def _arrays(dataset):
    if isinstance(dataset, tuple):
        return dataset
    inputs, labels = zip(*((ops.convert_to_numpy(x), ops.convert_to_numpy(y)) for x, y in dataset))
    return np.concatenate(inputs), np.concatenate(labels)
