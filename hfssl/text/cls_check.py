"""Is an exported text encoder's ``[CLS]`` state (near) constant over real rows?

``AutoModelForSequenceClassification`` classifies from one token's last hidden state (BERT through its pooler,
ELECTRA through ``ElectraClassificationHead``: the first token; GPT-style models: the last real token). A
pretraining loss that asks nothing of that position can leave it the same for every input (ELECTRA-tiny's
discriminator at a CPU budget: cosine 0.999-1.000 between unrelated sentences, and it fine-tuned at chance,
docs/results.md "Text — ELECTRA"); a classifier then starts from no signal. :func:`check_cls_state` runs the
exported model on up to 256 rows and measures that.

The measure, :func:`cls_spread`: the share of the vectors' mean square that varies across rows,

    spread = mean_i ||x_i - mean(x)||^2 / mean_i ||x_i||^2   in [0, 1]

0 for a constant vector, 1 - 1/N for zero-mean random vectors, unchanged by a rescaling of the vectors; for
vectors of equal norm (LayerNorm outputs) it is about 1 - the mean cosine between rows. It is not shift-invariant
on purpose: a large common offset with a small variation is what "cosine 0.999 between any two inputs" means.

The threshold, :data:`SPREAD_THRESHOLD` = 0.01 (the row-to-row variation under a tenth of the vector's RMS norm;
mean cosine about 0.99): the collapsed ELECTRA checkpoint above had a spread of about 0.001 or less and fine-tuned
at chance; the default ELECTRA-tiny checkpoint (cosine 0.856, spread about 0.14) fine-tuned 4.4 points above its
scratch arm on BBC topics. 0.01 sits about a factor of 10 from each (their geometric mean is 0.012).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

SPREAD_THRESHOLD = 0.01
MAX_ROWS = 256
IGNORE_INDEX = -100
DEFAULT_ADVICE = ("fine-tune with a larger learning rate (2e-3 - 3e-3 for a small model re-routes [CLS]), classify "
                  "from the mean of the token states, or pretrain with a sentence-level loss")


def cls_spread(vectors: torch.Tensor) -> float:
    """(N, H) vectors -> the share of their mean square that varies across rows (module docstring); 0 when they
    are all the same, including all zero."""
    x = vectors.detach().double()
    total = x.pow(2).sum(-1).mean()
    if not total > 0:
        return 0.0
    return float((x - x.mean(0)).pow(2).sum(-1).mean() / total)


def mean_cosine(vectors: torch.Tensor) -> float:
    """Mean cosine similarity over the pairs of distinct rows of (N, H) vectors (N >= 2)."""
    u = torch.nn.functional.normalize(vectors.detach().double(), dim=-1)  # (N, H)
    n = u.shape[0]
    return float((u.sum(0).pow(2).sum() - u.pow(2).sum()) / (n * (n - 1)))


@dataclass
class ClsCheck:
    """The outcome of :func:`check_cls_state`; ``constant`` when the spread is under the threshold."""

    spread: float
    cosine: float
    rows: int
    source: str  # "held-out rows" / "training rows"
    threshold: float = SPREAD_THRESHOLD
    advice: str = DEFAULT_ADVICE

    @property
    def constant(self) -> bool:
        return self.spread < self.threshold

    def measure(self) -> str:
        return (f"spread {self.spread:.2g}: the share of the vectors' mean square that varies across rows, flagged "
                f"under {self.threshold:g}; mean cosine between rows {self.cosine:.4f}")

    def message(self, folder) -> str:
        """One line for the log: the warning when constant, else what was measured."""
        if self.constant:
            return (f"warning: the [CLS] state of {folder} is (near) constant over {self.rows} {self.source} "
                    f"({self.measure()}): a sequence classifier reading [CLS] starts from no signal; {self.advice}")
        return f"[CLS] state of {folder} over {self.rows} {self.source}: {self.measure()} (not constant)"

    @property
    def note(self) -> str | None:
        """The model card's note when constant, else None."""
        if not self.constant:
            return None
        return (f"**Fine-tuning note:** the `[CLS]` state this model exports is (near) the same for every input: over "
                f"{self.rows} {self.source} ({self.measure()}). A sequence classifier reading `[CLS]` starts from no "
                f"signal; {self.advice}.")


