"""JAX: a stateless step; the forward pass runs in a `StatelessScope` and `jax.value_and_grad`
differentiates it with respect to the trainable values."""

import jax
from keras import StatelessScope


def _new_values(scope, variables, old_values):
    values = []
    for variable, old in zip(variables, old_values):
        new = scope.get_current_value(variable)
        values.append(old if new is None else new)
    return values


def _stateless_terms(model, trainable, non_trainable, data, training):
    """Runs `compute_terms` with the given variable values; returns the terms and new BN statistics."""
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    with StatelessScope(state_mapping=mapping) as scope:
        terms = model.compute_terms(data, training=training)
    return terms, _new_values(scope, model.non_trainable_variables, non_trainable)


def _stateless_momentum_update(model, trainable, non_trainable):
    """Runs `update_momentum_encoder` on the new weights; returns the new non-trainable values."""
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    with StatelessScope(state_mapping=mapping) as scope:
        model.update_momentum_encoder()
    return _new_values(scope, model.non_trainable_variables, non_trainable)


def _stateless_update_trackers(model, metrics_variables, terms):
    mapping = list(zip(model.metrics_variables, metrics_variables))
    with StatelessScope(state_mapping=mapping) as scope:
        logs = model.update_trackers(terms)
    return logs, _new_values(scope, model.metrics_variables, metrics_variables)


def train_step(model, state, data):
    trainable, non_trainable, optimizer_variables, metrics_variables = state

    def scaled_loss(trainable_values):
        terms, new_non_trainable = _stateless_terms(
            model, trainable_values, non_trainable, data, training=True
        )
        mapping = list(zip(model.optimizer.variables, optimizer_variables))
        with StatelessScope(state_mapping=mapping):
            scaled = model.optimizer.scale_loss(terms["loss"])
        return scaled, (terms, new_non_trainable)

    (_, (terms, non_trainable)), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(
        trainable
    )
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, gradients, trainable
    )
    non_trainable = _stateless_momentum_update(model, trainable, non_trainable)
    logs, metrics_variables = _stateless_update_trackers(model, metrics_variables, terms)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def test_step(model, state, data):
    trainable, non_trainable, metrics_variables = state
    terms, non_trainable = _stateless_terms(model, trainable, non_trainable, data, training=False)
    logs, metrics_variables = _stateless_update_trackers(model, metrics_variables, terms)
    return logs, (trainable, non_trainable, metrics_variables)
