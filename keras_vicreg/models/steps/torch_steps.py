"""PyTorch: gradients from `backward()` on the backend-neutral forward pass.

In a job of several processes (torchrun; `keras_vicreg.training.multihost.torch_hosts`), every
process computes the loss of the global batch (`global_batch`), and its gradients are averaged
across the processes before the optimizer step, as the released code's DistributedDataParallel
does; so every process applies the same update to the same weights.

The average is an all-reduce done here, by hand, rather than by wrapping the model in
`torch.nn.parallel.DistributedDataParallel`. Keras' torch layers are `torch.nn.Module`s whose
variables are `nn.Parameter`s, so DDP accepts the model; but DDP averages gradients only for a
backward that follows its own `forward` (its reducer is armed there), and `fit` runs
`train_step` -> `compute_terms` -> the sub-layers, never the model through the wrapper: the
gradients then silently stay per-process (checked with torch 2.13 and Keras 3.15: a model called
directly gets its own process's gradient, the same model called through DDP the average).
"""

import torch
import torch.distributed as dist

from keras_vicreg.models import torch_global_batch

# The size of one all-reduce message: a few large messages, not one per variable, and no copy of
# every gradient at once.
_BUCKET_BYTES = 64 * 2**20


def _buckets(tensors):
    """Consecutive groups of `tensors` of one dtype and at most about _BUCKET_BYTES each."""
    bucket, size = [], 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (size + nbytes > _BUCKET_BYTES or tensor.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += nbytes
    if bucket:
        yield bucket


def average_across_processes(gradients):
    """The mean of each gradient over the job's processes, in place (None stays None)."""
    if not torch_global_batch.distributed():
        return gradients
    size = dist.get_world_size()
    present = [gradient for gradient in gradients if gradient is not None]
    for bucket in _buckets(present):
        flat = torch.cat([gradient.reshape(-1) for gradient in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= size
        for gradient, part in zip(bucket, torch.split(flat, [g.numel() for g in bucket])):
            gradient.copy_(part.view_as(gradient))
    return gradients


def train_step(model, data):
    model.zero_grad()
    terms = model.compute_terms(data, training=True)
    model.optimizer.scale_loss(terms["loss"]).backward()
    variables = model.trainable_variables
    gradients = [variable.value.grad for variable in variables]
    with torch.no_grad():
        average_across_processes(gradients)
        model.optimizer.apply(gradients, variables)
        model.update_momentum_encoder()
    return model.update_trackers(terms)


def test_step(model, data):
    with torch.no_grad():
        return model.update_trackers(model.compute_terms(data, training=False))
