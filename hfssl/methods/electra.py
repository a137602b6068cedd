"""ELECTRA pretraining: a small MLM generator corrupts the input, a discriminator finds the replaced tokens.

Paper: Clark et al. 2020, ELECTRA, https://arxiv.org/abs/2003.10555

Stages of one step (``ElectraPretrainer.forward`` on an MLM-masked batch):

1. ``forward_generator``: the generator (``ElectraForMaskedLM``, 1/4-1/3 of the discriminator's hidden size)
   runs on the masked input; its prediction head runs on the masked positions only (as
   :class:`hfssl.methods.bert.BertPretrainer` does) -> MLM loss, accuracy, logits (M, V).
2. ``sample_replacements``: one token per masked position from the generator's softmax, without gradient,
   by inverse-CDF sampling with a uniform number per position drawn by the batch transform from the step's
   seeded generator (``sample_noise``), so a resumed run draws the same replacements.
3. ``replace_tokens``: the original ids (the MLM labels at masked positions) with the samples put in;
   discriminator label = replaced != original on non-padding positions (a sample equal to the original
   counts as original), 0 on padding.
4. ``forward_discriminator``: ``ElectraForPreTraining`` on the replaced input, BCE over non-padding positions.

5. with ``cls_bow_weight`` > 0, ``forward_cls_bow``: the discriminator's last-layer ``[CLS]`` state, the input of
   ``ElectraClassificationHead`` (what ``AutoModelForSequenceClassification`` reads), predicts the bag of the
   row's original words (BERT's ``[CLS]`` bag-of-words loss, :func:`hfssl.methods.bert.bag_of_words_loss`)
   through :class:`ClsBagOfWordsHead`, a dense + GELU + LayerNorm to the embedding width and the shared token
   table as the output projection. Replaced-token detection asks nothing of the first position, so without
   it the ``[CLS]`` state can stay the same for every input (docs/results.md, ELECTRA). The head lives in the
   pretrainer only: ``OUTPUT/model`` stays a plain ``ElectraForPreTraining`` folder.

loss = generator_loss + disc_weight * discriminator_loss + cls_bow_weight * cls_bow_loss (the paper's lambda =
50, and no bag-of-words loss in the paper). No gradient reaches the
generator from the discriminator loss (the samples are discrete), except through the shared embeddings:
the generator and the discriminator share one ``ElectraEmbeddings`` module (token, position and
token-type tables and their LayerNorm, as the paper's code shares the whole embedding scope).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining
from transformers.utils import ModelOutput

from hfssl.methods.bert import (
    IGNORE_INDEX,
    MaskedCrossEntropy,
    bag_of_words_keep,
    bag_of_words_loss,
    init_sinusoidal_positions,
)
from hfssl.methods.electra_config import ElectraModelArgs, electra_configs

# Histogram of the discriminator's logits in [-8, 8) (ends open), for the held-out AUC. Bins of 1/16: a weak
# discriminator's logits sit within about one unit of the base-rate log-odds (-1.7 at 15 % replaced); bins
# of 1/2 put most of them into two or three bins whose ties count 1/2 (ELECTRA-tiny at step 1,000: 0.530 with
# bins of 1/2, 0.550 by exact ranking; bins of 1/16 came within 0.003 of the exact value in such runs).
AUC_BINS, AUC_RANGE = 256, 8.0


@dataclass
class ElectraPretrainingOutput(ModelOutput):
    """Losses and metrics of one batch (metrics detached). ``replaced_input_ids`` (B, T) is what the
    discriminator saw and ``discriminator_labels`` (B, T) what it had to find (1 = replaced)."""

    loss: torch.Tensor | None = None
    generator_loss: torch.Tensor | None = None
    discriminator_loss: torch.Tensor | None = None
    generator_accuracy: torch.Tensor | None = None
    discriminator_accuracy: torch.Tensor | None = None
    replaced_fraction: torch.Tensor | None = None
    cls_bow_loss: torch.Tensor | None = None
    replaced_input_ids: torch.Tensor | None = None
    discriminator_labels: torch.Tensor | None = None


@torch.no_grad()
def sample_replacements(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One id per row from softmax(logits) by inverse CDF: logits (M, V), noise (M,) uniform in [0, 1) -> (M,).

    Id i is chosen when cdf[i-1] <= u * cdf[-1] < cdf[i], i.e. with probability softmax(logits)[i].
    """
    cdf = logits.detach().float().softmax(-1).cumsum(-1)  # (M, V)
    point = noise.to(cdf.dtype)[:, None] * cdf[:, -1:]  # (M, 1)
    return torch.searchsorted(cdf, point, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def replace_tokens(input_ids: torch.Tensor, labels: torch.Tensor, samples: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(replaced ids, discriminator labels), both (B, T). The original is ``labels`` where masked and
    ``input_ids`` elsewhere; the samples (M,) go into the masked positions; a label is 1 where the replaced
    id differs from the original on a non-padding position, else 0 (float, for the BCE)."""
    masked = labels != IGNORE_INDEX  # (B, T)
    original = torch.where(masked, labels, input_ids)  # (B, T)
    replaced = original.masked_scatter(masked, samples.to(original.dtype))  # (B, T)
    is_replaced = replaced != original
    if attention_mask is not None:
        is_replaced &= attention_mask.bool()
    return replaced, is_replaced.float()


def replaced_token_loss(logits: torch.Tensor, disc_labels: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE, accuracy) of the discriminator's logits (B, T) against its labels (B, T) over non-padding positions."""
    active = torch.ones_like(disc_labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    loss = F.binary_cross_entropy_with_logits(logits[active], disc_labels[active])
    with torch.no_grad():
        accuracy = ((logits[active] > 0).float() == disc_labels[active]).float().mean()
    return loss, accuracy


class ClsBagOfWordsHead(nn.Module):
    """Predicts a row's words from the discriminator's ``[CLS]`` state: dense (H -> E) + GELU + LayerNorm, as
    the generator's and BERT's MLM heads, then the shared token table (E -> V, passed in: tied, never copied)
    plus a bias. Not part of any exported folder."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        nn.init.normal_(self.dense.weight, std=config.initializer_range)  # as transformers initialises Linear
        nn.init.zeros_(self.dense.bias)

    def forward(self, cls_state: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """cls_state (B, H), word_embeddings (V, E) -> logits (B, V)."""
        return F.linear(self.norm(F.gelu(self.dense(cls_state))), word_embeddings, self.bias)


class ElectraPretrainer(nn.Module):
    """A generator and a discriminator with shared embeddings; ``forward(**batch).loss`` trains both.

    ``self.discriminator`` (``ElectraForPreTraining``) is what fine-tuning starts from;
    ``self.generator`` (``ElectraForMaskedLM``) is an ordinary fill-mask model. Both save with
    ``save_pretrained`` as they are (the shared embedding values go into each folder).

    ``cls_bow_weight`` > 0 adds :meth:`forward_cls_bow` with that weight and its head ``self.cls_bow_head``
    (created only then, so a run without it has exactly the parameters it had before); ``special_ids`` are the
    token ids the bag of words leaves out.
    """

    def __init__(self, discriminator: ElectraForPreTraining, generator: ElectraForMaskedLM, disc_weight: float = 50.0,
                 *, cls_bow_weight: float = 0.0, special_ids: Sequence[int] = ()):
        super().__init__()
        if cls_bow_weight < 0:
            raise ValueError(f"cls_bow_weight must be >= 0, got {cls_bow_weight}")
        if discriminator.config.embedding_size != generator.config.embedding_size:
            raise ValueError(f"shared embeddings need the same embedding_size, got discriminator "
                             f"{discriminator.config.embedding_size} and generator {generator.config.embedding_size}")
        self.discriminator, self.generator, self.disc_weight = discriminator, generator, disc_weight
        # One embedding module for both (token, position, token-type tables and LayerNorm); the generator's
        # output projection stays tied to the (now shared) token table.
        generator.electra.embeddings = discriminator.electra.embeddings
        generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
        self.cls_bow_weight = float(cls_bow_weight)
        self.cls_bow_head = ClsBagOfWordsHead(discriminator.config) if self.cls_bow_weight else None
        self.register_buffer("bow_keep", bag_of_words_keep(discriminator.config.vocab_size, special_ids),
                             persistent=False)

    @classmethod
    def from_args(cls, args: ElectraModelArgs, vocab_size: int, pad_token_id: int = 0, **objective) -> ElectraPretrainer:
        """A fresh pair for ``args``; ``args.sinusoidal_positions`` > 0 fills the shared position table with
        sinusoids (both towers read it). ``objective``: ``cls_bow_weight`` / ``special_ids`` as in the constructor."""
        disc_config, gen_config = electra_configs(args, vocab_size, pad_token_id)
        model = cls(ElectraForPreTraining(disc_config), ElectraForMaskedLM(gen_config), args.disc_weight, **objective)
        if args.sinusoidal_positions > 0:
            init_sinusoidal_positions(model.discriminator.electra.embeddings.position_embeddings,
                                      args.sinusoidal_positions)
        return model

    def forward_generator(self, input_ids, attention_mask, token_type_ids, labels):
        """MLM on the masked positions only: (B, T) inputs -> loss, accuracy, logits (M, V), targets (M,)."""
        hidden = self.generator.electra(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                        return_dict=True).last_hidden_state  # (B, T, Hg)
        mask = labels != IGNORE_INDEX  # (B, T)
        targets = labels[mask]  # (M,)
        logits = self.generator.generator_lm_head(self.generator.generator_predictions(hidden[mask]))  # (M, V)
        denom = mask.sum().clamp(min=1)
        loss, pred = MaskedCrossEntropy.apply(logits, targets, denom)
        return loss, (pred == targets).sum() / denom, logits, targets

    def forward_discriminator(self, replaced, attention_mask, token_type_ids, disc_labels, return_hidden=False):
        """BCE over non-padding positions: (B, T) inputs -> loss, accuracy, logits (B, T) [, last hidden states
        (B, T, H) with ``return_hidden``]."""
        hidden = self.discriminator.electra(replaced, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                            return_dict=True).last_hidden_state  # (B, T, H)
        logits = self.discriminator.discriminator_predictions(hidden).float()  # (B, T)
        return (*replaced_token_loss(logits, disc_labels, attention_mask), logits, *((hidden,) if return_hidden else ()))

    def forward_cls_bow(self, hidden, input_ids, labels, attention_mask) -> torch.Tensor:
        """Per row (B,): the discriminator's last-layer first-position ([CLS]) state, hidden (B, T, H), predicts
        the bag of the row's original words (input_ids with the MLM labels put back, (B, T))."""
        logits = self.cls_bow_head(hidden[:, 0], self.discriminator.electra.embeddings.word_embeddings.weight)
        return bag_of_words_loss(logits, input_ids, labels, attention_mask, self.bow_keep)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                sample_noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                ) -> ElectraPretrainingOutput:
        """input_ids (with [MASK]s), attention_mask, token_type_ids, labels, sample_noise: (B, T). Without
        ``sample_noise`` the uniform numbers come from ``generator`` (or torch's default one)."""
        if labels is None:
            raise ValueError("ElectraPretrainer needs MLM `labels` (-100 at positions that are not predicted)")
        gen_loss, gen_accuracy, logits, _ = self.forward_generator(input_ids, attention_mask, token_type_ids, labels)
        mask = labels != IGNORE_INDEX  # (B, T)
        if sample_noise is None:
            noise = torch.rand(logits.shape[0], generator=generator, device=logits.device)  # (M,)
        else:
            noise = sample_noise[mask]  # (M,)
        samples = sample_replacements(logits, noise)  # (M,), no gradient
        replaced, disc_labels = replace_tokens(input_ids, labels, samples, attention_mask)  # (B, T)
        disc_loss, disc_accuracy, _, *hidden = self.forward_discriminator(
            replaced, attention_mask, token_type_ids, disc_labels, return_hidden=self.cls_bow_head is not None)
        loss, bow_loss = gen_loss + self.disc_weight * disc_loss, None
        if hidden:
            bow_loss = self.forward_cls_bow(hidden[0], input_ids, labels, attention_mask).mean()
            loss = loss + self.cls_bow_weight * bow_loss
        active = disc_labels.new_ones(()).expand_as(disc_labels) if attention_mask is None else attention_mask.float()
        return ElectraPretrainingOutput(
            loss=loss, generator_loss=gen_loss, discriminator_loss=disc_loss, cls_bow_loss=bow_loss,
            generator_accuracy=gen_accuracy.detach(), discriminator_accuracy=disc_accuracy,
            replaced_fraction=(disc_labels * active).sum() / active.sum().clamp(min=1),
            replaced_input_ids=replaced, discriminator_labels=disc_labels,
        )


def electra_transform(mask_fn: Callable) -> Callable:
    """The loop's ``transform(batch, generator)``: MLM masking (``MLMCollator.mask``), then one uniform number
    per position for the generator's sampling, both from the step's seeded generator (exact resume)."""

    def transform(batch: dict, generator: torch.Generator) -> dict:
        batch = mask_fn(batch, generator)
        ids = batch["input_ids"]
        return {**batch, "sample_noise": torch.rand(ids.shape, generator=generator, device=ids.device)}

    return transform


# --- evaluation: per-example sums (see hfssl.methods.bert.mlm_eval_step) --------------------------------

def add_sample_noise(instances: Dataset, seed: int, batch_size: int = 256) -> Dataset:
    """Fix the sampling noise of a held-out set once (like :func:`hfssl.methods.bert.premask` fixes its masks):
    a ``sample_noise`` column, one uniform number per token seeded by the row's index, so every evaluation and
    every process count draws the same replacements. Collate it with :func:`pad_with_noise`."""

    def noise(batch: dict, indices: list[int]) -> dict:
        return {"sample_noise": [torch.rand(len(ids), generator=torch.Generator().manual_seed(seed * 100_003 + i)).tolist()
                                 for ids, i in zip(batch["input_ids"], indices)]}

    return instances.map(noise, batched=True, batch_size=batch_size, with_indices=True,
                         desc="fixing the evaluation set's sampling noise")


def pad_with_noise(pad_fn: Callable) -> Callable:
    """A collate function: ``pad_fn`` (``MLMCollator.pad``), plus ``sample_noise`` (B, T) padded with zeros
    when the features carry it (the held-out set of :func:`add_sample_noise`)."""

    def collate(features: list[dict]) -> dict:
        batch = pad_fn(features)
        if features and "sample_noise" in features[0]:
            width = batch["input_ids"].shape[1]
            batch["sample_noise"] = torch.tensor([list(f["sample_noise"]) + [0.0] * (width - len(f["sample_noise"]))
                                                  for f in features], dtype=torch.float32)  # (B, T)
        return batch

    return collate


def electra_eval_step() -> Callable:
    """Per example: generator MLM loss / hits / count on the premasked positions, discriminator loss / hits /
    count / replaced count over non-padding tokens, and histograms of the discriminator's logit for
    replaced and original tokens (for a binned AUC). Replacements are sampled with the batch's fixed
    ``sample_noise`` (:func:`add_sample_noise`), else with the eval generator (then they depend on batching)."""

    def step(model: ElectraPretrainer, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        input_ids, labels = batch["input_ids"], batch["labels"]  # (B, T)
        attention_mask, types = batch.get("attention_mask"), batch.get("token_type_ids")
        mask = labels != IGNORE_INDEX  # (B, T)
        rows = mask.nonzero()[:, 0]  # (M,)
        _, _, logits, targets = model.forward_generator(input_ids, attention_mask, types, labels)  # (M, V)
        noise = (batch["sample_noise"][mask] if "sample_noise" in batch
                 else torch.rand(logits.shape[0], generator=generator, device=logits.device))  # (M,)
        samples = sample_replacements(logits, noise)
        replaced, disc_labels = replace_tokens(input_ids, labels, samples, attention_mask)
        _, _, disc_logits, *hidden = model.forward_discriminator(
            replaced, attention_mask, types, disc_labels, return_hidden=model.cls_bow_head is not None)  # (B, T)
        active = torch.ones_like(disc_labels) if attention_mask is None else attention_mask.double().to(disc_labels)
        size, dev = labels.shape[0], labels.device

        def per_example(values: torch.Tensor) -> torch.Tensor:  # (M,) -> (B,)
            return torch.zeros(size, dtype=torch.double, device=dev).index_add_(0, rows, values.double())

        token_bce = F.binary_cross_entropy_with_logits(disc_logits, disc_labels, reduction="none")  # (B, T)
        sums = {
            "generator_loss": per_example(F.cross_entropy(logits.float(), targets, reduction="none")),
            "generator_correct": per_example((logits.argmax(-1) == targets).double()),
            "generator_count": mask.sum(-1).double(),
            "discriminator_loss": (token_bce * active).sum(-1).double(),
            "discriminator_correct": (((disc_logits > 0).float() == disc_labels).float() * active).sum(-1).double(),
            "discriminator_count": active.sum(-1).double(),
            "replaced": (disc_labels * active).sum(-1).double(),
            "examples": torch.ones(size, dtype=torch.double, device=dev),
        }
        if hidden:  # the [CLS] bag-of-words loss, one per row
            sums["cls_bow_loss"] = model.forward_cls_bow(hidden[0], input_ids, labels, attention_mask).double()
        pos, neg = logit_histograms(disc_logits, disc_labels, active)  # (B, bins) each
        for b in range(AUC_BINS):
            sums[f"auc_pos_{b:03d}"], sums[f"auc_neg_{b:03d}"] = pos[:, b], neg[:, b]
        return sums

    return step


def logit_histograms(logits: torch.Tensor, labels: torch.Tensor,
                     active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, counts of replaced (label 1) and original (label 0) active tokens per logit bin: logits,
    labels, active (B, T) -> two (B, AUC_BINS) float64 tensors; bin b holds [-8 + b/16, -8 + (b+1)/16),
    the ends open."""
    scaled = (logits.float() + AUC_RANGE) * (AUC_BINS / (2 * AUC_RANGE))  # (B, T)
    bins = scaled.floor().clamp_(0, AUC_BINS - 1).long()  # (B, T)
    replaced = labels.double() * active.double()  # (B, T)
    empty = torch.zeros(bins.shape[0], AUC_BINS, dtype=torch.double, device=bins.device)  # (B, bins)
    return (empty.scatter_add(1, bins, replaced),
            empty.scatter_add(1, bins, active.double() - replaced))


def binned_auc(positive: list[float], negative: list[float]) -> float:
    """ROC AUC from score histograms (ascending bins): P(score_pos > score_neg), ties within a bin 1/2."""
    total_pos, total_neg = sum(positive), sum(negative)
    if not total_pos or not total_neg:
        return float("nan")
    below, area = 0.0, 0.0
    for pos, neg in zip(positive, negative):
        area += pos * (below + 0.5 * neg)
        below += neg
    return area / (total_pos * total_neg)


def electra_summary(totals: dict[str, float]) -> dict[str, float]:
    """Generator loss / accuracy / perplexity over masked tokens; discriminator loss / accuracy / AUC and
    the replaced fraction over non-padding tokens; the [CLS] bag-of-words loss over rows when it was summed."""
    gen_count, disc_count = max(totals["generator_count"], 1.0), max(totals["discriminator_count"], 1.0)
    metrics = {
        "generator_loss": totals["generator_loss"] / gen_count,
        "generator_accuracy": totals["generator_correct"] / gen_count,
        "discriminator_loss": totals["discriminator_loss"] / disc_count,
        "discriminator_accuracy": totals["discriminator_correct"] / disc_count,
        "discriminator_auc": binned_auc([totals[f"auc_pos_{b:03d}"] for b in range(AUC_BINS)],
                                        [totals[f"auc_neg_{b:03d}"] for b in range(AUC_BINS)]),
        "replaced_fraction": totals["replaced"] / disc_count,
        "examples": totals["examples"],
    }
    metrics["generator_perplexity"] = math.exp(min(metrics["generator_loss"], 50.0))
    if "cls_bow_loss" in totals:
        metrics["cls_bow_loss"] = totals["cls_bow_loss"] / max(totals["examples"], 1.0)
    return metrics
