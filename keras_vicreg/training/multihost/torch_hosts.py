"""PyTorch's multi-process engine: `torch.distributed` from the variables torchrun sets.

`torchrun --nproc_per_node=P ...` starts P processes and gives each RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT. `initialize` joins them into one process group (NCCL on GPUs, gloo on
CPUs) with a timeout, so that a collective whose peer died raises instead of waiting forever; it
must run before the model is built, since on GPUs it picks this process's device (LOCAL_RANK) and
Keras creates the variables on the current device. The other functions are the interface of
`keras_vicreg.training.multihost`, plus `broadcast_weights` (every process starts from process 0's
weights, whatever its seed) and `shutdown`.

A job of one process (WORLD_SIZE unset or 1) never touches `torch.distributed`: every function is
then a no-op or returns the single-process answer.
"""

import datetime
import os

import torch
import torch.distributed as dist

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _check_environment():
    """The (rank, world size) torchrun's variables give; ValueError where they are incomplete."""
    missing = [name for name in _TORCHRUN_VARIABLES if not os.environ.get(name)]
    if missing:
        raise ValueError(
            "A job of several processes needs torchrun's variables RANK, WORLD_SIZE, MASTER_ADDR "
            f"and MASTER_PORT (run it with `torchrun --nproc_per_node=P ...`); {missing} are "
            f"unset. Received: WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}"
        )
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        int(os.environ["MASTER_PORT"])
    except ValueError:
        raise ValueError(
            "RANK, WORLD_SIZE and MASTER_PORT must be integers. Received: "
            f"RANK={os.environ['RANK']!r}, WORLD_SIZE={os.environ['WORLD_SIZE']!r}, "
            f"MASTER_PORT={os.environ['MASTER_PORT']!r}"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"RANK must be in [0, WORLD_SIZE). Received: RANK={rank}, WORLD_SIZE={world}"
        )
    return rank, world


def initialize(timeout_s=1800):
    """Joins the job's process group from torchrun's variables; a no-op for one process.

    Call it first thing in a program, before building the model: on GPUs it makes LOCAL_RANK's
    device the current one, where Keras then creates the variables.

    Args:
        timeout_s: how long a collective (and the rendezvous) waits for the other processes before
            raising, e.g. when one of them died. It must exceed the longest time one process may
            spend between two collectives (a step, a checkpoint written by process 0).

    Returns:
        True when this process is one of several joined in a process group, False otherwise.

    Raises:
        ValueError: WORLD_SIZE is more than 1 and another variable is missing or malformed.
    """
    if not os.environ.get("WORLD_SIZE") or os.environ["WORLD_SIZE"].strip() == "1":
        return False
    if timeout_s <= 0:
        raise ValueError(f"`timeout_s` must be positive. Received: timeout_s={timeout_s}")
    _check_environment()
    if dist.is_initialized():
        return True
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def _initialized():
    return dist.is_available() and dist.is_initialized()


def process_index():
    """This process's rank (0 when not initialised)."""
    return dist.get_rank() if _initialized() else 0


def process_count():
    """The number of processes of the job (1 when not initialised)."""
    return dist.get_world_size() if _initialized() else 1


def collective_device():
    """The device of the tensors the process group's collectives take: the GPU for NCCL."""
    if _initialized() and dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_process(flag):
    """True on every process when `flag` is True on any (an all-reduce MAX; collective)."""
    if process_count() == 1:
        return bool(flag)
    value = torch.tensor([int(bool(flag))], dtype=torch.int32, device=collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier():
    """Returns once every process has reached it (collective)."""
    if process_count() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL:
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def broadcast_weights(model):
    """Gives every process process 0's weights of `model` and of its optimizer, in place.

    Collective. Call it after building the model (and after restoring a checkpoint, where the
    processes may have read different ones) and before training, so that every process starts from
    the same weights whatever its seed: the averaged gradients then keep them equal. The model's
    weights (`model.weights`: trainable, and BatchNorm's moving statistics) travel, and the
    optimizer's variables once it is built; random seed states stay each process's own. They
    travel as one flat tensor per dtype, not one message each.

    Returns:
        The number of variables broadcast (0 for a job of one process).
    """
    if process_count() == 1:
        return 0
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        variables += list(optimizer.variables)
    tensors = [variable.value for variable in variables]
    device = collective_device()
    for dtype in sorted({t.dtype for t in tensors}, key=str):
        group = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.detach().reshape(-1).to(device) for t in group])
        dist.broadcast(flat, src=0)
        with torch.no_grad():
            for tensor, part in zip(group, torch.split(flat, [t.numel() for t in group])):
                tensor.copy_(part.view_as(tensor))
    return len(tensors)


def shutdown():
    """Leaves the process group (`destroy_process_group`); a no-op when not initialised."""
    if _initialized():
        dist.destroy_process_group()
