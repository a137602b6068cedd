"""A GPT-2-style byte-level BPE tokenizer for causal language modelling, trained with ``tokenizers``.

GPT-2's scheme: the ByteLevel pre-tokenizer (every byte is one of 256 base symbols, so any text, any script,
any byte sequence is representable and there is no unknown token), BPE merges, the ByteLevel decoder
(``decode(encode(x)) == x``), and one special token ``<|endoftext|>`` used as bos, eos and pad. It is saved as
a ``PreTrainedTokenizerFast`` (``AutoTokenizer`` loads it) whose ``model_max_length`` is the model's position
count, so that transformers' ``run_clm.py`` chunks text to the right block size.

Like the WordPiece of :mod:`hfssl.text.tokenizer`, a vocabulary trained on a cached corpus is kept beside the
corpus's ``datasets`` cache files (``hfssl-bpe-<key>``, keyed by the documents' fingerprint and the vocabulary
settings) and reused by the next run, process or resume on the same documents.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hfssl.errors import UserError
from hfssl.hub import publish_folder
from hfssl.text.tokenizer import corpus_cache_folder, load_tokenizer, training_sample

END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token: document separator, bos, eos (and pad for batches)
_CACHE_VERSION = 1  # of how corpus_bpe_tokenizer trains: a change here must not reuse vocabularies cached before it


@dataclass
class BPEArgs:
    """Reuse a tokenizer folder, or train a byte-level BPE vocabulary on the corpus."""

    tokenizer_name_or_path: str | None = field(default=None, metadata={
        "help": "Folder of a saved tokenizer to reuse (it needs an end-of-text / eos token); default: train a "
                "byte-level BPE on the corpus."})
    vocab_size: int = field(default=8192, metadata={"help": "BPE vocabulary size: 256 bytes + merges + "
                                                            "<|endoftext|>."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum count for a merge to enter the vocabulary."})
    tokenizer_train_mb: float | None = field(default=None, metadata={
        "help": "Train the vocabulary on at most this many MB of the training text, whole documents spread evenly "
                "across the corpus (0: all of it). Default: a tenth of the text, 16-1,000 MB (all of a smaller "
                "corpus), as for the WordPiece of recipes/bert_mlm.py."})

    def __post_init__(self):
        if self.vocab_size <= 257:
            raise ValueError(f"--vocab_size must be above the 256 bytes + {END_OF_TEXT}, got {self.vocab_size}; "
                             "e.g. 8192")
        if self.min_frequency < 1:
            raise ValueError(f"--min_frequency must be at least 1, got {self.min_frequency}")
        if self.tokenizer_train_mb is not None and self.tokenizer_train_mb < 0:
            raise ValueError(f"--tokenizer_train_mb must be 0 (all the text) or positive, got {self.tokenizer_train_mb}")
        if self.tokenizer_name_or_path is not None and not self.tokenizer_name_or_path.strip():
            raise ValueError("--tokenizer_name_or_path is an empty string; give a tokenizer folder or leave it unset")


def document_texts(documents: datasets.Dataset, batch_size: int = 1000) -> Iterator[str]:
    """Each document's text: its sentences joined by single spaces (the corpus reader keeps sentences, not the
    original line breaks). The same text :func:`hfssl.text.clm.join_documents` tokenizes."""
    for table in documents.with_format("arrow").iter(batch_size=batch_size):
        yield from (t for t in pc.binary_join(table["sentences"], " ").to_pylist() if t)


def byte_level_bpe_pipeline() -> Tokenizer:
    """An untrained GPT-2 pipeline: ByteLevel pre-tokenizer (no prefix space), BPE, ByteLevel decoder."""
    tokenizer = Tokenizer(BPE())  # no unk_token: every byte is in the base alphabet
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def wrap_bpe_tokenizer(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """A trained byte-level ``tokenizers.Tokenizer`` -> ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as
    bos, eos and pad (GPT-2 users' habit: padded batches for sequence classification, generation)."""
    if tokenizer.token_to_id(END_OF_TEXT) is None:
        raise ValueError(f"the BPE vocabulary has no {END_OF_TEXT} token")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, model_max_length=model_max_length, padding_side="right",
                                   clean_up_tokenization_spaces=False)


