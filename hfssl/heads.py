"""Projection and prediction MLPs (SimCLR / MoCo v2 / MoCo v3 / BYOL) and SyncBatchNorm conversion."""

from __future__ import annotations

from torch import nn


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, batch_norm: bool, last_bn: bool,
         last_bn_affine: bool) -> nn.Sequential:
    """``num_layers`` Linear layers; every hidden one followed by (BN +) ReLU, the last by BN if ``last_bn``."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
        last = i == num_layers - 1
        bn_here = batch_norm and (not last or last_bn)
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not bn_here))  # BN's shift replaces the bias
        if bn_here:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=not last or last_bn_affine))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """Backbone features ``(B, in_dim)`` -> projections ``(B, out_dim)``.

    Styles: SimCLR (https://arxiv.org/abs/2002.05709) ``num_layers=2, last_bn=False`` (v2 uses 3 layers);
    MoCo v2 (https://arxiv.org/abs/2003.04297) ``batch_norm=False`` (Linear-ReLU-Linear);
    BYOL (https://arxiv.org/abs/2006.07733) ``hidden_dim=4096, out_dim=256, last_bn=False``;
    MoCo v3 (https://arxiv.org/abs/2104.02057) ``num_layers=3, last_bn=True`` with a non-affine last BN.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, num_layers: int = 2,
                 batch_norm: bool = True, last_bn: bool = False, last_bn_affine: bool = False):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.layers = _mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm, last_bn, last_bn_affine)

    def forward(self, x):
        return self.layers(x)  # (B, out_dim)


class PredictionHead(ProjectionHead):
    """BYOL / MoCo v3 predictor ``(B, dim)`` -> ``(B, dim)``: Linear-BN-ReLU-Linear (no last BN by default)."""

    def __init__(self, dim: int = 256, hidden_dim: int = 4096, num_layers: int = 2, last_bn: bool = False):
        super().__init__(dim, hidden_dim, dim, num_layers=num_layers, batch_norm=True, last_bn=last_bn)


def convert_sync_batchnorm(model: nn.Module, accelerator_or_num_processes) -> nn.Module:
    """Replace every BatchNorm by ``SyncBatchNorm`` when more than one process trains, else return ``model``.

    Call it BEFORE ``accelerator.prepare``: DDP must wrap the converted module (BN statistics over the
    global batch; SimCLR/BYOL leak information through per-process statistics otherwise). Takes an
    ``Accelerator`` or a process count.
    """
    n = getattr(accelerator_or_num_processes, "num_processes", accelerator_or_num_processes)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"need an Accelerator or a process count >= 1, got {accelerator_or_num_processes!r}")
    if n == 1:
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
