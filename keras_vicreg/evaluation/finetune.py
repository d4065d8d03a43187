"""Semi-supervised fine-tuning: backbone and linear head trained together on a labelled subset.

The protocol of the VICReg paper and its release (`evaluate.py --weights finetune`): the ImageNet
1% and 10% subsets (`imagenet2012_subset/1pct`, `/10pct` in tfds), 20 epochs, batch 256, SGD with
momentum 0.9 and no weight decay, one cosine schedule for two learning rates: backbone 0.03 and head
0.08 (1%), 0.01 and 0.1 (10%). The backbone trains in training mode (its BatchNorm statistics
update), the augmentations are the linear evaluation's.
"""

import keras

from keras_vicreg.evaluation.linear import compile_classifier
from keras_vicreg.evaluation.linear import dataset_steps
from keras_vicreg.evaluation.linear import evaluate_classifier
from keras_vicreg.evaluation.linear import linear_head
from keras_vicreg.evaluation.sgd import GroupSGD


def finetune_classifier(backbone, num_classes, *, input_shape=None, name="finetune_classifier"):
    """The trainable backbone, average-pooled if it returns a feature map, then `linear_head`."""
    backbone.trainable = True
    input_shape = input_shape or tuple(backbone.input_shape[1:])
    inputs = keras.Input(shape=input_shape, name="images")
    features = backbone(inputs)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    return keras.Model(inputs, linear_head(num_classes)(features), name=name)


def finetune(
    backbone,
    train_data,
    val_data,
    *,
    num_classes,
    epochs=20,
    backbone_learning_rate=0.03,
    head_learning_rate=0.08,
    momentum=0.9,
    weight_decay=0.0,
    steps_per_epoch=None,
    callbacks=None,
    verbose=0,
):
    """Fine-tunes a backbone with a new linear head; the two have their own learning rates.

    Args:
        backbone: a Keras model from images to features; its weights are trained.
        train_data: (images, labels) training batches of the labelled subset.
        val_data: (images, labels) validation batches (centre crops).
        num_classes: the number of classes.
        epochs: training epochs.
        backbone_learning_rate, head_learning_rate: the peak learning rates of the two groups,
            both decayed to 0 by one per-step cosine.
        momentum, weight_decay: see `GroupSGD` (weight decay is added to the gradient).
        steps_per_epoch: training steps per epoch; defaults to the dataset's cardinality.
        callbacks: Keras callbacks for `fit`.
        verbose: `fit`'s verbosity.

    Returns:
        ({"top1": %, "top5": %, "loss": ...}, the fine-tuned classifier, the `History`).
    """
    if head_learning_rate <= 0 or backbone_learning_rate < 0:
        raise ValueError(
            "`head_learning_rate` must be > 0 and `backbone_learning_rate` >= 0. Received: "
            f"head_learning_rate={head_learning_rate}, "
            f"backbone_learning_rate={backbone_learning_rate}"
        )
    steps_per_epoch = steps_per_epoch or dataset_steps(train_data)
    model = finetune_classifier(backbone, num_classes)
    schedule = keras.optimizers.schedules.CosineDecay(
        head_learning_rate, epochs * steps_per_epoch
    )
    optimizer = GroupSGD(schedule, momentum=momentum, weight_decay=weight_decay)
    optimizer.set_learning_rate_multiplier(
        backbone.trainable_variables, backbone_learning_rate / head_learning_rate
    )
    compile_classifier(
        model, num_classes=num_classes, total_steps=epochs * steps_per_epoch, optimizer=optimizer
    )
    history = model.fit(
        train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
        validation_data=val_data, callbacks=callbacks, verbose=verbose,
    )
    return evaluate_classifier(model, val_data), model, history
