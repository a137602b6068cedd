"""Process-group helpers for losses that need the batch of every process.

``accelerator.gather`` and ``torch.distributed.all_gather`` carry no gradient: SimCLR's negatives from other
processes need :func:`gather_with_grad` (an all-gather whose backward sums the incoming gradients over
processes and returns this process's share). MoCo's keys need no gradient:
:func:`concat_all_gather_no_grad`. With one process (or no process group) both are the identity.
"""

from __future__ import annotations

import os
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


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward all-reduces the gathered gradient and keeps this process's rows.

    ``torch.distributed.nn.functional.all_gather`` does the same sum with an all-to-all on gloo, and on
    torch 2.14 that leaves gloo work behind which aborts about one two-process CPU run in three at
    interpreter exit ("terminate called without an active exception", after ``destroy_process_group``).
    An all-reduce is supported by every backend and exits cleanly.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` on each process -> ``(world_size * N, ...)`` in rank order, differentiable.

    Every process must pass the same ``N``. Gradients flowing into the rows of other processes are sent
    back to them (the gathered gradient is summed over processes and each keeps its own rows), so each
    process's ``x`` receives the gradient of the sum of all processes' losses w.r.t. it.
    """
    info = world_info()
    if info.world_size == 1:
        return x
    return _GatherWithGrad.apply(x.contiguous())


@torch.no_grad()
def concat_all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` -> ``(world_size * N, ...)`` in rank order, detached (MoCo keys, queue updates)."""
    info = world_info()
    if info.world_size == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_threads_report(device: str, processes: int, local_processes: int, threads: int, cores: int) -> list[str]:
    """What a run prints about its CPU threads: one line always, and a second when a single process per machine
    trains on the CPU with one thread of several cores (``accelerate launch`` sets ``OMP_NUM_THREADS=1`` on a
    CPU-only machine unless told otherwise), naming the flag that changes it."""
    lines = [f"running on {device}: {processes} process{'es' if processes > 1 else ''}, "
             f"{threads} CPU thread{'s' if threads > 1 else ''} each, {cores} cores usable"]
    if device == "cpu" and local_processes == 1 and threads == 1 and cores > 1:
        lines.append(f"note: training on 1 CPU thread of the {cores} cores here (OMP_NUM_THREADS=1, which "
                     f"`accelerate launch` sets on a CPU-only machine); launch with `accelerate launch "
                     f"--num_cpu_threads_per_process {cores}` (or `make pretrain`, which does) to use them all")
    return lines
