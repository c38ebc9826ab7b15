"""Data-parallel training under ``torchrun`` (gloo on CPU, nccl on GPU).

We average gradients with one all-reduce over a flat buffer after the recipe's backward
instead of wrapping the model in ``DistributedDataParallel``: recipes run several forwards
per batch (attacks, replays, two networks), which DDP's hook-based reduction does not
allow without special cases. The result is the same synchronous data-parallel SGD.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from medrobust.models.devices import process_group_backend


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's processes: its rank and their number."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes files and prints."""
        return self.rank == 0


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(device))
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def average_gradients(model: nn.Module, world: World) -> None:
    """All-reduce and average the parameter gradients across ranks (one flat buffer)."""
    if world.size <= 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def _scalar(value: float) -> torch.Tensor:
    """A one-element float64 tensor where the backend can reduce it (NCCL: the current GPU)."""
    on_gpu = dist.get_backend() == "nccl"
    return torch.tensor([value], dtype=torch.float64, device=torch.cuda.current_device() if on_gpu else "cpu")


def broadcast_float(value: float, world: World) -> float:
    """Rank 0's value on every rank."""
    if world.size <= 1:
        return value
    t = _scalar(value)
    dist.broadcast(t, src=0)
    return float(t.item())


def mean_float(value: float) -> float:
    """The mean of ``value`` over the ranks of the running process group (itself without one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return value
    t = _scalar(value)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def barrier(world: World) -> None:
    """Wait for every process (a no-op for one process)."""
    if world.size > 1:
        dist.barrier()
