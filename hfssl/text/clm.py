"""Causal-LM training rows: documents packed full across document boundaries, an end-of-text token between them.

The packing of ``--nsp false`` (:mod:`hfssl.text.nsp`) with GPT's row layout: the documents of a block of
:data:`hfssl.text.nsp.BLOCK_DOCS` form one token stream with the tokenizer's eos (``<|endoftext|>``) between two
documents (:func:`hfssl.text.nsp.block_stream`), and the stream is cut into rows of exactly ``max_seq_length``
tokens, no ``[CLS]``/``[SEP]`` wrapper and no padding. Each epoch starts the cuts at a random offset below one
row (:func:`hfssl.text.nsp.block_seed`: the same per-block stream of random numbers as ``--nsp false``), so the
epochs see different rows; the piece before the first cut and after the last (each shorter than a row) is left
out of that epoch, as ``run_clm.py`` drops its remainder. Deterministic for ``(seed, epoch)`` whatever
``num_proc``, cached beside the tokenized corpus (``clm-rows-<fingerprint>.arrow``).

A document's text is its sentences joined by single spaces (:func:`join_documents`), tokenized whole: with a
byte-level BPE that is what ``tokenizer(text)`` gives, so ``decode`` of a row is the text itself.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset, Features, List, Value
from datasets.fingerprint import Hasher

from hfssl.errors import UserError
from hfssl.text.encode import CACHE_VERSION, flat_corpus, id_dtype, resolve_num_proc, tokenize_documents
from hfssl.text.epochs import InstanceBuilder
from hfssl.text.nsp import BLOCK_DOCS, block_seed, block_stream

ROWS_VERSION = "clm-rows-1"  # of how rows are cut: a change here must not reuse rows cached before it


@dataclass
class CLMArgs:
    """How the causal-LM training rows are made."""

    max_seq_length: int = field(default=128, metadata={
        "help": "Tokens per training row (packed full across documents, eos between them; no padding)."})
    preprocessing_num_proc: int | None = field(default=None, metadata={
        "help": "Processes for tokenizing and cutting rows (None: min(2, CPUs), one per 16 MB of text)."})
    draw_ahead: bool = field(default=True, metadata={
        "help": "Cut the next epoch's rows in the background while the current epoch trains (cached corpora)."})

    def __post_init__(self):
        if self.max_seq_length < 2:
            raise ValueError(f"--max_seq_length must be at least 2 (a token and the one it predicts), "
                             f"got {self.max_seq_length}")
        if self.preprocessing_num_proc is not None and self.preprocessing_num_proc < 1:
            raise ValueError(f"--preprocessing_num_proc must be at least 1 (or unset), got {self.preprocessing_num_proc}")


def _join_batch(batch: pa.Table) -> pa.Table:
    """Arrow batch of documents -> ``sentences`` holding one text per document (its sentences, space-joined)."""
    joined = pc.binary_join(batch.column("sentences").combine_chunks(), " ").fill_null("")  # (D,) strings
    offsets = pa.array(np.arange(len(joined) + 1, dtype=np.int32))
    return pa.table({"sentences": pa.ListArray.from_arrays(offsets, joined)})


def join_documents(documents: Dataset) -> Dataset:
    """Documents -> the same documents with one "sentence" each, the whole text (sentences joined by a space), so
    that :func:`hfssl.text.encode.tokenize_documents` tokenizes each document in one piece (cached)."""
    if "sentences" not in documents.column_names:
        raise ValueError(f"documents need a 'sentences' column, got columns {documents.column_names}")
    return documents.with_format("arrow").map(
        _join_batch, batched=True, batch_size=1000, remove_columns=documents.column_names,
        features=Features({"sentences": List(Value("string"))}), desc="Joining sentences",
        new_fingerprint=Hasher.hash([ROWS_VERSION, "joined", documents._fingerprint])).with_format(None)


def _clm_blocks(blocks: dict, *, tokenized: Dataset, seed: int, epoch: int, eos_id: int, max_seq_length: int,
                id_type: str) -> pa.Table:
    """``datasets.map`` function over blocks of documents -> full rows of ``max_seq_length`` tokens."""
    corpus, length = flat_corpus(tokenized), max_seq_length
    rows = []
    for first, stop in zip(blocks["start"], blocks["stop"]):
        stream = block_stream(corpus, first, stop, eos_id)  # (T,) eos between documents
        if len(stream) < length:
            continue
        shift = random.Random(block_seed(seed, epoch, first)).randint(0, min(length - 1, len(stream) - length))
        starts = np.arange(shift, len(stream) - length + 1, length)  # (R,)
        rows.append(stream[starts[:, None] + np.arange(length)])  # (R, L)
    ids = np.concatenate(rows).ravel() if rows else np.zeros(0, np.int32)
    offsets = np.arange(len(ids) // length + 1, dtype=np.int32) * length
    return pa.table({"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids.astype(id_type)))})


def build_clm_rows(tokenized: Dataset, *, eos_id: int, max_seq_length: int = 128, seed: int = 0, epoch: int = 0,
                   num_proc: int | None = None, name: str = "corpus", keep_earlier_epochs: bool = True) -> Dataset:
    """Rows of one epoch: ``input_ids`` of exactly ``max_seq_length`` tokens each (module docstring). A split whose
    tokens do not fill one row is a :class:`UserError` naming ``name`` ("training split", "held-out split").
    ``keep_earlier_epochs=False`` deletes the cached rows of epochs ``1..epoch-1`` (as NSP instances do)."""
    CLMArgs(max_seq_length=max_seq_length)  # validates
    corpus = flat_corpus(tokenized)
    tokens = int(corpus.length.sum()) + max(len(corpus.docs) - 1, 0)  # with the eos between documents
    if tokens < max_seq_length:
        raise UserError(f"the {name} has {tokens} tokens (eos between documents included), fewer than one training "
                        f"row of --max_seq_length {max_seq_length}, --corpus; give more text, lower --max_seq_length"
                        + (", or change --eval_fraction (0: no held-out split)" if "held-out" in name else ""))
    n = len(tokenized)
    starts = list(range(0, n, BLOCK_DOCS))
    blocks = Dataset.from_dict({"start": starts, "stop": [min(s + BLOCK_DOCS, n) for s in starts]})
    kwargs = dict(seed=seed, eos_id=eos_id, max_seq_length=max_seq_length,
                  id_type=id_dtype(max(len(corpus.tokens) and int(corpus.tokens.max()), eos_id)))

    def fingerprint_of(e: int) -> str:
        return Hasher.hash([CACHE_VERSION, ROWS_VERSION, BLOCK_DOCS, tokenized._fingerprint,
                            sorted({**kwargs, "epoch": e}.items())])

    fingerprint, cache_file = fingerprint_of(epoch), None
    if tokenized.cache_files:
        folder = os.path.dirname(tokenized.cache_files[0]["filename"])
        cache_file = os.path.join(folder, f"clm-rows-{fingerprint}.arrow")
        if not keep_earlier_epochs:
            stale = {f"clm-rows-{fingerprint_of(e)}" for e in range(1, epoch)}
            for file in os.listdir(folder):
                if file.endswith(".arrow") and file.split("_", 1)[0].removesuffix(".arrow") in stale:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, file))
    num_proc = min(resolve_num_proc(num_proc, len(corpus.tokens), 16e6), len(blocks))
    rows = blocks.map(
        _clm_blocks, batched=True, batch_size=1, fn_kwargs={"tokenized": tokenized, "epoch": epoch, **kwargs},
        remove_columns=["start", "stop"], features=Features({"input_ids": List(Value(kwargs["id_type"]))}),
        num_proc=num_proc if num_proc > 1 else None, new_fingerprint=fingerprint, cache_file_name=cache_file,
        desc=f"causal-LM rows (epoch {epoch})")
    if len(rows) == 0:
        raise UserError(f"no document block of the {name} fills a row of --max_seq_length {max_seq_length} tokens, "
                        "--corpus; give longer documents or lower --max_seq_length")
    return rows


class CLMRowBuilder(InstanceBuilder):
    """:class:`hfssl.text.epochs.InstanceBuilder` (per-epoch rows, draw-ahead, stale-epoch cleanup) for causal-LM
    rows: ``for_epoch(epoch)`` gives :func:`build_clm_rows` of that epoch."""

    def __init__(self, tokenized: Dataset, args: CLMArgs, *, eos_id: int, seed: int = 0, name: str = "corpus"):
        super().__init__(tokenized, args, cls_id=eos_id, sep_id=eos_id, seed=seed, name=name)
        self.eos_id = eos_id

    @classmethod
    def from_documents(cls, documents: Dataset, tokenizer, args: CLMArgs, *, seed: int = 0,
                       name: str = "corpus") -> CLMRowBuilder:
        """Join each document's sentences, tokenize the texts whole, take the eos token from the tokenizer."""
        if tokenizer.eos_token_id is None:
            raise UserError("the tokenizer has no end-of-text (eos) token to put between documents, "
                            "--tokenizer_name_or_path; use one with an eos token or leave it unset to train one")
        tokenized = tokenize_documents(join_documents(documents), tokenizer, num_proc=args.preprocessing_num_proc)
        return cls(tokenized, args, eos_id=tokenizer.eos_token_id, seed=seed, name=name)

    def _build(self, epoch: int, keep_earlier_epochs: bool) -> Dataset:
        return build_clm_rows(self.tokenized, eos_id=self.eos_id, max_seq_length=self.args.max_seq_length,
                              seed=self.seed, epoch=epoch, num_proc=self.args.preprocessing_num_proc, name=self.name,
                              keep_earlier_epochs=keep_earlier_epochs)


def format_rows(rows: Dataset, max_seq_length: int) -> str:
    """One line for logs: ``rows=1,234 x 128 tokens (157,952 tokens, no padding)``."""
    return f"rows={len(rows):,} x {max_seq_length} tokens ({len(rows) * max_seq_length:,} tokens, no padding)"


def collate_rows(features: list[dict]) -> dict[str, torch.Tensor]:
    """Rows of equal length -> ``{"input_ids": (B, T) long}`` (no attention mask: nothing is padded)."""
    return {"input_ids": torch.tensor([f["input_ids"] for f in features], dtype=torch.long)}
