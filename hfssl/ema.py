"""The momentum (EMA) target network of BYOL / MoCo: creation, update and momentum schedule.

Order in a step: ``loss.backward()`` -> ``optimizer.step()`` -> ``ema_update(unwrap(target), unwrap(online),
m)``. Updating before the optimizer step lags one step behind; updating the DDP-wrapped module would
name parameters ``module.*`` and miss the pairing (hence the name check below).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from hfssl.optim import cosine_momentum


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` whose parameters do not require grad (so optimizers built with
    :func:`hfssl.optim.build_optimizer` leave them out and no gradient is ever computed for them)."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``t <- m * t + (1 - m) * o`` for every PARAMETER; BUFFERS are copied from ``online``.

    Buffers (BatchNorm ``running_mean`` / ``running_var`` / ``num_batches_tracked``, position ids) are not
    learned weights: BN running statistics are already averages of the online network's activations, and
    the target's own BN normalises with batch statistics while training (the target runs in train mode, as
    in BYOL and MoCo v3), so its running stats only matter when it is evaluated; copying keeps them those
    of the online network, which the momentum weights approach. Integer buffers cannot be averaged anyway.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params, o_params = dict(target.named_parameters()), dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        raise ValueError("target and online parameters differ by name: pass the UNWRAPPED models "
                         "(accelerator.unwrap_model), not the DDP-wrapped ones")
    names = list(t_params)
    t = [t_params[k] for k in names]
    o = [o_params[k].detach() for k in names]
    torch._foreach_lerp_(t, o, 1.0 - momentum)  # t + (1 - m) (o - t) = m t + (1 - m) o
    o_bufs = dict(online.named_buffers())
    for name, buf in target.named_buffers():
        buf.copy_(o_bufs[name])


@dataclass
class MomentumSchedule:
    """BYOL's cosine schedule from ``base`` (step 0) to ``final`` (step ``total_steps``)."""

    total_steps: int
    base: float = 0.996
    final: float = 1.0

    def __call__(self, step: int) -> float:
        return cosine_momentum(step, self.total_steps, self.base, self.final)
