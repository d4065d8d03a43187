"""Test helper: value and gradient of a keras.ops function of tensors, on the current backend."""

import keras
import numpy as np


def value_and_grads(fn, *arrays):
    """Returns fn(*arrays) and its gradients with respect to each array, all as NumPy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        return value.numpy(), [g.numpy() for g in grads]
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))))(*arrays)
        return np.asarray(value), [np.asarray(g) for g in grads]
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    value = fn(*tensors)
    grads = torch.autograd.grad(value, tensors)
    return value.detach().numpy(), [g.numpy() for g in grads]
