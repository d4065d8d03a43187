"""TensorFlow: gradients from a `tf.GradientTape` around the backend-neutral forward pass.

Under a `tf.distribute` strategy with several replicas, `compute_terms` gathers the embeddings and
returns, on every replica, the terms of the global batch (`keras_vicreg.models.global_batch`). The
gradient of the gather sums every replica's gradient before each replica keeps its own rows, so each
replica's gradient of the loss is `replicas` times its share of the global gradient; the loss is
divided by the number of replicas, and the sum that the optimizer takes across replicas
(Keras >= 3.3) is then the single-device gradient of the global-batch loss.

Keras 3's `fit` under `MultiWorkerMirroredStrategy` across several workers (keras issue #20585)
fails twice with Keras 3.15 and TensorFlow 2.21, both in Keras' TensorFlow trainer, not in the step:

- before training, `_maybe_symbolic_build` reduces the first distributed batch eagerly with
  `strategy.reduce("MEAN", batch, axis=None)`, which the collective ops refuse for a nest of
  per-replica values ("Attempt to convert a value (PerReplica...) to a Tensor"), only to read its
  shapes; `symbolic_build` skips that reduction for a built model, whose variables exist;
- after each step, `reduce_per_replica` reduces every log with `strategy.reduce("MEAN", log,
  axis=0)`, which fails for scalar logs ("Invalid reduction dimension 0 for input with 0
  dimensions"); `train_step` returns each log as a vector of one value there, so that the mean
  over axis 0 of every replica's vector is the scalar `fit` then hands its callbacks.
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


def _across_workers(strategy=None):
    """Whether `strategy` (default: the one in scope) is a MultiWorkerMirroredStrategy over
    several workers."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


def _logs_for_fit(logs):
    """The logs as `fit` reduces them: vectors of one value across workers (see above)."""
    if not _across_workers():
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def symbolic_build(model, keras_build, iterator=None, data_batch=None):
    """`fit`'s and `evaluate`'s build before the first step: across workers, only the optimizer's
    (the model must be built; see above); Keras' own otherwise."""
    strategy = model.distribute_strategy
    if not _across_workers(strategy):
        return keras_build(iterator=iterator, data_batch=data_batch)
    if not model.built:
        raise ValueError(
            "Under MultiWorkerMirroredStrategy across workers, build the model before `fit` "
            "(a backbone built from keras.Input builds it): Keras cannot build it from a "
            f"distributed batch there (keras issue #20585). Received: an unbuilt {model.name!r}"
        )
    if model.optimizer is not None and not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    return None


def train_step(model, data):
    check_steps_per_execution(model)
    with tf.GradientTape() as tape:
        terms = model.compute_terms(data, training=True)
        scaled_loss = model.optimizer.scale_loss(loss_for_gradients(terms))
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    model.optimizer.apply(gradients, variables)
    model.update_momentum_encoder()
    return _logs_for_fit(model.update_trackers(terms))


def test_step(model, data):
    return _logs_for_fit(model.update_trackers(model.compute_terms(data, training=False)))
