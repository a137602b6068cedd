"""BERT pretraining (masked language modelling + next sentence prediction) with a sparse MLM head.

Hugging Face's ``BertForPreTraining`` projects *every* token onto the vocabulary and then ignores
the ~85 % of positions whose label is ``-100``. For a small BERT with a 30k vocabulary that dense
projection costs more than the whole encoder. ``BertPretrainer`` wraps the *same* model (same
modules, same parameter names, same ``save_pretrained`` folder) but gathers the masked positions
first and runs the prediction head on those rows only, and its cross-entropy writes the gradient of
the logits during the forward pass (one fp32 buffer, no separate argmax for the accuracy). The loss
and the gradients are the same as Hugging Face's (tested to 1e-5); on 2 CPU threads a whole training
step of BERT-mini is ~2.4-3.1x faster, BERT-tiny ~4.4-5.6x (benchmarks/bert_pretrain.py).

Paper: Devlin et al. 2019, BERT, https://arxiv.org/abs/1810.04805
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForPreTraining
from transformers.utils import ModelOutput

from hfssl.methods.bert_config import (  # noqa: F401  (re-exported: the method's public API)
    PRESETS,
    BertModelArgs,
    bert_config,
    parse_config_overrides,
)

IGNORE_INDEX = -100  # label of a position that is not predicted (Hugging Face / PyTorch convention)

class _MaskedCrossEntropy(torch.autograd.Function):
    """Cross-entropy summed over rows and divided by ``denom``, plus the argmax of every row.

    The same loss as ``F.cross_entropy(logits, target, reduction="sum") / denom`` but the gradient
    ``(softmax - onehot) / denom`` is written in the forward pass over the one buffer that holds
    ``exp(logits - max)``: no log-softmax output, no zero-filled NLL gradient and no separate
    argmax pass (the max that stabilises the exponent gives the prediction for free).
    """

    @staticmethod
    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, denom: torch.Tensor):
        x = logits.float()  # (M, V); fp32 softmax also under bf16 autocast
        top, pred = x.max(-1)  # (M,), (M,)
        picked = x.gather(1, target[:, None]).squeeze(1)  # (M,)
        p = (x - top[:, None]).exp_()  # (M, V), becomes the gradient in place
        total = p.sum(-1)  # (M,)
        loss = (total.log() + top - picked).sum() / denom  # ()
        ctx.mark_non_differentiable(pred)
        ctx.logits_dtype, ctx.done = logits.dtype, False
        if not ctx.needs_input_grad[0]:  # evaluation: no gradient to prepare
            return loss, pred
        p.div_(total[:, None] * denom)  # softmax / denom
        p.scatter_add_(1, target[:, None], torch.full_like(picked[:, None], -1.0) / denom)  # - onehot / denom
        ctx.save_for_backward(p)
        return loss, pred

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_pred):
        if ctx.done:  # the saved buffer is scaled in place below, so it serves one backward only
            raise RuntimeError("backward through the masked MLM loss twice (retain_graph) is not supported")
        ctx.done = True
        (p,) = ctx.saved_tensors
        return p.mul_(grad_loss).to(ctx.logits_dtype), None, None


def init_sinusoidal_positions(embedding: nn.Embedding, std: float) -> None:
    """Fill a learned position table with the Transformer's sinusoids (Vaswani et al. 2017), scaled to ``std``.

    Linear maps of sinusoids give dot products that depend on the *relative* position, so attention to
    neighbouring tokens is easy to learn from the start; the table stays trainable.
    """
    positions, dim = embedding.weight.shape  # (P, H)
    pos = torch.arange(positions, dtype=torch.float32)[:, None]  # (P, 1)
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (H/2,)
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    with torch.no_grad():
        embedding.weight.copy_(table * (std / table.std()))


@dataclass
class BertPretrainingOutput(ModelOutput):
    """Losses and metrics of one batch. Accuracies and counts are detached.

    ``num_masked`` is the number of predicted positions, so that accuracies from several processes
    or batches can be combined exactly: ``sum(acc * n) / sum(n)`` (round ``acc * n`` to get counts).
    The ``nsp_*`` fields are ``None`` when the batch has no ``next_sentence_label``.
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    mlm_accuracy: torch.Tensor | None = None
    nsp_accuracy: torch.Tensor | None = None
    num_masked: torch.Tensor | None = None


