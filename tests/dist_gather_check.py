"""Helper for tests/test_losses.py: run under ``torch.distributed.run --nproc_per_node 2`` (gloo, CPU).

Each process takes its rows of a fixed global batch, computes ``nt_xent`` and the v3 ``info_nce`` with
gathering, backpropagates its own loss and saves ``rank{r}.pt`` (losses, gradients w.r.t. its local z,
and the gather helpers' outputs) into the folder given as the only argument.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hfssl.distributed import concat_all_gather_no_grad, gather_with_grad, world_info
from hfssl.losses import info_nce, nt_xent

N_PER_PROCESS, DIM, TEMPERATURE = 3, 5, 0.3


def global_batch():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2 * N_PER_PROCESS, DIM, generator=g, dtype=torch.float64) for _ in range(4)]


def main(out: Path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    info = world_info()
    rows = slice(info.rank * N_PER_PROCESS, (info.rank + 1) * N_PER_PROCESS)
    z1, z2, q, k = (t[rows].clone().requires_grad_(True) for t in global_batch())
    loss = nt_xent(z1, z2, TEMPERATURE)
    loss.backward()
    moco = info_nce(q, k, temperature=TEMPERATURE)
    moco.backward()
    gathered = gather_with_grad(z1.detach())
    keys = concat_all_gather_no_grad(k)
    torch.save({"world": (info.rank, info.world_size, info.initialized), "loss": loss.detach(),
                "grad_z1": z1.grad, "grad_z2": z2.grad, "moco": moco.detach(), "grad_q": q.grad,
                "grad_k": k.grad, "gathered": gathered, "keys": keys, "keys_grad": keys.requires_grad},
               out / f"rank{info.rank}.pt")
    dist.destroy_process_group()


def backward_only():
    """Only a backward through ``gather_with_grad``, then exit: the case that aborted at interpreter exit."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    x = torch.randn(3, DIM, dtype=torch.float64, requires_grad=True)
    (gather_with_grad(x) ** 2).sum().backward()
    assert torch.equal(x.grad, 2 * x.detach() * dist.get_world_size())  # each rank's rows are used by both
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "--backward_only":
        backward_only()
    else:
        main(Path(sys.argv[1]))