def first_token_states(model, rows: Sequence[dict], *, max_rows: int = MAX_ROWS, batch_size: int = 32,
                       position: str = "first") -> torch.Tensor:
    """The last hidden state at the first (``[CLS]``) or the last real token of up to ``max_rows`` rows: (N, H)
    float32 on the CPU. ``model``: any transformers model whose ``base_model`` returns ``last_hidden_state``
    (BERT, ELECTRA, GPT-2, Llama ...); ``rows``: a ``datasets.Dataset`` or a list of dicts with ``input_ids``
    (and ``token_type_ids``, passed on when present); an MLM ``labels`` column (a premasked held-out set) is
    undone first, so the model reads the original words. Eval mode, no gradient; the training mode is restored."""
    if position not in ("first", "last"):
        raise ValueError(f"position must be 'first' or 'last', got {position!r}")
    picked = [rows[i] for i in range(min(len(rows), max_rows))]
    picked = [r for r in picked if len(r["input_ids"])]
    encoder, was_training = model.base_model, model.training
    device = next(model.parameters()).device
    pad = getattr(model.config, "pad_token_id", None) or 0
    out = []
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(picked), batch_size):
                chunk = picked[start:start + batch_size]
                width = max(len(r["input_ids"]) for r in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attention = torch.zeros_like(ids)
                types = torch.zeros_like(ids) if "token_type_ids" in chunk[0] else None
                for b, r in enumerate(chunk):
                    row = torch.as_tensor(r["input_ids"], dtype=torch.long)
                    if "labels" in r:  # MLM labels: the original token where masked, -100 elsewhere
                        labels = torch.as_tensor(r["labels"], dtype=torch.long)[: len(row)]
                        row = torch.where(labels != IGNORE_INDEX, labels, row)
                    ids[b, : len(row)], attention[b, : len(row)] = row, 1
                    if types is not None:
                        types[b, : len(row)] = torch.as_tensor(r["token_type_ids"], dtype=torch.long)
                extra = {} if types is None else {"token_type_ids": types.to(device)}
                hidden = encoder(input_ids=ids.to(device), attention_mask=attention.to(device),
                                 **extra).last_hidden_state  # (B, T, H)
                at = torch.zeros(len(chunk), dtype=torch.long) if position == "first" else attention.sum(1) - 1
                out.append(hidden[torch.arange(len(chunk)), at.to(device)].float().cpu())  # (B, H)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)


def check_cls_state(model, rows: Sequence[dict], *, held_out: bool = True, hint: str | None = None,
                    max_rows: int = MAX_ROWS, position: str = "first",
                    threshold: float = SPREAD_THRESHOLD) -> ClsCheck | None:
    """Measure how constant ``model``'s ``[CLS]`` (``position``) state is over up to ``max_rows`` of ``rows``
    (:func:`first_token_states`; ``held_out`` says whether they are held-out or training rows); None with fewer
    than 2 non-empty rows. ``hint``: the recipe's own flags for a sentence-level loss, added to the advice. A
    recipe prints ``.message(folder)`` and puts ``.note`` into the model card."""
    vectors = first_token_states(model, rows, max_rows=max_rows, position=position)
    if vectors.shape[0] < 2:
        return None
    return ClsCheck(spread=cls_spread(vectors), cosine=mean_cosine(vectors), rows=vectors.shape[0],
                    source="held-out rows" if held_out else "training rows", threshold=threshold,
                    advice=f"{DEFAULT_ADVICE} ({hint})" if hint else DEFAULT_ADVICE)