class BertPretrainer(nn.Module):
    """``BertForPreTraining`` whose MLM head runs only on the masked positions.

    ``self.model`` is an unmodified ``BertForPreTraining``: save and export it with
    ``self.model.save_pretrained`` and every Auto* class loads it with the standard keys.

    ``nsp=False`` is MLM-only pretraining (RoBERTa style): the pooler and the NSP classifier are
    frozen (``requires_grad=False``) so that DistributedDataParallel needs no
    ``find_unused_parameters`` and the optimizer skips them; they stay in the checkpoint at their
    initial values, as with Hugging Face. With ``nsp=True`` a training batch must carry
    ``next_sentence_label``, otherwise those parameters would get no gradient and DDP would stop.
    """

    def __init__(self, config: BertConfig | None = None, model: BertForPreTraining | None = None, *,
                 nsp: bool = True) -> None:
        super().__init__()
        if (config is None) == (model is None):
            raise ValueError("BertPretrainer needs exactly one of config= or model=")
        self.model = model if model is not None else BertForPreTraining(config)
        self.nsp = nsp
        if not nsp:
            for p in (*self.model.bert.pooler.parameters(), *self.model.cls.seq_relationship.parameters()):
                p.requires_grad_(False)

    @classmethod
    def from_args(cls, args: BertModelArgs, vocab_size: int, pad_token_id: int = 0, *, nsp: bool = True):
        """A fresh model for :class:`BertModelArgs` (config, then the optional sinusoidal position init)."""
        model = cls(bert_config(args, vocab_size, pad_token_id), nsp=nsp)
        if args.sinusoidal_positions > 0:
            init_sinusoidal_positions(model.model.bert.embeddings.position_embeddings, args.sinusoidal_positions)
        return model

    @property
    def config(self) -> BertConfig:
        return self.model.config

    def forward_mlm(self, sequence_output: torch.Tensor, labels: torch.Tensor):
        """MLM loss over the masked positions only.

        sequence_output: (B, T, H); labels: (B, T) with ``-100`` where nothing is predicted.
        Returns (loss, accuracy, num_masked). With no masked position the loss is 0 (with zero
        gradients, so every process of a distributed run still reduces the same parameters).
        """
        mask = labels != IGNORE_INDEX  # (B, T)
        masked = sequence_output[mask]  # (M, H): gather BEFORE the vocabulary projection
        targets = labels[mask]  # (M,)
        logits = self.model.cls.predictions(masked)  # (M, V): transform + decoder tied to the embeddings
        num_masked = mask.sum()  # () long
        denom = num_masked.clamp(min=1)
        loss, pred = _MaskedCrossEntropy.apply(logits, targets, denom)  # mean over masked tokens, (M,)
        accuracy = (pred == targets).sum() / denom
        return loss, accuracy, num_masked

    def forward_nsp(self, pooled_output: torch.Tensor, next_sentence_label: torch.Tensor):
        """NSP loss and accuracy. pooled_output: (B, H); next_sentence_label: (B,), 0 = B follows A."""
        logits = self.model.cls.seq_relationship(pooled_output)  # (B, 2)
        target = next_sentence_label.view(-1)  # (B,)
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, accuracy

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
    ) -> BertPretrainingOutput:
        """input_ids, attention_mask, token_type_ids, labels: (B, T); next_sentence_label: (B,)."""
        if labels is None:
            raise ValueError("BertPretrainer needs MLM `labels` (-100 at positions that are not predicted)")
        if next_sentence_label is not None and not self.nsp:
            raise ValueError("batch has next_sentence_label but the model was built with nsp=False")
        if next_sentence_label is None and self.nsp and self.training and torch.is_grad_enabled():
            raise ValueError(
                "training batch has no next_sentence_label but the model was built with nsp=True; "
                "use BertPretrainer(..., nsp=False) for MLM-only pretraining"
            )
        out = self.model.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              return_dict=True)
        mlm_loss, mlm_accuracy, num_masked = self.forward_mlm(out.last_hidden_state, labels)  # (B, T, H)
        nsp_loss = nsp_accuracy = None
        loss = mlm_loss
        if next_sentence_label is not None:
            nsp_loss, nsp_accuracy = self.forward_nsp(out.pooler_output, next_sentence_label)  # (B, H)
            loss = mlm_loss + nsp_loss
        return BertPretrainingOutput(
            loss=loss, mlm_loss=mlm_loss, nsp_loss=nsp_loss, mlm_accuracy=mlm_accuracy,
            nsp_accuracy=nsp_accuracy, num_masked=num_masked,
        )
