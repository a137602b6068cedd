"""Contrastive and self-distillation losses (SimCLR, MoCo, BYOL), each a pure function plus a module.

All of them take projections ``(N, D)`` of the LOCAL batch; the ones that need the batch of every process
gather it themselves through :mod:`hfssl.distributed` (identity with one process).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfssl.distributed import concat_all_gather_no_grad, gather_with_grad, world_info


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = True) -> torch.Tensor:
    """SimCLR's NT-Xent loss (https://arxiv.org/abs/2002.05709, eq. 1), mean over the 2N local anchors.

    ``z1``, ``z2``: ``(N, D)`` projections of two views of the same N images (row i of each is a pair).
    The anchors are the 2N local rows; the candidates are the 2M rows of every process (M = world * N),
    ordered ``[z1 of all processes, z2 of all processes]``, so the positive of global row ``j`` is
    ``(j + M) mod 2M``. An anchor's similarity with itself is masked to ``-inf`` (removed from the
    softmax denominator), never subtracted. With ``gather`` and several processes the negatives of other
    processes carry gradient back to them (:func:`hfssl.distributed.gather_with_grad`).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    rank = world_info().rank if gather else 0
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)  # (N, D)
    a1, a2 = (gather_with_grad(z1), gather_with_grad(z2)) if gather else (z1, z2)  # (M, D)
    m = a1.shape[0]
    anchors = torch.cat([z1, z2])  # (2N, D) local rows
    candidates = torch.cat([a1, a2])  # (2M, D) global rows
    logits = anchors @ candidates.T / temperature  # (2N, 2M)
    local = torch.arange(n, device=z1.device) + rank * n  # (N,) global index of the local rows in a1
    self_idx = torch.cat([local, local + m])  # (2N,) where each anchor sits among the candidates
    pos_idx = torch.cat([local + m, local])  # (2N,) its other view
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * m).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_idx)


class NTXentLoss(nn.Module):
    """:func:`nt_xent` as a module (SimCLR, https://arxiv.org/abs/2002.05709)."""

    def __init__(self, temperature: float = 0.5, gather: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.gather = temperature, gather

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature, self.gather)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None = None,
             temperature: float = 0.2, gather: bool = True) -> torch.Tensor:
    """MoCo's InfoNCE loss; keys and queue never get gradient.

    With ``queue`` ``(K, D)`` (MoCo v1/v2, https://arxiv.org/abs/1911.05722): the logits of query i are
    ``[q_i . k_i, q_i . queue_1, ..., q_i . queue_K] / T`` and the positive is index 0.
    Without (MoCo v3, https://arxiv.org/abs/2104.02057): the keys of every process are gathered (no
    gradient) and query i of this process has its positive at ``rank * N + i``. The v3 loss is not
    multiplied by ``2 T`` here; MoCo v3 sums ``info_nce(q1, k2) + info_nce(q2, k1)`` (the caller's job).
    All inputs are L2-normalised here.
    """
    q = F.normalize(q, dim=-1)  # (N, D)
    k = F.normalize(k.detach(), dim=-1)  # (N, D)
    n = q.shape[0]
    if queue is not None:
        queue = F.normalize(queue.detach(), dim=-1)  # (K, D)
        pos = (q * k).sum(-1, keepdim=True)  # (N, 1)
        logits = torch.cat([pos, q @ queue.T], dim=1) / temperature  # (N, 1 + K)
        labels = torch.zeros(n, dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)
    keys = concat_all_gather_no_grad(k) if gather else k  # (M, D)
    rank = world_info().rank if gather else 0
    logits = q @ keys.T / temperature  # (N, M)
    labels = torch.arange(n, device=q.device) + rank * n
    return F.cross_entropy(logits, labels)


class InfoNCELoss(nn.Module):
    """:func:`info_nce` as a module (MoCo, https://arxiv.org/abs/1911.05722, v3 https://arxiv.org/abs/2104.02057)."""

    def __init__(self, temperature: float = 0.2, gather: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.gather = temperature, gather

    def forward(self, q, k, queue=None):
        return info_nce(q, k, queue, self.temperature, self.gather)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised regression (https://arxiv.org/abs/2006.07733, eq. 2): ``2 - 2 cos(p, z)``,
    mean over the batch. ``p`` ``(N, D)`` online predictions, ``z`` ``(N, D)`` target projections
    (detached here: the target network gets no gradient)."""
    cos = F.cosine_similarity(p, z.detach(), dim=-1)  # (N,)
    return (2 - 2 * cos).mean()


class BYOLLoss(nn.Module):
    """:func:`byol_loss` as a module."""

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return byol_loss(p, z)
