"""BERT pretraining (masked language modelling + next sentence prediction) with a sparse MLM head.

Hugging Face's ``BertForPreTraining`` projects *every* token onto the vocabulary and then ignores
the ~85 % of positions whose label is ``-100``. For a small BERT with a 30k vocabulary that dense
projection costs more than the whole encoder. ``BertPretrainer`` wraps the *same* model (same
modules, same parameter names, same ``save_pretrained`` folder) but gathers the masked positions
first and runs the prediction head on those rows only, and its cross-entropy writes the gradient of
the logits during the forward pass (one fp32 buffer, no separate argmax for the accuracy). The loss
and the gradients are the same as Hugging Face's (tested to 1e-5); on 2 CPU threads a whole training
step of BERT-mini is ~2.4-3.1x faster, BERT-tiny ~4.4-5.6x (benchmarks/speed/bert_pretrain.py).

Paper: Devlin et al. 2019, BERT, https://arxiv.org/abs/1810.04805
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import BertConfig, BertForPreTraining
from transformers.utils import ModelOutput

from hfssl.hub import load_folder_model
from hfssl.methods.bert_config import BertModelArgs, bert_config

IGNORE_INDEX = -100  # label of a position that is not predicted (Hugging Face / PyTorch convention)

class MaskedCrossEntropy(torch.autograd.Function):
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


def bag_of_words_keep(vocab_size: int, special_ids: Sequence[int] = ()) -> torch.Tensor:
    """(V,) float 0/1 mask of the token ids a bag of words counts: 0 for ``special_ids`` ([CLS], [SEP], [PAD],
    [MASK], ...), 1 for every other id."""
    keep = torch.ones(vocab_size)
    keep[list(special_ids)] = 0.0
    return keep


def bag_of_words_loss(logits: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor,
                      attention_mask: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
    """The ``[CLS]`` bag-of-words loss per row: soft cross-entropy of one prediction per row, ``logits`` (B, V),
    against the distribution of the row's original words (``labels`` put back where masked, ids with
    ``keep`` 0 and padding left out). input_ids, labels, attention_mask: (B, T); keep: (V,) from
    :func:`bag_of_words_keep`. Returns (B,) float32; a row without a word gives 0."""
    original = torch.where(labels != IGNORE_INDEX, labels, input_ids)  # (B, T) the text before masking
    weight = keep[original]  # (B, T)
    if attention_mask is not None:
        weight = weight * attention_mask.to(weight.dtype)
    counts = torch.zeros(original.shape[0], keep.shape[0], device=original.device)  # (B, V)
    counts.scatter_add_(1, original, weight)
    target = counts / counts.sum(-1, keepdim=True).clamp(min=1.0)  # (B, V) rows sum to 1 (or 0)
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, V)
    return -(target * logp).sum(-1)


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
    bow_loss: torch.Tensor | None = None
    num_masked: torch.Tensor | None = None


class BertPretrainer(nn.Module):
    """``BertForPreTraining`` whose MLM head runs only on the masked positions.

    ``self.model`` is an unmodified ``BertForPreTraining``: save and export it with
    ``self.model.save_pretrained`` and every Auto* class loads it with the standard keys.

    ``nsp=False`` is MLM-only pretraining (RoBERTa style): the NSP classifier, and the pooler unless
    ``cls_bow_weight`` > 0, are frozen (``requires_grad=False``) so that DistributedDataParallel needs no
    ``find_unused_parameters`` and the optimizer skips them; they stay in the checkpoint at their
    initial values, as with Hugging Face. With ``nsp=True`` a training batch must carry
    ``next_sentence_label``, otherwise those parameters would get no gradient and DDP would stop.
    ``cls_bow_weight`` adds :meth:`forward_bow` (the pooler output predicts the row's words through the
    MLM head) with that weight; ``special_ids`` are the token ids it leaves out.
    """

    def __init__(self, config: BertConfig | None = None, model: BertForPreTraining | None = None, *,
                 nsp: bool = True, cls_bow_weight: float = 0.0, special_ids: Sequence[int] = ()) -> None:
        super().__init__()
        if (config is None) == (model is None):
            raise ValueError("BertPretrainer needs exactly one of config= or model=")
        self.model = model if model is not None else BertForPreTraining(config)
        self.nsp = nsp
        self.cls_bow_weight = float(cls_bow_weight)
        self.register_buffer("bow_keep", bag_of_words_keep(self.model.config.vocab_size, special_ids), persistent=False)
        frozen = [] if nsp else list(self.model.cls.seq_relationship.parameters())
        if not nsp and not self.cls_bow_weight:
            frozen += list(self.model.bert.pooler.parameters())
        for p in frozen:
            p.requires_grad_(False)

    @classmethod
    def from_args(cls, args: BertModelArgs, vocab_size: int, pad_token_id: int = 0, *, nsp: bool = True, **objective):
        """A fresh model for :class:`BertModelArgs` (config, then the optional sinusoidal position init);
        ``objective``: ``cls_bow_weight`` / ``special_ids`` as in the constructor."""
        model = cls(bert_config(args, vocab_size, pad_token_id), nsp=nsp, **objective)
        if args.sinusoidal_positions > 0:
            init_sinusoidal_positions(model.model.bert.embeddings.position_embeddings, args.sinusoidal_positions)
        return model

    @classmethod
    def from_folder(cls, path, config: BertConfig, *, nsp: bool = True, **objective) -> tuple[BertPretrainer, list[str]]:
        """Continue from a ``BertForPreTraining`` / ``BertForMaskedLM`` / ``BertModel`` folder (``config`` from
        :func:`hfssl.methods.bert_config.folder_config`), in float32 whatever the file's precision. Returns the
        model and the names of the weights the folder lacked (its missing heads, newly initialised)."""
        model, info = load_folder_model(BertForPreTraining, path, config=config)
        return cls(model=model, nsp=nsp, **objective), sorted(info.get("missing_keys", []))

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
        loss, pred = MaskedCrossEntropy.apply(logits, targets, denom)  # mean over masked tokens, (M,)
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

    def forward_bow(self, pooled_output: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor,
                    attention_mask: torch.Tensor | None) -> torch.Tensor:
        """[CLS] bag of words: the pooler output, through the MLM head, predicts the distribution of the
        instance's original (unmasked) non-special tokens; soft cross-entropy, mean over the batch.

        pooled_output: (B, H); input_ids, labels, attention_mask: (B, T). Rows without a word add 0.
        """
        logits = self.model.cls.predictions(pooled_output)  # (B, V)
        return bag_of_words_loss(logits, input_ids, labels, attention_mask, self.bow_keep).mean()

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
        nsp_loss = nsp_accuracy = bow_loss = None
        loss = mlm_loss
        if next_sentence_label is not None:
            nsp_loss, nsp_accuracy = self.forward_nsp(out.pooler_output, next_sentence_label)  # (B, H)
            loss = loss + nsp_loss
        if self.cls_bow_weight:
            bow_loss = self.forward_bow(out.pooler_output, input_ids, labels, attention_mask)
            loss = loss + self.cls_bow_weight * bow_loss
        return BertPretrainingOutput(
            loss=loss, mlm_loss=mlm_loss, nsp_loss=nsp_loss, mlm_accuracy=mlm_accuracy,
            nsp_accuracy=nsp_accuracy, num_masked=num_masked, bow_loss=bow_loss,
        )


# --- evaluation: per-example sums for hfssl.train.evaluate, gathered exactly across processes ----------
# An eval step returns a dict of (B,) tensors (sums over each example); the loop gathers them with
# gather_for_metrics (which drops the duplicates Accelerate adds to even out the last batch), adds them up,
# and a summary turns totals into metrics. So a metric is the same with one process or eight.

def mlm_eval_step(mask_fn: Callable | None = None) -> Callable:
    """An eval step for :class:`BertPretrainer`: sums MLM loss / hits / count and NSP loss / hits per
    example. The batch carries ``labels`` from :func:`premask`, or is masked here by
    ``mask_fn(batch, generator)`` (then the masks depend on how batches fall on processes)."""

    def step(model: BertPretrainer, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if mask_fn is not None:
            batch = mask_fn(batch, generator)
        labels = batch["labels"]  # (B, T)
        out = model.model.bert(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                               token_type_ids=batch.get("token_type_ids"), return_dict=True)
        mask = labels != IGNORE_INDEX  # (B, T)
        rows = mask.nonzero()[:, 0]  # (M,) example index of each masked token
        logits = model.model.cls.predictions(out.last_hidden_state[mask])  # (M, V)
        token_loss = F.cross_entropy(logits.float(), labels[mask], reduction="none")  # (M,)
        hits = (logits.argmax(-1) == labels[mask]).double()  # (M,)
        size = labels.shape[0]
        sums = {
            "mlm_loss": torch.zeros(size, dtype=torch.double, device=labels.device).index_add_(0, rows, token_loss.double()),
            "mlm_correct": torch.zeros(size, dtype=torch.double, device=labels.device).index_add_(0, rows, hits),
            "mlm_count": mask.sum(-1).double(),  # (B,)
            "examples": torch.ones(size, dtype=torch.double, device=labels.device),
        }
        if "next_sentence_label" in batch:
            nsp_logits = model.model.cls.seq_relationship(out.pooler_output).float()  # (B, 2)
            target = batch["next_sentence_label"].view(-1)  # (B,)
            sums["nsp_loss"] = F.cross_entropy(nsp_logits, target, reduction="none").double()
            sums["nsp_correct"] = (nsp_logits.argmax(-1) == target).double()
        return sums

    return step


def mlm_summary(totals: dict[str, float]) -> dict[str, float]:
    """MLM loss / accuracy / perplexity over all masked tokens, NSP loss / accuracy over all examples."""
    count = max(totals.get("mlm_count", 0.0), 1.0)
    metrics = {
        "mlm_loss": totals["mlm_loss"] / count,
        "mlm_accuracy": totals["mlm_correct"] / count,
        "examples": totals["examples"],
    }
    metrics["perplexity"] = math.exp(min(metrics["mlm_loss"], 50.0))
    if "nsp_loss" in totals:
        metrics["nsp_loss"] = totals["nsp_loss"] / max(totals["examples"], 1.0)
        metrics["nsp_accuracy"] = totals["nsp_correct"] / max(totals["examples"], 1.0)
    return metrics


def premask(instances: Dataset, collator, seed: int, batch_size: int = 256) -> Dataset:
    """Mask an evaluation set once, before it is sharded: every evaluation, and every process count,
    then scores the very same masked positions. Adds ``labels`` and replaces ``input_ids``."""

    def mask_batch(batch: dict, indices: list[int]) -> dict:
        features = [{k: batch[k][i] for k in batch} for i in range(len(indices))]
        padded = collator.mask(collator.pad(features), torch.Generator().manual_seed(seed * 100_003 + indices[0]))
        lengths = [len(f["input_ids"]) for f in features]
        return {"input_ids": [row[:n] for row, n in zip(padded["input_ids"].tolist(), lengths)],
                "labels": [row[:n] for row, n in zip(padded["labels"].tolist(), lengths)]}

    return instances.map(mask_batch, batched=True, batch_size=batch_size, with_indices=True,
                         desc="masking the evaluation set")
