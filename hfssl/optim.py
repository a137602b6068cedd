"""Optimizer parameter groups and learning-rate / momentum schedules."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler

# Parameter names (lower-cased) that get no weight decay: biases and every kind of norm.
_NO_DECAY = ("bias", "layernorm", "layer_norm", "norm.weight", "bn.", "batchnorm", "ln_", ".ln.")


def no_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases, normalisation weights and other 1-d parameters (BERT / ViT / ResNet convention)."""
    lowered = name.lower()
    return param.ndim <= 1 or any(key in lowered for key in _NO_DECAY)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and undecayed biases / norms. Frozen parameters are left out.

    A model may set ``lr_scales`` ``{submodule name: multiplier}`` (e.g. BYOL's ``{"predictor": 10.0}``): the
    parameters under that name get two more groups whose ``lr_scale`` :func:`build_optimizer` multiplies into
    their learning rate (the schedule then scales every group alike)."""
    scales = {k: float(v) for k, v in (getattr(model, "lr_scales", None) or {}).items() if float(v) != 1.0}
    groups = {(1.0, True): [], (1.0, False): []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((v for k, v in scales.items() if name == k or name.startswith(k + ".")), 1.0)
        groups.setdefault((scale, not no_decay(name, param)), []).append(param)
    out = []
    for (scale, decay), params in groups.items():
        if scale != 1.0 and not params:
            continue
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            group["lr_scale"] = scale
        out.append(group)
    return out


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW over :func:`param_groups`, with the fused kernel where this torch build has one for the device."""
    groups = param_groups(model, weight_decay)
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    device = next(model.parameters()).device
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError):  # no fused kernel for this device/dtype
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


def warmup_steps_from(warmup: float, total_steps: int) -> int:
    """``warmup`` below 1 is a fraction of the run (the transformers 5 convention), otherwise a step count."""
    return int(math.ceil(warmup * total_steps)) if 0 <= warmup < 1 else int(warmup)


def build_scheduler(optimizer, kind: str, warmup: float, total_steps: int):
    """Linear warmup then ``linear`` / ``cosine`` decay to zero, or ``constant`` after warmup."""
    name = {"constant": "constant_with_warmup"}.get(kind, kind)
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps_from(warmup, total_steps), num_training_steps=total_steps
    )


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's EMA momentum schedule: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def schedule_factor(kind: str, warmup: float, progress: float) -> float:
    """The multiplier of the peak learning rate at ``progress`` (0 to 1) of a run whose warmup is the fraction
    ``warmup`` (< 1): the shapes of :func:`build_scheduler` (linear warmup, then linear / cosine decay to zero,
    or constant), laid over a fraction of the run instead of steps (the time budget's schedule)."""
    if progress < warmup:
        return progress / warmup
    if kind == "constant":
        return 1.0
    rest = min((progress - warmup) / (1.0 - warmup), 1.0)
    return 1.0 - rest if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * rest))


class ProgressSchedule:
    """``LambdaLR``'s multiplier read from ``progress``, the fraction of the run that the loop sets before each
    ``scheduler.step()``. A plain object, so ``kind``, ``warmup`` and ``progress`` are in the scheduler's
    ``state_dict`` (LambdaLR saves the ``__dict__`` of callable objects) and come back with a checkpoint."""

    def __init__(self, kind: str, warmup: float):
        self.kind, self.warmup, self.progress = kind, float(warmup), 0.0

    def __call__(self, _step: int) -> float:
        return schedule_factor(self.kind, self.warmup, self.progress)


def build_progress_scheduler(optimizer, kind: str, warmup: float) -> tuple[torch.optim.lr_scheduler.LambdaLR,
                                                                             ProgressSchedule]:
    """The scheduler of a time-budgeted run and the :class:`ProgressSchedule` whose ``progress`` drives it."""
    schedule = ProgressSchedule(kind, warmup)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), schedule
