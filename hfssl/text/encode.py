"""Sentence tokenization for the pair builder: each document's sentences -> token ids, fast and cached.

``tokenize_documents`` gives a ``tokens`` column (per document, each sentence's ids without special
tokens) with a batched, cached ``datasets.map`` over Arrow batches; ``TokenCorpus`` is the flat view of
that column the pair builder samples from (sentence offsets into one token array).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value
from datasets.fingerprint import Hasher

CACHE_VERSION = "hfssl-nsp-4"  # 2: the tokenized cache holds tokens only; 3: uint16 ids when they fit; 4: bool types


def id_dtype(largest_id: int) -> str:
    """The type cached token ids are stored as: ``uint16`` when every id fits (vocabularies up to 65,536, BERT's
    30,522 included: half the cache and memory of int32), else ``int32``."""
    return "uint16" if largest_id < 2**16 else "int32"


def resolve_num_proc(num_proc: int | None, work: float = float("inf"), work_per_proc: float = 1.0) -> int:
    """An explicit ``num_proc`` as given; ``None``: ``min(2, os.cpu_count())``, but no more than one
    process per ``work_per_proc`` of ``work`` (a worker costs ~1 s to start: small corpora run inline)."""
    if num_proc is not None:
        return max(1, int(num_proc))
    return max(1, min(2, os.cpu_count() or 1, int(work // work_per_proc)))


# ---------------------------------------------------------------------------------------- tokenize
_SAFE_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFD", "NFKD", "NFC", "NFKC", "StripAccents", "Strip"}
_SPACE_DROPPING = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_SAFE_PRE_TOKENIZERS = _SPACE_DROPPING | {"Punctuation", "Digits"}


def _components(node: dict | None, key: str) -> list[str]:
    """Types of a normalizer / pre-tokenizer JSON node, ``Sequence`` flattened."""
    if node is None:
        return []
    if node["type"] == "Sequence":
        return [t for child in node[key] for t in _components(child, key)]
    return [node["type"]]


class _Encoder:
    """Picklable ``arrow strings -> (tokens per text, flat ids)``, no special tokens, no truncation.

    Fast path (BERT-style pipelines): when the normalizer works per character and the pre-tokenizer
    drops spaces, a text's ids are the concatenation of the ids of its space-separated words, so each
    map batch encodes its *distinct* words once (Austen: 10x fewer characters through the Rust
    pipeline, ~6x less CPU) and the rest is a numpy gather. Otherwise whole texts are encoded. Tests
    check both paths against the tokenizer's own call."""

    def __init__(self, tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer: its own batch call
            self.backend, self.by_word, self.fingerprint = tokenizer, False, Hasher.hash(tokenizer)
            return
        text = backend.to_str()
        config = json.loads(text)
        self.backend = type(backend).from_str(text)  # a copy: the caller's settings stay
        self.backend.no_truncation()
        self.backend.no_padding()
        self.by_word = (set(_components(config["normalizer"], "normalizers")) <= _SAFE_NORMALIZERS
                        and bool(set(_components(config["pre_tokenizer"], "pretokenizers")) & _SPACE_DROPPING)
                        and set(_components(config["pre_tokenizer"], "pretokenizers")) <= _SAFE_PRE_TOKENIZERS
                        and not any(re.search(r"\s", t["content"]) for t in config["added_tokens"]))
        self.fingerprint = Hasher.hash(f"{self.by_word}{text}")  # a string hashes fast, a dict does not

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Whole texts -> (tokens per text, flat ids)."""
        if not hasattr(self.backend, "encode_batch_fast"):
            ids = self.backend(texts, add_special_tokens=False)["input_ids"] if texts else []
        else:
            ids = [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        return lengths, np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum()))

    def _encode_words(self, words: list[str], per_call: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Distinct words -> (tokens per word, flat ids): ``per_call`` words joined by spaces per text
        (a call per word costs ~10 us), each token assigned to its word by its character offset."""
        texts = [" ".join(words[i:i + per_call]) for i in range(0, len(words), per_call)]
        counts, ids = [], []
        for k, enc in enumerate(self.backend.encode_batch(texts, add_special_tokens=False)):
            chunk = words[k * per_call:(k + 1) * per_call]
            word_start = np.cumsum([len(w) + 1 for w in chunk]) - [len(w) + 1 for w in chunk]  # (w,)
            token_start = np.asarray(enc.offsets, np.int64).reshape(-1, 2)[:, 0]  # (t,)
            word_of_token = np.searchsorted(word_start, token_start, side="right") - 1
            counts.append(np.bincount(word_of_token, minlength=len(chunk)))
            ids.append(np.asarray(enc.ids, np.int32))
        if not texts:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return np.concatenate(counts), np.concatenate(ids)

    def __call__(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Arrow strings -> (tokens per text, flat int32 ids)."""
        if not self.by_word:
            return self._encode([s or "" for s in texts.to_pylist()])
        words = pc.split_pattern(texts.fill_null(""), " ")  # list<string>: the words of each text
        per_text = pc.list_value_length(words).to_numpy(zero_copy_only=False)  # (S,)
        encoded = pc.dictionary_encode(words.flatten())
        word_ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)  # (W,) distinct-word index
        lengths, ids = self._encode_words(encoded.dictionary.to_pylist())  # (U,), (sum of lengths,)
        n = lengths[word_ids]  # (W,) tokens of every word
        gather = np.repeat((np.cumsum(lengths) - lengths)[word_ids] - (np.cumsum(n) - n), n) + np.arange(n.sum())
        tokens_before = np.concatenate([[0], np.cumsum(n)])  # (W + 1,)
        word_end = np.cumsum(per_text)
        return tokens_before[word_end] - tokens_before[word_end - per_text], ids[gather]


def _tokenize_batch(batch: pa.Table, *, encoder: _Encoder, id_type: str = "int32") -> pa.Table:
    """Arrow batch of documents -> ``tokens`` alone (one id list per sentence): the sentences' text is not copied
    into this cache again (it was 1x the corpus of cache for nothing)."""
    sentences = batch.column("sentences").combine_chunks()  # list<string> per document
    per_doc = pc.list_value_length(sentences).fill_null(0).to_numpy(zero_copy_only=False)
    lengths, ids = encoder(sentences.flatten())
    sentence_offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    doc_offsets = pa.array(np.concatenate([[0], np.cumsum(per_doc)]).astype(np.int32))
    tokens = pa.ListArray.from_arrays(doc_offsets, pa.ListArray.from_arrays(sentence_offsets, pa.array(ids.astype(id_type))))
    return pa.table({"tokens": tokens})


def tokenize_documents(documents: Dataset, tokenizer, *, num_proc: int | None = None) -> Dataset:
    """Documents -> a dataset of ``tokens`` only: per document, each sentence's ids *without* special tokens
    (batched, cached; the other columns are dropped)."""
    if "sentences" not in documents.column_names:
        raise ValueError(f"documents need a 'sentences' column (list of str per document); got columns "
                         f"{documents.column_names}. Build them with hfssl.text.corpus.load_documents")
    encoder = _Encoder(tokenizer)
    ids = id_dtype(len(tokenizer) - 1)
    features = Features({"tokens": List(List(Value(ids)))})
    num_proc = min(resolve_num_proc(num_proc, documents.data.nbytes, 16e6), len(documents))
    out = documents.with_format("arrow").map(
        _tokenize_batch, batched=True, batch_size=1000, fn_kwargs={"encoder": encoder, "id_type": ids}, features=features,
        num_proc=num_proc if num_proc > 1 else None, desc="Tokenizing sentences", remove_columns=documents.column_names,
        new_fingerprint=Hasher.hash([CACHE_VERSION, "tokens", documents._fingerprint, encoder.fingerprint, ids]),
    )
    return out.with_format(None)


# ------------------------------------------------------------------------------- flat corpus view
class ChunkedTokens:
    """One token array made of the Arrow column's chunks without copying them: each chunk stays a view of the
    memory-mapped cache file (a copy into one array cost ~0.45x the corpus of memory in every process that
    builds instances). Supports what the instance builders use: ``len``, ``max()``, a ``[lo:hi]`` slice and a
    gather ``[int array]``, with positions counted over the whole corpus."""

    def __init__(self, chunks: list[np.ndarray]):
        self.chunks = [c for c in chunks if len(c)] or [np.zeros(0, np.uint16)]
        self.bounds = np.concatenate([[0], np.cumsum([len(c) for c in self.chunks])])  # (chunks + 1,)
        self.dtype = self.chunks[0].dtype

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def max(self) -> int:
        return max(int(c.max()) for c in self.chunks if len(c))

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                raise ValueError("ChunkedTokens slices have step 1")
            first = int(np.searchsorted(self.bounds, lo, side="right")) - 1
            if hi <= lo:
                return self.chunks[0][:0]
            if hi <= self.bounds[first + 1]:  # inside one chunk: a view
                return self.chunks[first][lo - self.bounds[first]:hi - self.bounds[first]]
            last = int(np.searchsorted(self.bounds, hi, side="left")) - 1
            return np.concatenate([self.chunks[k][max(lo, self.bounds[k]) - self.bounds[k]:
                                                  min(hi, self.bounds[k + 1]) - self.bounds[k]]
                                   for k in range(first, last + 1)])
        index = np.asarray(index)
        flat = index.ravel()
        which = np.searchsorted(self.bounds, flat, side="right") - 1
        order = np.argsort(which, kind="stable")  # positions grouped by chunk: one pass, not one mask per chunk
        counts = np.bincount(which, minlength=len(self.chunks))
        out = np.empty(len(flat), self.dtype)
        ends = np.cumsum(counts)
        for k in np.flatnonzero(counts):
            sel = order[ends[k] - counts[k]:ends[k]]
            out[sel] = self.chunks[k][flat[sel] - self.bounds[k]]
        return out.reshape(index.shape)


class TokenCorpus:
    """The tokenized corpus flat: non-empty sentence ``i`` is ``tokens[start[i]:start[i] + length[i]]``,
    document ``d`` owns sentences ``doc_first[d]:doc_first[d + 1]``; empty ones are dropped, as Google."""

    def __init__(self, tokenized: Dataset):
        if "tokens" not in tokenized.column_names:
            raise ValueError("build_instances needs a 'tokens' column: run tokenize_documents first")
        column = tokenized.with_format("arrow")[:].column("tokens")  # doc order, chunked like the cache file
        per_doc = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        sentences = [chunk.flatten() for chunk in column.chunks]
        length = np.concatenate([pc.list_value_length(c).fill_null(0).to_numpy(zero_copy_only=False)
                                 for c in sentences] or [np.zeros(0, np.int32)]).astype(np.int64)
        # (N,) uint16 (or int32: big vocabularies), views of the mapped file
        self.tokens = ChunkedTokens([c.flatten().to_numpy(zero_copy_only=False) for c in sentences])
        keep = length > 0
        self.start = (np.cumsum(length) - length)[keep]
        self.length = length[keep]
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        self.doc_first = kept_before[np.concatenate([[0], np.cumsum(per_doc)])]  # (D + 1,)
        self.docs = np.flatnonzero(np.diff(self.doc_first) > 0)  # non-empty documents
        self.rank = np.full(len(per_doc), -1)
        self.rank[self.docs] = np.arange(len(self.docs))
        self.empty_sentences = int((~keep).sum())

    def sentences(self, doc: int) -> tuple[list[int], list[int]]:
        """Token offsets and lengths of the document's sentences, as Python lists."""
        lo, hi = self.doc_first[doc], self.doc_first[doc + 1]
        return self.start[lo:hi].tolist(), self.length[lo:hi].tolist()

    def random_segment(self, rng: random.Random, rank: int, target: int) -> tuple[int, int]:
        """Google's random B: another document, a random start sentence, sentences until ``target``."""
        n = len(self.docs)
        for _ in range(10):
            other = rng.randint(0, n - 1)
            if other != rank:
                break
        if other == rank:  # Google would take the same document here (probability n ** -10)
            other = (other + 1) % n
        doc = int(self.docs[other])
        first, last = int(self.doc_first[doc]), int(self.doc_first[doc + 1])
        j = first + rng.randint(0, last - first - 1)
        lo = hi = int(self.start[j])
        for k in range(j, last):
            hi += int(self.length[k])
            if hi - lo >= target:
                break
        return lo, hi


_CORPORA: dict[str, TokenCorpus] = {}  # one per process, reused by every batch of a build


def flat_corpus(tokenized: Dataset) -> TokenCorpus:
    if tokenized._fingerprint not in _CORPORA:
        _CORPORA.clear()
        _CORPORA[tokenized._fingerprint] = TokenCorpus(tokenized)
    return _CORPORA[tokenized._fingerprint]
