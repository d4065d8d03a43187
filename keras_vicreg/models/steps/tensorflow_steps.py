"""TensorFlow: gradients from a `tf.GradientTape` around the backend-neutral forward pass.

Under a `tf.distribute` strategy with several replicas, `compute_terms` gathers the embeddings and
returns, on every replica, the terms of the global batch (`keras_vicreg.models.global_batch`). The
gradient of the gather sums every replica's gradient before each replica keeps its own rows, so each
replica's gradient of the loss is `replicas` times its share of the global gradient; the loss is
divided by the number of replicas, and the sum that the optimizer takes across replicas
(Keras >= 3.3) is then the single-device gradient of the global-batch loss.
"""

import tensorflow as tf


def loss_for_gradients(terms):
    """The loss to differentiate on this replica: the global loss over the number of replicas."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return terms["loss"]
    return terms["loss"] / replicas


def check_steps_per_execution(model):
    """Refuses `steps_per_execution` > 1 under a multi-replica strategy other than TPUStrategy.

    With Keras 3.15 and TensorFlow 2.21, `fit` with `steps_per_execution` > 1 under
    `MirroredStrategy` fails at run time with "You must feed a value for placeholder tensor" even
    for a plain Dense model and a dataset with drop_remainder=True (keras issue #19246 tracks
    MirroredStrategy with steps_per_execution and uneven last batches); this turns it into a
    clear error at trace time.
    """
    strategy = tf.distribute.get_strategy()
    if (
        strategy.num_replicas_in_sync > 1
        and getattr(model, "steps_per_execution", 1) > 1
        and not isinstance(strategy, tf.distribute.TPUStrategy)
    ):
        raise ValueError(
            f"{type(strategy).__name__} with several replicas does not support "
            "steps_per_execution > 1 in Keras (keras issue #19246): compile with "
            f"steps_per_execution=1. Received: steps_per_execution={model.steps_per_execution}"
        )


def train_step(model, data):
    check_steps_per_execution(model)
    with tf.GradientTape() as tape:
        terms = model.compute_terms(data, training=True)
        scaled_loss = model.optimizer.scale_loss(loss_for_gradients(terms))
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    model.optimizer.apply(gradients, variables)
    model.update_momentum_encoder()
    return model.update_trackers(terms)


def test_step(model, data):
    return model.update_trackers(model.compute_terms(data, training=False))
