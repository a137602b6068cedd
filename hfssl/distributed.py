"""Process-group helpers for losses that need the batch of every process.

``accelerator.gather`` and ``torch.distributed.all_gather`` carry no gradient: SimCLR's negatives from other
processes need :func:`gather_with_grad` (``torch.distributed.nn.functional.all_gather``, whose backward
sums the incoming gradients and returns this process's share). MoCo's keys need no gradient:
:func:`concat_all_gather_no_grad`. With one process (or no process group) both are the identity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class WorldInfo:
    rank: int
    world_size: int
    initialized: bool


def world_info() -> WorldInfo:
    """This process's rank, the number of processes, and whether a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return WorldInfo(dist.get_rank(), dist.get_world_size(), True)
    return WorldInfo(0, 1, False)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` on each process -> ``(world_size * N, ...)`` in rank order, differentiable.

    Every process must pass the same ``N``. Gradients flowing into the rows of other processes are sent
    back to them (the backward of ``all_gather`` is a reduce-scatter), so each process's ``x`` receives the
    gradient of the sum of all processes' losses w.r.t. it.
    """
    info = world_info()
    if info.world_size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # torch 2.14 marks it deprecated; the replacement is still private
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def concat_all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` -> ``(world_size * N, ...)`` in rank order, detached (MoCo keys, queue updates)."""
    info = world_info()
    if info.world_size == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
