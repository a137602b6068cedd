"""MLM masking collator: Google BERT's ``create_masked_lm_predictions``, vectorised in torch.

Reference: google-research/bert ``create_pretraining_data.py``. Per sequence Google

1. groups candidates (every token but ``[CLS]``/``[SEP]``) into words, a word being a token plus the
   ``##`` pieces that follow it when ``do_whole_word_mask`` (else every token is its own word);
2. shuffles the words and sets ``num_to_predict = min(max_predictions_per_seq,
   max(1, round(len(tokens) * masked_lm_prob)))``, where ``len(tokens)`` counts ``[CLS]``/``[SEP]``;
3. walks the shuffled words, *skipping* a word that would push the count past ``num_to_predict``
   and going on with the next one, so a short word later in the order can still fill the gap;
4. for every chosen *token position* (per position, even under whole-word masking) draws
   80 % ``[MASK]``, 10 % a random vocabulary word, 10 % unchanged.

What this module does the same: the exact count rule (a fixed number of predictions per sequence,
not independent Bernoulli draws; ``round`` is Python 3's, half to even, computed in float64 so it
matches Python), the skip-and-go-on word walk, and the per-position 80/10/10 decision. The random
order is ``argsort`` of uniform scores per word, which is a uniform random permutation like
``rng.shuffle``; the walk runs as a few whole-batch passes (see :func:`greedy_word_fill`).

Where it differs, on purpose:

* candidates exclude every id in ``tokenizer.all_special_ids`` (so ``[UNK]`` and ``[MASK]`` too, as
  in transformers' collators) and padding; the count still uses all non-padding tokens, as Google;
* ``num_to_predict`` is also capped by the number of candidates (Google's loop just ends early);
* a ``##`` piece right after a special token starts a new word (Google would glue it to the last
  word before ``[SEP]``);
* random replacements are drawn uniformly from the *non-special* vocabulary (Google draws from the
  whole vocabulary, specials included).

Randomness: with ``seed`` the collator owns a ``torch.Generator`` whose state ``state_dict`` /
``load_state_dict`` save and restore (``accelerator.register_for_checkpointing(collator)``), so a
resumed run masks the next batch exactly as the uninterrupted run would. That holds for collation in
the main process (``num_workers=0``). In a DataLoader worker each worker reseeds its copy from
``(seed, worker_info.seed)`` so workers and epochs do not repeat one another's masks. Without
``seed`` torch's default generator is used (accelerate checkpoints that one itself). For masking
inside the loop with a per-step generator, call :meth:`MLMCollator.pad` in the loader and
:meth:`MLMCollator.mask` (any device) in the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch.utils.data import get_worker_info


@dataclass
class MaskingArgs:
    """How tokens are chosen and replaced for masked language modelling."""

    mlm_probability: float = field(
        default=0.15, metadata={"help": "Fraction of a sequence's tokens to predict (Google's masked_lm_prob)."}
    )
    max_predictions_per_seq: int | None = field(
        default=20, metadata={"help": "Cap on predictions per sequence (Google: 20 at 128 tokens); None: no cap."}
    )
    whole_word_mask: bool = field(
        default=False, metadata={"help": "Choose whole words (a token plus its following ## pieces) together."}
    )
    mask_replace_prob: float = field(
        default=0.8, metadata={"help": "Of the chosen positions, the fraction replaced by [MASK]."}
    )
    random_replace_prob: float = field(
        default=0.1, metadata={"help": "Of the chosen positions, the fraction replaced by a random token."}
    )
    pad_to_multiple_of: int | None = field(
        default=8, metadata={"help": "Round the padded length up to a multiple of this (None: longest in batch)."}
    )

    def __post_init__(self):
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.max_predictions_per_seq is not None and self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be >= 1 or None, got {self.max_predictions_per_seq}")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob must be <= 1 (the rest stays unchanged), got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}"
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1 or None, got {self.pad_to_multiple_of}")


def greedy_word_fill(lengths: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Google's word walk for a batch: which words (in walk order) are taken.

    ``lengths`` (B, W) holds each word's token count in the shuffled order, 0 for "no word here";
    ``budget`` (B,) is ``num_to_predict``. Sequentially: take a word if it still fits, else skip it
    and go on. Vectorised as passes: words longer than the remaining budget can never be taken, so a
    pass takes the prefix of the still-eligible words whose running sum fits; the first eligible word
    that overflows is exactly the one the sequential walk skips, and the next pass resumes after it
    with the smaller budget. Every pass takes at least one word per unfinished row, and usually one
    or two passes finish the batch. Returns (B, W) bool.
    """
    B, W = lengths.shape
    pos = torch.arange(W, device=lengths.device)  # (W,)
    taken = torch.zeros_like(lengths, dtype=torch.bool)  # (B, W)
    remaining = budget.clone()  # (B,)
    start = torch.zeros(B, dtype=torch.long, device=lengths.device)  # (B,) first word this pass may see
    while True:
        eligible = (pos >= start[:, None]) & (lengths > 0) & (lengths <= remaining[:, None])  # (B, W)
        if not bool(eligible.any()):
            return taken
        running = torch.cumsum(lengths * eligible, dim=1)  # (B, W)
        fits = eligible & (running <= remaining[:, None])  # (B, W)
        taken |= fits
        remaining = remaining - (lengths * fits).sum(dim=1)
        skipped = eligible & ~fits  # (B, W)
        start = torch.where(skipped, pos, W).min(dim=1).values + 1  # (B,)


