"""SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709): two views, one encoder, NT-Xent over the
global batch (negatives gathered from every process with gradient, see :func:`hfssl.losses.nt_xent`)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from hfssl.heads import ProjectionHead
from hfssl.losses import nt_xent
from hfssl.methods.contrastive import Encoder, SSLArgs, SSLMethod, SSLOutput, loss_in_fp32
from hfssl.vision.backbones import feature_dim


class SimCLR(SSLMethod):
    def __init__(self, backbone: PreTrainedModel, args: SSLArgs):
        super().__init__()
        self.temperature = args.temperature
        projector = ProjectionHead(feature_dim(backbone), args.proj_hidden_dim, args.proj_dim, args.proj_layers)
        self.encoder = Encoder(backbone, projector)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, **_) -> SSLOutput:
        _, z = self.encoder(torch.cat([view1, view2]))  # one pass: BN statistics over both views
        z1, z2 = z.chunk(2)  # (N, D) each
        return self.output(loss_in_fp32(nt_xent, z1, z2, self.temperature), z1)
