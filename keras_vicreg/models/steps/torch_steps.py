"""PyTorch: gradients from `backward()` on the backend-neutral forward pass."""

import torch


def train_step(model, data):
    model.zero_grad()
    terms = model.compute_terms(data, training=True)
    model.optimizer.scale_loss(terms["loss"]).backward()
    variables = model.trainable_variables
    gradients = [variable.value.grad for variable in variables]
    with torch.no_grad():
        model.optimizer.apply(gradients, variables)
        model.update_momentum_encoder()
    return model.update_trackers(terms)


def test_step(model, data):
    with torch.no_grad():
        return model.update_trackers(model.compute_terms(data, training=False))
