"""What SimCLR, MoCo and BYOL share: backbone + projector, the output, the collapse guard, the arguments.

A method is an ``nn.Module`` whose ``forward(view1, view2)`` returns :class:`SSLOutput` (``loss`` and the
collapse statistic ``embed_std``) and whose ``step_end(step, total)`` runs after every optimizer step
(the momentum update of MoCo and BYOL). ``model.backbone`` is the plain transformers encoder that is
exported; features for kNN and the linear probe come from it, never from the projector.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from hfssl.vision.backbones import features


@dataclass
class SSLArgs:
    """Heads, temperature and momentum of a contrastive / self-distillation method."""

    method: str = field(default="simclr", metadata={"help": "simclr, moco or byol (set by the recipe)."})
    proj_hidden_dim: int = field(default=512, metadata={"help": "Hidden width of the projector MLP."})
    proj_dim: int = field(default=128, metadata={"help": "Output size of the projector."})
    proj_layers: int = field(default=2, metadata={"help": "Linear layers in the projector."})
    pred_hidden_dim: int = field(default=512, metadata={"help": "Hidden width of the predictor (BYOL, MoCo v3)."})
    pred_lr_scale: float = field(default=1.0, metadata={"help": "Learning-rate multiplier of the predictor (BYOL, "
                                                               "MoCo v3): a predictor that learns faster than the "
                                                               "encoder, as in SimSiam / DirectPred."})
    temperature: float = field(default=0.2, metadata={"help": "Softmax temperature (SimCLR, MoCo)."})
    moco_version: str = field(default="v2", metadata={"help": "MoCo: v2 (queue) or v3 (no queue, predictor)."})
    queue_size: int = field(default=4096, metadata={"help": "MoCo v2: negatives kept in the queue."})
    symmetric: bool = field(default=True, metadata={"help": "MoCo v2: also swap the views (v3 always does)."})
    bn_splits: int = field(default=2, metadata={"help": "MoCo: batch-norm groups per process; keys are shuffled "
                                                        "across them (MoCo's shuffle BN on one device)."})
    momentum: float = field(default=0.99, metadata={"help": "EMA momentum of the target network at step 0."})
    momentum_final: float = field(default=1.0, metadata={"help": "Momentum at the last step (cosine schedule; "
                                                                 "equal to momentum: constant)."})
    collapse_threshold: float = field(default=0.1, metadata={"help": "Warn when embed_std falls below this."})

    def __post_init__(self):
        if self.method not in ("simclr", "moco", "byol"):
            raise ValueError(f"method must be simclr, moco or byol, not {self.method!r}")
        if self.moco_version not in ("v2", "v3"):
            raise ValueError(f"moco_version must be v2 or v3, not {self.moco_version!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if not 0 <= self.momentum <= self.momentum_final <= 1:
            raise ValueError(f"need 0 <= momentum <= momentum_final <= 1, got {self.momentum}, {self.momentum_final}")
        for name in ("queue_size", "bn_splits", "proj_hidden_dim", "proj_dim", "proj_layers", "pred_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not self.pred_lr_scale > 0:
            raise ValueError(f"--pred_lr_scale must be > 0, got {self.pred_lr_scale}")
        if not self.collapse_threshold >= 0:
            raise ValueError(f"--collapse_threshold must be >= 0, got {self.collapse_threshold}")


def new_parts(model: nn.Module, backbone: nn.Module) -> list[str]:
    """The modules of ``model`` a loaded ``backbone`` does not provide (projector, predictor), by name; momentum
    copies of the backbone start from it, so they are not new."""
    loaded = {id(p) for p in backbone.parameters()}
    names = set()
    for name, param in model.named_parameters():
        if id(param) not in loaded and ".backbone." not in f".{name}":
            head = re.match(r"^(.*?(?:projector|predictor))\.", name)
            names.add(head.group(1) if head else name)
    return sorted(names)


@dataclass
class SSLOutput(ModelOutput):
    loss: torch.Tensor | None = None
    embed_std: torch.Tensor | None = None


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Std over the batch of the L2-normalised embeddings ``(N, D)``, averaged over dimensions, times
    sqrt(D): about 1 for embeddings spread over the sphere, 0 when every image maps to one point
    (collapse; BYOL paper section 3 / SimSiam 2011.10566 figure 2)."""
    z = F.normalize(z.detach().float(), dim=-1)
    return z.std(0).mean() * math.sqrt(z.shape[1])


def loss_in_fp32(fn, *args, **kwargs):
    """``fn(*args)`` outside autocast, with float32 tensors: under bf16 autocast the logits' matmul would
    otherwise run in bf16 (8 mantissa bits), too coarse to rank close negatives at low temperature."""
    args = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
    device = next(a.device.type for a in args if isinstance(a, torch.Tensor))
    with torch.autocast(device, enabled=False):
        return fn(*args, **kwargs)


class Encoder(nn.Module):
    """Backbone -> pooled features -> projector. ``forward`` returns ``(features, projections)``."""

    def __init__(self, backbone: PreTrainedModel, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = features(self.backbone, pixel_values)  # (B, F)
        return h, self.projector(h)  # (B, F), (B, D)


class CollapseGuard:
    """Warns (at most every ``every`` steps) when the method's last ``embed_std`` is below ``threshold``."""

    def __init__(self, threshold: float, every: int = 100):
        self.threshold, self.every, self.last_warned = threshold, every, -every

    def __call__(self, model: nn.Module, step: int) -> None:
        std = getattr(model, "last_embed_std", None)
        if std is not None and std < self.threshold and step - self.last_warned >= self.every:
            self.last_warned = step
            warnings.warn(f"step {step}: embed_std {std:.3f} < {self.threshold}: the embeddings are collapsing "
                          "(all images map to nearly one point). Lower the learning rate, raise the momentum "
                          "or the temperature, or check the augmentation.", stacklevel=2)


class SSLMethod(nn.Module):
    """Base class: keeps ``last_embed_std`` for the collapse guard; ``step_end`` does nothing."""

    last_embed_std: float | None = None
    _encoder_name = "encoder"  # the attribute holding the trained (online / query) Encoder

    @property
    def backbone(self) -> PreTrainedModel:
        """The trained transformers encoder (registered once, inside the Encoder: no shared tensors)."""
        return getattr(self, self._encoder_name).backbone

    def output(self, loss: torch.Tensor, z: torch.Tensor) -> SSLOutput:
        std = embedding_std(z)
        self.last_embed_std = float(std)
        return SSLOutput(loss=loss, embed_std=std)

    def step_end(self, step: int, total: int) -> None:  # noqa: B027 (optional hook)
        pass
