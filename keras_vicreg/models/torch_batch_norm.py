"""Synchronised BatchNormalization on PyTorch: the statistics of the global batch across processes.

The released code synchronises every BatchNormalization of the expander (torch's SyncBatchNorm).
Keras 3.15 refuses `BatchNormalization(synchronized=True)` on PyTorch (its constructor raises a
ValueError, and the torch `ops.moments(..., synchronized=True)` raises NotImplementedError), so
`synchronize` gives a stock `keras.layers.BatchNormalization` moments of its own: each process sums
its rows and their squares per channel, with their count; one all-reduce that carries gradients
(`torch_global_batch.all_reduce_sum`) gives every process the global batch's mean and biased
variance (E[x^2] - E[x]^2, as Keras' own torch moments), which normalise the rows and update the
moving statistics as Keras' layer does with its own. The gradients flow through the sums to every
process's rows with the same convention as the embeddings' gather.

The layer's class and config stay those of the stock layer (the override is an attribute of the
instance), so that a `.keras` file holds plain BatchNormalization layers, readable on any backend;
`VICReg(sync_batch_norm=True)` re-synchronises its expander when it is rebuilt from its config. A
copy made from the config (`keras.models.clone_model`, a momentum encoder) is not synchronised.
In a job of one process the layer computes Keras' own moments.
"""

import types

import keras
import torch

from keras_vicreg.models import torch_global_batch


def _synchronized_moments(layer, inputs, mask):
    """The global batch's (mean, biased variance) per channel, as `BatchNormalization._moments`."""
    if not torch_global_batch.distributed():
        return keras.layers.BatchNormalization._moments(layer, inputs, mask)
    axes = tuple(layer._reduction_axes)
    if mask is None:
        rows = torch.ones((), dtype=inputs.dtype, device=inputs.device)
        count = rows * (inputs.numel() // max(inputs.shape[layer.axis], 1))
        total = torch.sum(inputs, dim=axes)
        squares = torch.sum(inputs * inputs, dim=axes)
        count = count.expand_as(total)
    else:
        weights = torch.broadcast_to(torch.unsqueeze(mask, -1), inputs.shape).to(inputs.dtype)
        total = torch.sum(inputs * weights, dim=axes)
        squares = torch.sum(inputs * inputs * weights, dim=axes)
        count = torch.sum(weights, dim=axes)
    total, squares, count = torch_global_batch.all_reduce_sum(torch.stack([total, squares, count]))
    mean = total / count
    return mean, squares / count - mean * mean


def synchronize(layer):
    """Makes one stock `keras.layers.BatchNormalization` synchronised across processes, in place.

    Returns:
        The layer.
    """
    if not isinstance(layer, keras.layers.BatchNormalization):
        raise ValueError(
            "Only a keras.layers.BatchNormalization can be synchronised. "
            f"Received: layer={layer!r}"
        )
    if layer.renorm:
        raise ValueError(
            "Batch renormalisation is not synchronised on PyTorch; use renorm=False. "
            f"Received: layer={layer.name!r} with renorm=True"
        )
    layer._moments = types.MethodType(_synchronized_moments, layer)
    return layer


def is_synchronized(layer):
    """Whether `synchronize` was applied to `layer`."""
    moments = layer.__dict__.get("_moments")
    return getattr(moments, "__func__", None) is _synchronized_moments
