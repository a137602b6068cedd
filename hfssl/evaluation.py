"""Evaluation steps for ``hfssl.train.evaluate``: per-example sums that gather exactly across processes.

An eval step returns a dict of ``(B,)`` tensors (sums over each example); the loop gathers them with
``gather_for_metrics`` (which drops the duplicates Accelerate adds to even out the last batch), adds them
up, and a summary turns totals into metrics. So a metric is the same with one process or eight.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from datasets import Dataset

from hfssl.methods.bert import IGNORE_INDEX, BertPretrainer


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