def train_bpe(texts, *, vocab_size: int = 8192, min_frequency: int = 2, model_max_length: int = 1024,
              batch_size: int = 1000, show_progress: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on documents (a Dataset with a ``sentences`` column) or an iterable of strings."""
    BPEArgs(vocab_size=vocab_size, min_frequency=min_frequency)  # validates
    if isinstance(texts, datasets.Dataset):
        total, texts = len(texts), document_texts(texts, batch_size)
    else:
        total = len(texts) if hasattr(texts, "__len__") else None
    tokenizer = byte_level_bpe_pipeline()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=total)
    if tokenizer.get_vocab_size() <= 257:
        raise UserError("the tokenizer learned no merges: the training text is empty, --corpus; check the files")
    return wrap_bpe_tokenizer(tokenizer, model_max_length)


def publish_bpe_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """``save_pretrained`` into a temporary sibling, swapped into place when complete (never half-written)."""
    target = Path(folder).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tokenizer.save_pretrained(tmp)
        publish_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def corpus_bpe_tokenizer(args: BPEArgs, documents: datasets.Dataset, model_max_length: int,
                         log=print) -> PreTrainedTokenizerBase:
    """A byte-level BPE for ``documents`` (the training split), trained on :func:`sample_megabytes` of it and
    cached beside the documents' cache files as :func:`hfssl.text.tokenizer.corpus_tokenizer` caches WordPiece."""
    settings = {k: getattr(args, k) for k in ("vocab_size", "min_frequency", "tokenizer_train_mb")}
    folder = corpus_cache_folder(documents, "hfssl-bpe", settings, "bpe", _CACHE_VERSION)
    if folder is not None and (folder / "tokenizer.json").is_file():
        log(f"tokenizer: the byte-level BPE trained on this corpus before, from {folder}")
        return load_tokenizer(folder, model_max_length)
    sample = training_sample(documents, args.tokenizer_train_mb, log)
    tokenizer = train_bpe(sample, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                          model_max_length=model_max_length)
    if folder is not None:
        try:
            publish_bpe_tokenizer(tokenizer, folder)
        except OSError as err:  # a read-only cache only costs the next run the training time
            log(f"note: could not cache the tokenizer in {folder} ({err})")
    return tokenizer


def get_or_train_bpe(args: BPEArgs, documents: datasets.Dataset | None, model_max_length: int, *,
                     reuse: str | Path | None = None, log=print) -> PreTrainedTokenizerBase:
    """``args.tokenizer_name_or_path`` or else ``reuse`` (the run's saved tokenizer, a model folder's) when given,
    else :func:`corpus_bpe_tokenizer`. A reused tokenizer must have an eos (end-of-text) token; one without a
    pad token gets pad = eos; its ``model_max_length`` becomes ``model_max_length``."""
    path = args.tokenizer_name_or_path or reuse
    if not path:
        if documents is None:
            raise ValueError("no tokenizer path and no documents to train one on")
        return corpus_bpe_tokenizer(args, documents, model_max_length, log)
    tokenizer = load_tokenizer(path, model_max_length)
    if tokenizer.eos_token_id is None:
        flag = "--tokenizer_name_or_path" if args.tokenizer_name_or_path else "--model_name_or_path"
        raise UserError(f"the tokenizer in {path} has no end-of-text (eos) token to put between documents, {flag}; "
                        f"use a tokenizer with an eos token (e.g. GPT-2's {END_OF_TEXT}) or leave it unset to train one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def token_byte_lengths(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """``(V,)`` UTF-8 bytes of text each token id stands for: what bits per byte divides by. Exact for a byte-level
    tokenizer (a token's string has one character per byte); otherwise the bytes of the token decoded alone.
    Special and added tokens (``<|endoftext|>``) cover no text: 0."""
    vocab = tokenizer.get_vocab()
    out = np.zeros(max(len(tokenizer), max(vocab.values()) + 1), np.int64)
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and "ByteLevel" in json.dumps(json.loads(backend.to_str())["pre_tokenizer"])
    for token, i in vocab.items():
        if i in special:
            continue
        out[i] = len(token) if byte_level else len(tokenizer.decode([i]).encode("utf-8"))
    return out