class MLMCollator:
    """Pads BERT features and chooses MLM predictions Google's way (see the module docstring).

    Input features: dicts with ``input_ids`` (with ``[CLS]``/``[SEP]`` already), optional
    ``token_type_ids`` and ``next_sentence_label``; other keys are not read. Output: ``input_ids``,
    ``attention_mask``, ``token_type_ids``, ``labels`` (original id where chosen, -100 elsewhere),
    all (B, T) long, and ``next_sentence_label`` (B,) when the features carry it.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        max_predictions_per_seq: int | None = 20,
        whole_word_mask: bool = False,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = 8,
        seed: int | None = None,
    ):
        self.args = MaskingArgs(
            mlm_probability, max_predictions_per_seq, whole_word_mask,
            mask_replace_prob, random_replace_prob, pad_to_multiple_of,
        )  # fmt: skip
        for name in ("pad_token_id", "mask_token_id"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(f"tokenizer has no {name}; MLM needs a BERT-style tokenizer with [PAD] and [MASK]")
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.mask_token_id = int(tokenizer.mask_token_id)
        vocab = tokenizer.get_vocab()  # token -> id, added tokens included
        self.vocab_size = max(max(vocab.values()) + 1, len(tokenizer))
        self.is_special = torch.zeros(self.vocab_size, dtype=torch.bool)  # (V,)
        self.is_special[list(tokenizer.all_special_ids)] = True
        # Computed once: which ids are "##" continuation pieces, for whole-word grouping.
        self.is_continuation = torch.zeros(self.vocab_size, dtype=torch.bool)  # (V,)
        self.is_continuation[[i for t, i in vocab.items() if t.startswith("##")]] = True
        self.replacement_ids = torch.tensor(  # (R,) non-special ids, for the random replacements
            sorted(i for i in set(vocab.values()) if not self.is_special[i]), dtype=torch.long
        )
        if len(self.replacement_ids) == 0:
            raise ValueError("tokenizer vocabulary has no non-special tokens to draw random replacements from")
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self._worker_seed: int | None = None
        self._device_tables: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @classmethod
    def from_args(cls, tokenizer, args: MaskingArgs, seed: int | None = None) -> MLMCollator:
        """Build from a :class:`MaskingArgs` (the config dataclass)."""
        return cls(
            tokenizer, args.mlm_probability, args.max_predictions_per_seq, args.whole_word_mask,
            args.mask_replace_prob, args.random_replace_prob, args.pad_to_multiple_of, seed=seed,
        )  # fmt: skip

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Pad ``features`` and mask them with the collator's own generator."""
        self._reseed_in_worker()
        return self.mask(self.pad(features), generator=self.generator)

    # ---------------------------------------------------------------- padding
    def pad(self, features: list[Mapping]) -> dict[str, torch.Tensor]:
        """Stack features into (B, T) tensors, T = longest rounded up to ``pad_to_multiple_of``."""
        if not features:
            raise ValueError("MLMCollator got an empty batch")
        rows = [self._row(f, i, "input_ids") for i, f in enumerate(features)]
        lengths = [len(r) for r in rows]
        T = max(lengths)
        if self.args.pad_to_multiple_of:
            T = -(-T // self.args.pad_to_multiple_of) * self.args.pad_to_multiple_of
        # Padding Python lists and converting once is several times faster than a tensor per row.
        input_ids = torch.tensor([r + [self.pad_token_id] * (T - len(r)) for r in rows], dtype=torch.long)
        attention_mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
        outside = ((input_ids < 0) | (input_ids >= self.vocab_size)) & attention_mask.bool()  # (B, T)
        if bool(outside.any()):
            raise ValueError(
                f"feature {int(outside.any(dim=1).nonzero()[0])}: input_ids outside the tokenizer vocabulary "
                f"[0, {self.vocab_size}); was the data tokenized with a different tokenizer?"
            )
        # no_padding (a plain bool) tells mask() to drop the all-ones mask after use: SDPA then runs without a
        # mask, the fast path on GPUs, and the common case once MLM-only rows are packed full
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "no_padding": min(lengths) == T}
        batch["token_type_ids"] = torch.zeros_like(input_ids)  # (B, T)
        if self._all_or_none(features, "token_type_ids"):
            types = [self._row(f, i, "token_type_ids") for i, f in enumerate(features)]
            for i, (t, n) in enumerate(zip(types, lengths)):
                if len(t) != n:
                    raise ValueError(f"feature {i}: {len(t)} token_type_ids for {n} input_ids")
            batch["token_type_ids"] = torch.tensor([t + [0] * (T - len(t)) for t in types], dtype=torch.long)
        if self._all_or_none(features, "next_sentence_label"):
            labels = [int(f["next_sentence_label"]) for f in features]
            batch["next_sentence_label"] = torch.tensor(labels, dtype=torch.long)  # (B,)
        if self._all_or_none(features, "labels"):  # already masked (a fixed evaluation set): keep its labels
            mlm = [self._row(f, i, "labels") for i, f in enumerate(features)]
            batch["labels"] = torch.tensor([m + [-100] * (T - len(m)) for m in mlm], dtype=torch.long)  # (B, T)
        return batch

    @staticmethod
    def _row(feature: Mapping, index: int, key: str) -> list[int]:
        """One feature's ``key`` as a list of ints (lists pass through; tensors/arrays are converted)."""
        if not isinstance(feature, Mapping) or "input_ids" not in feature:
            raise ValueError(f"feature {index}: expected a dict with 'input_ids', got {type(feature).__name__}")
        ids = feature[key]
        if not isinstance(ids, list):
            ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1).tolist()
        if not ids:
            raise ValueError(f"feature {index}: empty {key} (drop empty rows before collating)")
        return ids

    @staticmethod
    def _all_or_none(features: list[Mapping], key: str) -> bool:
        present = [key in f for f in features]
        if any(present) and not all(present):
            raise ValueError(f"feature {present.index(False)} lacks {key!r}, which other features in the batch have")
        return all(present)

    # ---------------------------------------------------------------- masking
    def mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict:
        """Choose and replace predictions in a padded batch (on any device); adds ``labels``.

        ``generator`` must live on the batch's device; None uses torch's default generator there.
        """
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]  # (B, T)
        chosen = self.choose_positions(input_ids, attention_mask, generator)  # (B, T)
        masked_ids, labels = self.replace(input_ids, chosen, generator)
        out = {k: v for k, v in batch.items() if k != "no_padding"}
        if batch.get("no_padding"):
            del out["attention_mask"]  # all ones: the model attends everywhere without it
        return {**out, "input_ids": masked_ids, "labels": labels}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._device_tables:
            tables = (self.is_special, self.is_continuation, self.replacement_ids)
            self._device_tables[device] = tuple(t.to(device) for t in tables)
        return self._device_tables[device]

    def num_to_predict(self, attention_mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Google's count per sequence, capped by the candidates: (B, T), (B, T) -> (B,) long."""
        n_real = attention_mask.sum(dim=1).double()  # (B,) [CLS]/[SEP] included, as Google
        n = torch.round(n_real * self.args.mlm_probability).long().clamp(min=1)  # half to even, like Python 3
        if self.args.max_predictions_per_seq is not None:
            n = n.clamp(max=self.args.max_predictions_per_seq)
        return torch.minimum(n, candidates.sum(dim=1))

    def choose_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, T) bool: the positions to predict, whole words together when ``whole_word_mask``."""
        is_special, is_continuation, _ = self._tables(input_ids.device)
        B, T = input_ids.shape
        candidates = attention_mask.bool() & ~is_special[input_ids]  # (B, T)
        starts = candidates  # token-level: every candidate is a one-token word
        if self.args.whole_word_mask:
            previous = torch.nn.functional.pad(candidates[:, :-1], (1, 0))  # (B, T) candidate at t-1
            starts = candidates & ~(is_continuation[input_ids] & previous)
        word = torch.where(candidates, starts.long().cumsum(dim=1) - 1, T)  # (B, T) word index, T = none
        lengths = torch.zeros(B, T + 1, dtype=torch.long, device=input_ids.device)
        lengths = lengths.scatter_add_(1, word, torch.ones_like(word))[:, :T]  # (B, W=T) tokens per word
        scores = torch.rand(B, T, generator=generator, device=input_ids.device)  # (B, W)
        scores = scores.masked_fill(lengths == 0, 2.0)  # non-words sort last
        order = scores.argsort(dim=1)  # (B, W) random word order
        taken = greedy_word_fill(lengths.gather(1, order), self.num_to_predict(attention_mask, candidates))
        word_taken = torch.zeros_like(taken).scatter_(1, order, taken)  # (B, W) back to word index
        return candidates & word_taken.gather(1, word.clamp(max=T - 1))  # (B, T)

    def replace(
        self, input_ids: torch.Tensor, chosen: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """80/10/10 per chosen position -> (masked input_ids, labels), both (B, T) long."""
        _, _, replacement_ids = self._tables(input_ids.device)
        p_mask, p_random = self.args.mask_replace_prob, self.args.random_replace_prob
        u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)  # (B, T)
        pick = torch.randint(
            len(replacement_ids), input_ids.shape, generator=generator, device=input_ids.device
        )  # (B, T)
        masked = input_ids.masked_fill(chosen & (u < p_mask), self.mask_token_id)
        to_random = chosen & (u >= p_mask) & (u < p_mask + p_random)
        masked = torch.where(to_random, replacement_ids[pick], masked)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        return masked, labels

    # ---------------------------------------------------------------- state
    def _reseed_in_worker(self) -> None:
        """In a DataLoader worker, give this copy its own stream (else workers and epochs repeat)."""
        info = get_worker_info()
        if self.generator is None or info is None or info.seed == self._worker_seed:
            return
        self._worker_seed = info.seed
        self.generator.manual_seed(hash((self.seed, info.seed)) & (2**63 - 1))

    def state_dict(self) -> dict:
        """The generator state (empty when using torch's default generator)."""
        return {} if self.generator is None else {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`, so the next batch is masked as in the saved run."""
        if "generator" not in state:
            return
        if self.generator is None:
            self.generator = torch.Generator()
        self.seed = state.get("seed", self.seed)
        self.generator.set_state(state["generator"])
