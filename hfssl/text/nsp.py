"""BERT sentence-pair (NSP) instances: Google's ``create_instances_from_document``, fast and cached.

Per document (empty sentences and documents dropped) the algorithm of google-research/bert
``create_pretraining_data.py`` with the same random calls in the same order: a target of
``max_seq_length - 3`` tokens (with ``short_seq_prob``, per document, a random one in ``[2, max]``);
sentences accumulate into a chunk until the target or the document's end; A = the chunk's first
``a_end`` sentences (random); B = the rest (``next_sentence_label`` 0) or, with
``random_next_prob`` and always for a one-sentence chunk, a random segment of another document
(label 1) with the unused sentences put back; ``truncate_seq_pair`` to ``max_seq_length - 3`` (longer
segment, front or back at random); ``[CLS] A [SEP] B [SEP]``, ``token_type_ids`` 0 then 1.

Differences, on purpose: (1) **balance**: Google's forced random B gives ~54 % random pairs on
real text. Each forced one adds ``1 - random_next_prob`` to a debt; a multi-sentence chunk that
draws "random" while the debt is >= 1/2 keeps its real B and pays 1 back, so the fraction is
``random_next_prob`` in expectation (while forced chunks are rarer than that; what is left owed at
the end of a block of :data:`BLOCK_DOCS` documents is lost, < 0.1 % on real text). No draw is
added: ``balance=False`` is Google's stream exactly (tests compare against a port). (2) the random
document is never the current one (after Google's 10 tries, its neighbour). (3) instances stay in
document order (the DataLoader shuffles).

Determinism and speed: documents form fixed blocks of :data:`BLOCK_DOCS`, each with its own
``random.Random`` (Python's, as Google: scalar draws are far cheaper than numpy's) seeded from
``(seed, epoch, first document)``. ``datasets.map`` runs over blocks, so every ``num_proc`` gives
the same rows, cached under a fingerprint of corpus, arguments, seed and epoch; each epoch draws
anew (Google's ``dupe_factor`` without copies). Workers see the whole corpus as one flat token
array; an instance is four offsets into it and rows are gathered with numpy.

``nsp=False``: RoBERTa's FULL-SENTENCES packing. The documents of a block form one token stream with a
``[SEP]`` between documents, cut into rows of ``max_seq_length - 2`` tokens, ``[CLS] x [SEP]``: every row
but the block's first and last is full, so padding is nearly zero (MLM-only instances of whole sentences of
one document were 37-43 % padding). Each epoch shifts the cuts by a random offset drawn from the block's
stream, so epochs see different rows; every token is used exactly once per epoch (``short_seq_prob`` is
not used).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value
from datasets.fingerprint import Hasher

from hfssl.errors import UserError
from hfssl.text.encode import (
    CACHE_VERSION,
    TokenCorpus,
    flat_corpus,
    id_dtype,
    resolve_num_proc,
)

BLOCK_DOCS = 256  # documents per random stream; part of the result (like the seed), not a tuning knob


@dataclass
class NSPArgs:
    """Sentence-pair instance options (Google's ``create_pretraining_data.py`` flags)."""

    max_seq_length: int = field(default=128, metadata={"help": "Tokens per instance, [CLS] and [SEP]s included."})
    short_seq_prob: float = field(
        default=0.1, metadata={"help": "Probability that a document uses a random shorter target length "
                                       "(sentence pairs only; MLM-only rows are packed full)."}
    )
    nsp: bool = field(
        default=True,
        metadata={"help": "Sentence pairs with next_sentence_label; False: MLM-only rows [CLS] x [SEP] packed "
                          "full across documents (RoBERTa's FULL-SENTENCES)."},
    )
    cls_bow_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a [CLS] bag-of-words loss: the pooler output (BERT; through the MLM head) or the "
                          "discriminator's [CLS] state (ELECTRA; through a small head tied to the embeddings) predicts "
                          "the instance's words, so what sequence classifiers read is trained (0: off)."},
    )
    random_next_prob: float = field(
        default=0.5, metadata={"help": "Fraction of pairs whose B is a random segment of another document."}
    )
    preprocessing_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing and building instances (None: min(2, CPUs), "
                                        "one per 16 MB of text / 16M tokens, as a worker costs ~1 s to start)."}
    )
    draw_ahead: bool = field(
        default=True,
        metadata={"help": "Draw the next epoch's instances in the background while the current epoch trains (on "
                          "each machine's first process; cached corpora only), so an epoch boundary does not wait "
                          "for the redraw. False: draw each epoch when it starts."},
    )

    def __post_init__(self):
        least = 5 if self.nsp else 3  # [CLS] A [SEP] B [SEP] / [CLS] x [SEP], one token per segment
        if self.max_seq_length < least:
            raise ValueError(f"--max_seq_length must be at least {least} (room for [CLS], [SEP] and the "
                             f"segment{'s' if self.nsp else ''}), got {self.max_seq_length}")
        if self.cls_bow_weight < 0:
            raise ValueError(f"--cls_bow_weight must be >= 0, got {self.cls_bow_weight}")
        for name in ("short_seq_prob", "random_next_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.preprocessing_num_proc is not None and self.preprocessing_num_proc < 1:
            raise ValueError(f"--preprocessing_num_proc must be at least 1 (or unset), got {self.preprocessing_num_proc}")


# ------------------------------------------------------------------------------- the algorithm
def _truncate_pair(a_lo, a_hi, b_lo, b_hi, max_num_tokens: int, rng: random.Random):
    """Google's ``truncate_seq_pair`` on offset ranges."""
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        if a_hi - a_lo > b_hi - b_lo:
            if rng.random() < 0.5:
                a_lo += 1
            else:
                a_hi -= 1
        elif rng.random() < 0.5:
            b_lo += 1
        else:
            b_hi -= 1
    return a_lo, a_hi, b_lo, b_hi


def _pair_instances(corpus: TokenCorpus, doc: int, rng: random.Random, out: list, debt: list[float], *,
                    max_num_tokens: int, short_seq_prob: float, random_next_prob: float, balance: bool = True):
    """Google's ``create_instances_from_document``; appends ``(a_lo, a_hi, b_lo, b_hi, is_random)``."""
    start, length = corpus.sentences(doc)
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    chunk_first, chunk_len, i = 0, 0, 0
    while i < len(length):
        chunk_len += length[i]
        if i == len(length) - 1 or chunk_len >= target:
            n = i - chunk_first + 1
            a_end = rng.randint(1, n - 1) if n >= 2 else 1
            a_lo = start[chunk_first]
            a_hi = start[chunk_first + a_end - 1] + length[chunk_first + a_end - 1]
            if n == 1:
                is_random = True
                debt[0] += (1.0 - random_next_prob) if balance else 0.0
            else:
                is_random = rng.random() < random_next_prob
                if is_random and debt[0] >= 0.5:  # pay back one forced random B (module docstring)
                    is_random, debt[0] = False, debt[0] - 1.0
            if is_random:
                b_lo, b_hi = corpus.random_segment(rng, int(corpus.rank[doc]), target - (a_hi - a_lo))
                i -= n - a_end  # put the unused sentences back
            else:
                b_lo, b_hi = a_hi, start[i] + length[i]
            out.append((*_truncate_pair(a_lo, a_hi, b_lo, b_hi, max_num_tokens, rng), int(is_random)))
            chunk_first, chunk_len = i + 1, 0
        i += 1


def _block_seed(seed: int, epoch: int, first_doc: int) -> int:
    state = np.random.SeedSequence([seed, epoch, first_doc]).generate_state(4)
    return int.from_bytes(state.tobytes(), "little")


# ------------------------------------------------------------------------------- rows and map
def _rows(tokens: np.ndarray, segments: np.ndarray, specials: list[int], types: list[int], id_type: str = "int32"):
    """Gather instances made of segments. ``segments`` (n, k, 2) holds [lo, hi) ranges into ``tokens``;
    a segment with ``specials[j] >= 0`` is that one id instead. Returns offsets, ids, token types."""
    n, k = segments.shape[:2]
    special = np.tile(np.asarray(specials), n)  # (n*k,)
    seg_lo = np.where(special >= 0, 0, segments[:, :, 0].ravel())
    seg_len = np.where(special >= 0, 1, segments[:, :, 1].ravel() - segments[:, :, 0].ravel())
    seg_off = np.cumsum(seg_len) - seg_len  # (n*k,) first output position of each segment
    src = np.repeat(seg_lo - seg_off, seg_len) + np.arange(seg_len.sum())
    is_special = np.repeat(special, seg_len)
    ids = np.where(is_special >= 0, is_special, tokens[src] if len(tokens) else 0).astype(id_type)
    token_types = np.repeat(np.tile(np.asarray(types, np.bool_), n), seg_len)  # one bit each in Arrow
    row_len = seg_len.reshape(n, k).sum(1)
    offsets = np.concatenate([[0], np.cumsum(row_len)]).astype(np.int32)
    return pa.array(offsets), pa.array(ids), pa.array(token_types)


def _instance_table(tokens: np.ndarray, found: list, cls_id: int, sep_id: int, id_type: str = "int32") -> pa.Table:
    """Found ``(a_lo, a_hi, b_lo, b_hi, label)`` offsets -> the sentence-pair instance columns."""
    inst = np.asarray(found, dtype=np.int64).reshape(-1, 5)
    zero = np.zeros((len(inst), 2), np.int64)  # the range of a special token is ignored
    segments = np.stack([zero, inst[:, 0:2], zero, inst[:, 2:4], zero], 1)  # (n, 5, 2): [CLS] A [SEP] B [SEP]
    offsets, ids, types = _rows(tokens, segments, [cls_id, -1, sep_id, -1, sep_id], [0, 0, 0, 1, 1], id_type)
    return pa.table({"input_ids": pa.ListArray.from_arrays(offsets, ids),
                     "token_type_ids": pa.ListArray.from_arrays(offsets, types),
                     "next_sentence_label": pa.array(inst[:, 4])})


def _build_blocks(blocks: dict, *, tokenized: Dataset, seed: int, epoch: int, cls_id: int, sep_id: int,
                  max_seq_length: int, short_seq_prob: float, random_next_prob: float, id_type: str, **_) -> pa.Table:
    """``datasets.map`` function of ``nsp=True`` over blocks of documents -> sentence-pair instances."""
    corpus = flat_corpus(tokenized)
    found: list = []
    for first, stop in zip(blocks["start"], blocks["stop"]):
        rng, debt = random.Random(_block_seed(seed, epoch, first)), [0.0]
        for doc in range(first, stop):
            if corpus.rank[doc] < 0:
                continue
            _pair_instances(corpus, doc, rng, found, debt, max_num_tokens=max_seq_length - 3,
                            short_seq_prob=short_seq_prob, random_next_prob=random_next_prob)
    return _instance_table(corpus.tokens, found, cls_id, sep_id, id_type)


def _packed_blocks(blocks: dict, *, tokenized: Dataset, seed: int, epoch: int, cls_id: int, sep_id: int,
                   max_seq_length: int, id_type: str, **_) -> pa.Table:
    """``datasets.map`` function of ``nsp=False``: FULL-SENTENCES rows (module docstring); one segment, so no
    ``token_type_ids`` are stored (the collator's default is all zeros)."""
    corpus = flat_corpus(tokenized)
    body = max_seq_length - 2  # tokens between [CLS] and [SEP]
    rows: list[np.ndarray] = []
    for first, stop in zip(blocks["start"], blocks["stop"]):
        stream = _block_stream(corpus, first, stop, sep_id)  # (T,)
        if not len(stream):
            continue
        shift = random.Random(_block_seed(seed, epoch, first)).randint(0, body - 1) if len(stream) > body else 0
        cuts = [0, *range(shift or body, len(stream), body), len(stream)]
        rows += [stream[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    lengths = np.array([len(r) + 2 for r in rows], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    special = np.array([cls_id], np.int32), np.array([sep_id], np.int32)
    ids = np.concatenate([x for r in rows for x in (special[0], r, special[1])]) if rows else np.zeros(0, np.int32)
    return pa.table({"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids.astype(id_type)))})


def _block_stream(corpus: TokenCorpus, first: int, stop: int, sep_id: int) -> np.ndarray:
    """The tokens of documents ``first..stop-1`` in order, ``[SEP]`` between two documents (empty ones skipped)."""
    pieces: list[np.ndarray] = []
    for doc in range(first, stop):
        if corpus.rank[doc] < 0:
            continue
        lo_s, hi_s = int(corpus.doc_first[doc]), int(corpus.doc_first[doc + 1]) - 1  # first and last sentence
        if pieces:
            pieces.append(np.array([sep_id], np.int32))
        pieces.append(corpus.tokens[corpus.start[lo_s]:corpus.start[hi_s] + corpus.length[hi_s]].astype(np.int32))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


# public names of the packing pieces hfssl.text.clm reuses for causal-LM rows (eos between documents)
block_stream = _block_stream
block_seed = _block_seed


def _features(nsp: bool, id_type: str) -> Features:
    features = {"input_ids": List(Value(id_type))}
    if nsp:
        features["token_type_ids"] = List(Value("bool"))  # bit-packed: 1/8 of int8 (0.2x the corpus per epoch)
        features["next_sentence_label"] = Value("int64")
    return Features(features)


def _largest_id(corpus: TokenCorpus) -> int:
    """An upper bound of the corpus's token ids that decides the instances' id type: the cached type's own range
    when it is uint16 (reading every id of a GB corpus would pull the whole token file into memory), else the
    largest id."""
    if corpus.tokens.dtype == np.uint16:
        return 2**16 - 1
    return corpus.tokens.max() if len(corpus.tokens) else 0


def build_instances(tokenized: Dataset, *, cls_id: int, sep_id: int, max_seq_length: int = 128,
                    short_seq_prob: float = 0.1, nsp: bool = True, random_next_prob: float = 0.5,
                    seed: int = 0, epoch: int = 0, num_proc: int | None = None, name: str = "corpus",
                    keep_earlier_epochs: bool = True) -> Dataset:
    """Instances of one epoch: ``input_ids`` (unpadded; uint16 when every id fits), and with ``nsp=True``
    ``token_type_ids`` (bool, read as 0 / 1) and ``next_sentence_label``. Deterministic for ``(seed, epoch)`` whatever
    ``num_proc``; cached beside the tokenized corpus when it lives in files (a second call reads the cache).
    ``name`` says in errors which documents these are ("training split", "held-out split"); not part of the result.
    ``keep_earlier_epochs=False`` deletes the cached rows of epochs ``1..epoch-1`` of the same corpus and settings
    (derived data: a resume rebuilds what it needs), so a long run's cache does not grow by ~0.5x the corpus per
    epoch; epoch 0, which every run and resume opens first, stays. Files a process still reads stay readable
    (Linux keeps an open, mapped file until it is closed)."""
    NSPArgs(max_seq_length, short_seq_prob, nsp, random_next_prob)  # validates
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed={seed} and epoch={epoch} must be >= 0")
    corpus = flat_corpus(tokenized)  # validates 'tokens' here, in the main process
    if not len(corpus.docs):
        raise UserError(f"no tokens in any of the {len(tokenized)} documents of the {name}: nothing to build "
                        "instances from; check --corpus (and --text_field)")
    if nsp and len(corpus.docs) < 2:
        raise UserError(f"NSP needs at least 2 non-empty documents (a random next sentence comes from another "
                        f"document), but the {name} has {len(corpus.docs)}; give more documents (more files, or "
                        "--document_separator to cut them), change --eval_fraction (0: no held-out split) so each "
                        "split gets 2, or pass --nsp false")
    n = len(tokenized)
    starts = list(range(0, n, BLOCK_DOCS))
    blocks = Dataset.from_dict({"start": starts, "stop": [min(s + BLOCK_DOCS, n) for s in starts]})
    kwargs = dict(nsp=nsp, seed=seed, epoch=epoch, cls_id=cls_id, sep_id=sep_id, max_seq_length=max_seq_length,
                  short_seq_prob=short_seq_prob, random_next_prob=random_next_prob,
                  id_type=id_dtype(max([_largest_id(corpus), cls_id, sep_id])))

    def fingerprint_of(epoch: int) -> str:
        return Hasher.hash([CACHE_VERSION, "full-sentences" if not nsp else "pairs", BLOCK_DOCS, tokenized._fingerprint,
                            sorted({**kwargs, "epoch": epoch}.items())])

    fingerprint, cache_file = fingerprint_of(epoch), None
    if tokenized.cache_files:
        folder = os.path.dirname(tokenized.cache_files[0]["filename"])
        cache_file = os.path.join(folder, f"nsp-instances-{fingerprint}.arrow")
        if not keep_earlier_epochs:  # each epoch's rows are ~0.5x the corpus of disk: keep epoch 0 and this one
            stale = {f"nsp-instances-{fingerprint_of(e)}" for e in range(1, epoch)}
            for name in os.listdir(folder):
                if name.endswith(".arrow") and name.split("_", 1)[0].removesuffix(".arrow") in stale:
                    with contextlib.suppress(FileNotFoundError):  # another process of the run removed it first
                        os.remove(os.path.join(folder, name))
    num_proc = min(resolve_num_proc(num_proc, len(corpus.tokens), 16e6), len(blocks))
    return blocks.map(
        _build_blocks if nsp else _packed_blocks, batched=True, batch_size=1,
        fn_kwargs={"tokenized": tokenized, **kwargs},
        remove_columns=["start", "stop"], features=_features(nsp, kwargs["id_type"]), num_proc=num_proc if num_proc > 1 else None,
        new_fingerprint=fingerprint, cache_file_name=cache_file, desc=f"NSP instances (epoch {epoch})",
    )


def instance_stats(instances: Dataset, max_seq_length: int) -> dict:
    """Instances, fraction with a random B (``None`` without NSP labels), mean tokens per instance
    ([CLS]/[SEP] included), longest instance, and the padding fraction when padded to ``max_seq_length``."""
    table = instances.with_format("arrow")[:]
    n = table.num_rows
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
    labels = table.column("next_sentence_label") if "next_sentence_label" in table.column_names else None
    return {
        "instances": n,
        "random_next_fraction": float(pc.mean(labels).as_py()) if labels is not None and n else None,
        "mean_tokens": float(lengths.mean()) if n else 0.0,
        "max_tokens": int(lengths.max()) if n else 0,
        "padding_fraction": float(1.0 - lengths.sum() / (n * max_seq_length)) if n else 0.0,
    }


def format_stats(stats: dict) -> str:
    """One line for logs: ``instances=8,812 random_next=0.500 mean_tokens=119.9 padding=6.3%``."""
    random_next = stats.get("random_next_fraction")
    return (f"instances={stats['instances']:,} random_next={'-' if random_next is None else f'{random_next:.3f}'} "
            f"mean_tokens={stats['mean_tokens']:.1f} padding={100 * stats['padding_fraction']:.1f}%")
