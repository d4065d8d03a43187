"""TensorFlow: gradients from a `tf.GradientTape` around the backend-neutral forward pass."""

import tensorflow as tf


def train_step(model, data):
    with tf.GradientTape() as tape:
        terms = model.compute_terms(data, training=True)
        scaled_loss = model.optimizer.scale_loss(terms["loss"])
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    model.optimizer.apply(gradients, variables)
    model.update_momentum_encoder()
    return model.update_trackers(terms)


def test_step(model, data):
    return model.update_trackers(model.compute_terms(data, training=False))
