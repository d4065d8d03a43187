"""PyTorch's half of the global batch: the gather and the sums across the processes of a job.

Under `torchrun` (`keras_vicreg.training.multihost.torch_hosts.initialize`) each process embeds its
own rows of the global batch. `gather` gives every process every process's rows, as the released
code's FullGatherLayer does: forward an all-gather; backward an all-reduce (SUM) of the upstream
gradient, of which each process keeps its own rows. Every process then computes the same loss on
the global batch, so each process's gradient is the world size times its own rows' share of the
global-batch gradient, and averaging the processes' gradients (`torch_steps.train_step`, as the
released code's DistributedDataParallel does) gives that gradient exactly. `all_reduce_sum` carries
gradients the same way (backward: an all-reduce SUM of the upstream gradient), for the loss's
covariance blocks and the statistics of synchronised BatchNormalization.

Both are small `torch.autograd.Function`s over the public `torch.distributed` collectives: torch
2.13 deprecates `torch.distributed.nn.functional` (whose all_reduce has the same backward) in favour
of the private `torch.distributed._functional_collectives`.

These only apply to a process group of more than one process (`distributed()`); a job of one
process never calls them.
"""

import torch
import torch.distributed as dist


def distributed():
    """Whether this process is one of several in an initialised `torch.distributed` group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size():
    """(this process's rank, the number of processes); (0, 1) when not distributed."""
    return (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)


class _Gather(torch.autograd.Function):
    """All-gather forward; all-reduce (SUM) of the gradient, this process's rows kept, backward."""

    @staticmethod
    def forward(ctx, local):
        rank, size = rank_and_size()
        parts = [torch.empty_like(local) for _ in range(size)]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = (rank * local.shape[0], (rank + 1) * local.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, upstream):
        summed = upstream.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        start, stop = ctx.rows
        return summed[start:stop]


def gather(z):
    """Every process's rows of `z`, concatenated in rank order (see the module docstring).

    Every process must give the same number of rows (batch with `drop_remainder=True`): the
    all-gather refuses tensors of different shapes.

    Args:
        z: this process's rows, shape (n, ...).

    Returns:
        The global batch, shape (world size * n, ...).
    """
    if not distributed():
        return z
    return _Gather.apply(z)


class _AllReduceSum(torch.autograd.Function):
    """All-reduce (SUM) forward; all-reduce (SUM) of the upstream gradient backward."""

    @staticmethod
    def forward(ctx, local):
        total = local.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, upstream):
        summed = upstream.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed


def all_reduce_sum(x):
    """The sum of `x` over the processes, on every process; its gradient is all-reduced too."""
    if not distributed():
        return x
    return _AllReduceSum.apply(x)
