"""Distributed data parallel (DDP) helpers: start from ``torchrun``'s environment, gather with gradients.

``torchrun --nproc-per-node N -m swinunetr_lib.pretrain ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`init_distributed` turns them into a process group (NCCL on GPUs, gloo on CPU).
Without those variables everything here degrades to the single-process case, so library code can
call these helpers unconditionally.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn

from .device import resolve_device


def launched_by_torchrun() -> bool:
    """True when ``WORLD_SIZE`` and ``RANK`` are in the environment (torchrun / mp.spawn helpers set them)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(device: str | torch.device = "auto", timeout_s: float = 1800.0) -> torch.device:
    """Initialise the default process group from torchrun's environment if needed; return this rank's device.

    Backend: ``nccl`` when the device is CUDA, ``gloo`` otherwise. On CUDA each rank uses
    ``cuda:$LOCAL_RANK``. Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing is
    initialised and the resolved ``device`` is returned.

    ``timeout_s``: how long a rank waits in a collective (all-reduce, barrier) for the others before the job
    fails with an error instead of hanging (``TrainConfig.dist_timeout_min``; PyTorch's NCCL default is 10
    minutes, too short while rank 0 validates or writes a large checkpoint to a slow file system). It is fixed
    when the group is created: the first call decides.
    """
    dev = resolve_device(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return dev
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dev


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown_distributed() -> None:
    """Leave the process group cleanly: wait for every rank, then destroy the group.

    Without the barrier a fast rank can exit while gloo still has a peer connection open, and the
    slower rank aborts at interpreter exit ("terminate called without an active exception").
    A no-op when no process group is initialised.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0 -> (world_size * B, ...), keeping gradients.

    Every rank must pass the same shape. In backward, each rank receives the sum over ranks of the
    gradient with respect to its own slice. When every rank computes the same global loss L, that is
    ``world_size * dL/dx_local``, which DDP's gradient averaging turns back into dL/dθ exactly.
    Single process: returns ``x`` unchanged.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (no gradient); identity in a single process."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def all_gather_ints(values: list[int], device: torch.device) -> list[list[int]]:
    """Every rank's ``values`` (the same length on every rank), indexed by rank; ``[values]`` in a single process.
    ``device``: this rank's device (NCCL gathers CUDA tensors only)."""
    if not is_distributed():
        return [list(values)]
    x = torch.tensor(values, dtype=torch.int64, device=device)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return [p.tolist() for p in parts]


def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.MIN)
    return y


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
