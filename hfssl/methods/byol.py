"""BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733): an online encoder + predictor regresses
the projection of the other view made by an EMA target encoder; no negatives. The loss is symmetric
(both views through both networks); the target's momentum follows BYOL's cosine schedule and is
applied after each optimizer step (:meth:`step_end`) to the unwrapped model."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from hfssl.ema import MomentumSchedule, ema_update, make_target
from hfssl.heads import PredictionHead, ProjectionHead
from hfssl.losses import byol_loss
from hfssl.methods.contrastive import Encoder, SSLArgs, SSLMethod, SSLOutput, loss_in_fp32
from hfssl.vision.backbones import feature_dim


class BYOL(SSLMethod):
    _encoder_name = "online"

    def __init__(self, backbone: PreTrainedModel, args: SSLArgs):
        super().__init__()
        projector = ProjectionHead(feature_dim(backbone), args.proj_hidden_dim, args.proj_dim, args.proj_layers)
        self.online = Encoder(backbone, projector)
        self.predictor = PredictionHead(args.proj_dim, args.pred_hidden_dim)
        self.target = make_target(self.online)  # no grad, never in the optimizer
        self.momentum = (args.momentum, args.momentum_final)
        self.lr_scales = {"predictor": args.pred_lr_scale}  # read by hfssl.optim.param_groups

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, **_) -> SSLOutput:
        n = view1.shape[0]
        _, z = self.online(torch.cat([view1, view2]))  # (2N, D)
        p1, p2 = self.predictor(z).split(n)  # (N, D) each
        with torch.no_grad():
            _, t = self.target(torch.cat([view1, view2]))
            t1, t2 = t.split(n)
        loss = loss_in_fp32(byol_loss, p1, t2) + loss_in_fp32(byol_loss, p2, t1)  # BYOL's symmetrised loss
        return self.output(loss, z[:n])

    def step_end(self, step: int, total: int) -> None:
        schedule = MomentumSchedule(total, *self.momentum)
        ema_update(self.target, self.online, schedule(step))
