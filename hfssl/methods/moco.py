"""MoCo v2 (Chen et al. 2020, https://arxiv.org/abs/2003.04297) and a v3-style variant
(https://arxiv.org/abs/2104.02057).

v2: query encoder + momentum key encoder, InfoNCE against a queue of past keys (a buffer, so it is saved
in checkpoints and a resumed run continues with the same negatives); keys of every process are enqueued.
v3: no queue; a predictor on the query side; the keys of the global batch are the negatives; symmetric.

Shuffle BN on one device: MoCo shuffles the keys across GPUs so that a query and its key never share
batch-norm statistics (otherwise the model "cheats" by finding its positive through them, MoCo section
3.3). Here each process splits its batch into ``bn_splits`` groups; queries are encoded group by group in
order, keys in a random permutation (drawn from torch's RNG, which checkpoints restore), so a key's BN
statistics come from a different set of images than its query's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from hfssl.distributed import concat_all_gather_no_grad
from hfssl.ema import MomentumSchedule, ema_update, make_target
from hfssl.heads import PredictionHead, ProjectionHead
from hfssl.losses import info_nce
from hfssl.methods.contrastive import Encoder, SSLArgs, SSLMethod, SSLOutput, loss_in_fp32
from hfssl.vision.backbones import feature_dim


class MoCo(SSLMethod):
    _encoder_name = "query"

    def __init__(self, backbone: PreTrainedModel, args: SSLArgs):
        super().__init__()
        self.version, self.temperature, self.bn_splits = args.moco_version, args.temperature, args.bn_splits
        self.symmetric = args.symmetric or self.version == "v3"
        v3 = self.version == "v3"
        # v2: Linear-ReLU-Linear without BN; v3: BN MLP with a non-affine BN last
        projector = ProjectionHead(feature_dim(backbone), args.proj_hidden_dim, args.proj_dim, args.proj_layers,
                                   batch_norm=v3, last_bn=v3)
        self.query = Encoder(backbone, projector)
        self.predictor = PredictionHead(args.proj_dim, args.pred_hidden_dim) if v3 else None
        self.key = make_target(self.query)
        self.momentum = (args.momentum, args.momentum_final)
        self.lr_scales = {"predictor": args.pred_lr_scale} if v3 else {}  # read by hfssl.optim.param_groups
        if not v3:
            self.register_buffer("queue", F.normalize(torch.randn(args.queue_size, args.proj_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _split(self, n: int) -> int:
        return self.bn_splits if n % self.bn_splits == 0 and n // self.bn_splits > 1 else 1

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.query(c)[1] for c in x.chunk(self._split(len(x)))])  # (N, D) BN per group
        return self.predictor(z) if self.predictor is not None else z

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        perm = torch.randperm(len(x), device=x.device)
        k = torch.cat([self.key(c)[1] for c in x[perm].chunk(self._split(len(x)))])  # (N, D) shuffled groups
        return k[torch.argsort(perm)]  # back to the order of the queries

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        keys = F.normalize(concat_all_gather_no_grad(keys).to(self.queue.dtype), dim=1)  # (M, D) all processes (bf16 under autocast)
        size = self.queue.shape[0]
        keys = keys[-size:]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[idx] = keys
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, **_) -> SSLOutput:
        q1, k2 = self._queries(view1), self._keys(view2)
        queue = self.queue.clone() if self.version == "v2" else None  # the negatives before this step's keys
        loss = loss_in_fp32(info_nce, q1, k2, queue, self.temperature)
        if self.symmetric:
            q2, k1 = self._queries(view2), self._keys(view1)
            loss = (loss + loss_in_fp32(info_nce, q2, k1, queue, self.temperature)) / 2
            if queue is not None:
                self._enqueue(k1)
        if queue is not None:
            self._enqueue(k2)
        return self.output(loss, q1)

    def step_end(self, step: int, total: int) -> None:
        schedule = MomentumSchedule(total, *self.momentum)
        ema_update(self.key, self.query, schedule(step))
