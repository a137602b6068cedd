"""Train a BERT WordPiece tokenizer with ``tokenizers`` and wrap it as a ``transformers`` tokenizer.

The trained pipeline is the original BERT one: BertNormalizer, BertPreTokenizer, WordPiece with
``##`` continuation pieces, ``[CLS] A [SEP] B [SEP]`` with token types 0/1, special tokens
``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0..4. The saved folder loads with ``AutoTokenizer`` as a
``BertTokenizer`` and carries a ``vocab.txt`` that Google's BERT code reads too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

from hfssl.errors import UserError, one_line
from hfssl.files import check_model_folder
from hfssl.hub import publish_folder

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
_CACHE_VERSION = 1  # of how corpus_tokenizer trains: a change here must not reuse vocabularies cached before it


@dataclass
class TokenizerArgs:
    """Reuse a tokenizer folder, or train a WordPiece vocabulary on the corpus."""

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Folder of a saved tokenizer to reuse; default: train one on the corpus."})
    vocab_size: int = field(default=8192, metadata={"help": "WordPiece vocabulary size, special tokens included."})
    lowercase: bool = field(default=True, metadata={"help": "Lowercase and strip accents (BERT uncased); "
                                                            "--no_lowercase for a cased vocabulary."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum count for a merge to enter the vocabulary."})
    tokenizer_train_mb: float | None = field(default=None, metadata={
        "help": "Train the vocabulary on at most this many MB of the training text, whole documents spread evenly "
                "across the corpus (0: all of it). Default: a tenth of the text, at least 16 MB (all of a smaller "
                "corpus) and at most 1,000 MB, so that the vocabulary costs about a fifth of the preparation; "
                "docs/results.md measures what larger samples change."})
    model_max_length: int | None = field(default=None, metadata={
        "help": "Maximum sequence length stored with the tokenizer (default: the model's position count for "
                "recipes/bert_mlm.py, 512 for recipes/train_tokenizer.py)."})

    def __post_init__(self):
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"--vocab_size must be above the {len(SPECIAL_TOKENS)} special tokens "
                             f"({' '.join(SPECIAL_TOKENS)}), got {self.vocab_size}; e.g. 8192")
        if self.tokenizer_train_mb is not None and self.tokenizer_train_mb < 0:
            raise ValueError(f"--tokenizer_train_mb must be 0 (all the text) or positive, got {self.tokenizer_train_mb}")
        if self.min_frequency < 1:
            raise ValueError(f"--min_frequency must be at least 1, got {self.min_frequency}")
        if self.model_max_length is not None and self.model_max_length < 2:
            raise ValueError(f"--model_max_length must be at least 2 ([CLS] and [SEP]), got {self.model_max_length}")
        if self.tokenizer_name_or_path is not None and not self.tokenizer_name_or_path.strip():
            raise ValueError("--tokenizer_name_or_path is an empty string; give a tokenizer folder or leave it unset")


# --tokenizer_train_mb unset: this fraction of the training text, within these bounds (MB)
AUTO_SAMPLE_FRACTION, AUTO_SAMPLE_MIN_MB, AUTO_SAMPLE_MAX_MB = 0.1, 16.0, 1000.0


def sample_megabytes(train_mb: float | None, total: float) -> float:
    """How many MB of a ``total``-MB training text the vocabulary is trained on: ``--tokenizer_train_mb`` (0: all),
    or unset, a tenth of it between 16 and 1,000 MB (never more than there is)."""
    if train_mb is None:
        train_mb = min(max(AUTO_SAMPLE_FRACTION * total, AUTO_SAMPLE_MIN_MB), AUTO_SAMPLE_MAX_MB)
    return total if train_mb == 0 else min(train_mb, total)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _dataset_texts(dataset: datasets.Dataset, batch_size: int) -> tuple[Iterator[str], int | None]:
    """Sentences (or ``text`` rows) of a Dataset straight from Arrow, and how many there are."""
    column = "sentences" if "sentences" in dataset.column_names else "text"
    if column not in dataset.column_names:
        raise ValueError(f"dataset has no 'sentences' or 'text' column (columns: {dataset.column_names})")
    nested = column == "sentences"

    def texts() -> Iterator[str]:
        for table in dataset.with_format("arrow").iter(batch_size=batch_size):
            values = pc.list_flatten(table[column]) if nested else table[column]
            yield from (t for t in values.to_pylist() if t)

    total = None
    if dataset._indices is None:  # cheap count only on a plain (unselected) table
        col = dataset.data.table.column(column)
        total = int(pc.sum(pc.list_value_length(col)).as_py() or 0) if nested else len(dataset)
    return texts(), total


def bert_wordpiece_pipeline(lowercase: bool = True) -> Tokenizer:
    """An untrained ``tokenizers`` pipeline that matches Google's BERT tokenization."""
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def wrap_bert_tokenizer(tokenizer: Tokenizer, lowercase: bool, model_max_length: int) -> BertTokenizer:
    """A trained ``tokenizers.Tokenizer`` -> ``transformers.BertTokenizer`` with [CLS]/[SEP] templates."""
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"special tokens {SPECIAL_TOKENS} must have ids 0..4, got {ids}")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids[2]), ("[SEP]", ids[3])])
    return BertTokenizer(
        tokenizer_object=tokenizer, do_lower_case=lowercase, strip_accents=lowercase,
        model_max_length=model_max_length, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]")


def train_wordpiece(texts: Iterable[str] | datasets.Dataset, *, vocab_size: int = 8192, lowercase: bool = True,
                    min_frequency: int = 2, model_max_length: int = 128, batch_size: int = 1000,
                    show_progress: bool = True) -> PreTrainedTokenizerBase:
    """Train a WordPiece vocabulary on sentences (a Dataset with a ``sentences`` column, or strings)."""
    TokenizerArgs(vocab_size=vocab_size, min_frequency=min_frequency, model_max_length=model_max_length)  # validates
    if isinstance(texts, datasets.Dataset):
        stream, total = _dataset_texts(texts, batch_size)
    else:
        stream, total = iter(texts), (len(texts) if hasattr(texts, "__len__") else None)
    tokenizer = bert_wordpiece_pipeline(lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", limit_alphabet=1000, show_progress=show_progress)
    tokenizer.train_from_iterator(_chunks(stream, batch_size), trainer=trainer, length=total)
    if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise UserError("the tokenizer learned no vocabulary: the training text is empty; check --corpus")
    return wrap_bert_tokenizer(tokenizer, lowercase, model_max_length)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """``save_pretrained`` plus a ``vocab.txt`` (one token per line, in id order), into ``folder`` (which may
    hold a model already). A ``vocab.txt`` left there by another tokenizer is replaced, never kept."""
    from hfssl.hub import write_vocab_txt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    (folder / "vocab.txt").unlink(missing_ok=True)  # write_vocab_txt keeps an existing one
    write_vocab_txt(tokenizer, folder)
    if not (folder / "vocab.txt").is_file():
        raise ValueError(f"could not write {folder / 'vocab.txt'}: not a WordPiece tokenizer with consecutive ids")
    return folder


def publish_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path, *, overwrite: bool = False) -> Path:
    """:func:`save_tokenizer` into a fresh folder that holds the new tokenizer and nothing else.

    Everything is written to ``.{name}.tmp-XXXX`` beside ``folder`` and swapped into place only when
    complete (the way :func:`hfssl.hub.save_model_folder` publishes a model): an interrupted run leaves the
    old folder as it was, and an overwritten folder keeps no file of the old tokenizer (a stale
    ``vocab.txt`` would disagree with ``tokenizer.json``). A non-empty ``folder`` is replaced only with
    ``overwrite=True``."""
    target = Path(folder).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"cannot save the tokenizer to {target}: it exists and is not a folder; "
                                 "choose another output folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} already exists and is not empty; pass overwrite=True to replace it, "
                              "or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        save_tokenizer(tokenizer, tmp)
        publish_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_tokenizer(folder: str | Path, model_max_length: int | None = None) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` on a local folder, with a clear error when it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder}; check --tokenizer_name_or_path")
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        raise UserError(f"{folder} holds no tokenizer (no tokenizer.json, tokenizer_config.json or vocab.txt), "
                        "--tokenizer_name_or_path; train one with recipes/train_tokenizer.py")
    check_model_folder(folder, "tokenizer folder", weights=False)  # empty, cut, not JSON, not UTF-8: named
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    except Exception as err:
        if type(err) is not Exception and not isinstance(err, (OSError, ValueError)):
            raise  # a bug, not the folder (the tokenizers library raises a bare Exception for a bad file)
        raise UserError(f"tokenizer folder {folder} cannot be loaded ({type(err).__name__}: {one_line(err)[:200]}); "
                        "re-create it (recipes/train_tokenizer.py) or copy it again") from err
    if tokenizer.model_max_length > 1_000_000:
        raise UserError(f"{folder}: model_max_length is unset ({tokenizer.model_max_length}); "
                        "pass model_max_length")
    return tokenizer


def text_megabytes(documents: datasets.Dataset, probe: int = 2000) -> float:
    """About how many MB of UTF-8 text the documents' sentences hold (measured on up to ``probe`` documents spread
    over the corpus by :func:`spread_sample`, scaled to all)."""
    if len(documents) == 0:
        return 0.0
    picks = spread_sample(documents, min(probe, len(documents)))
    column = "sentences" if "sentences" in documents.column_names else "text"
    values = documents.select(picks).with_format("arrow")[column]
    flat = pc.list_flatten(values) if column == "sentences" else values
    size = int(pc.sum(pc.binary_length(pc.cast(flat, pa.binary()))).as_py() or 0)
    return size / 1e6 * len(documents) / len(picks)


def file_order(documents: datasets.Dataset) -> np.ndarray:
    """Positions of ``documents`` in the order their rows lie in the cache file: a split by ``train_test_split`` is
    shuffled, so consecutive positions of it are scattered over the file; runs taken in this order are not."""
    if documents._indices is None:
        return np.arange(len(documents))
    return np.argsort(documents._indices.column(0).to_numpy(), kind="stable")


def sample_runs(total: int, n: int, runs: int = 200) -> np.ndarray:
    """``n`` of ``total`` document indices spread evenly over the corpus, as up to ``runs`` evenly spaced runs of
    consecutive documents: reading a run touches only its part of the memory-mapped cache file, where single
    documents spread evenly pulled in (by read-ahead) nearly every page of a GB file, all counted in the process's
    memory."""
    length = -(-n // runs)  # ceil
    k = -(-n // length)
    if k * length > total:  # most of the corpus: single documents (the file is read almost whole anyway)
        return np.unique(np.linspace(0, total - 1, n).astype(np.int64))
    starts = np.arange(k, dtype=np.int64) * (total - length) // max(k - 1, 1)  # gaps >= length: no overlap
    return (starts[:, None] + np.arange(length)).ravel()[:n]


def spread_sample(documents: datasets.Dataset, n: int) -> np.ndarray:
    """Positions of ``n`` of ``documents``: :func:`sample_runs` taken in :func:`file_order`, so that reading them
    touches runs of the cache file even when ``documents`` is a shuffled split."""
    return file_order(documents)[sample_runs(len(documents), n)]


def corpus_cache_folder(documents: datasets.Dataset, prefix: str, *key: object) -> Path | None:
    """``<the documents' cache folder>/<prefix>-<digest>``, the digest of their fingerprint and ``key`` (the
    trainer's settings and cache version); None for in-memory documents, which are never cached."""
    if not (documents.cache_files and documents._fingerprint):
        return None
    digest = hashlib.sha256(json.dumps([documents._fingerprint, *key]).encode()).hexdigest()[:16]
    return Path(documents.cache_files[0]["filename"]).parent / f"{prefix}-{digest}"


def training_sample(documents: datasets.Dataset, tokenizer_train_mb: float | None, log=print) -> datasets.Dataset:
    """The documents a vocabulary trains on: :func:`sample_megabytes` of them, whole documents spread over the
    corpus (:func:`spread_sample`), or all of them."""
    total = text_megabytes(documents)
    wanted_mb = sample_megabytes(tokenizer_train_mb, total)
    if wanted_mb >= total:
        return documents
    picks = spread_sample(documents, max(1, int(len(documents) * wanted_mb / total)))
    how = "" if tokenizer_train_mb is not None else "a tenth, 16-1,000 MB by default; "
    log(f"tokenizer: training on {len(picks):,} of {len(documents):,} documents (about {wanted_mb:,.1f} of "
        f"{total:,.1f} MB, {how}--tokenizer_train_mb)")
    return documents.select(picks)


def corpus_tokenizer(args: TokenizerArgs, documents: datasets.Dataset, model_max_length: int,
                     log=print) -> PreTrainedTokenizerBase:
    """A WordPiece tokenizer for ``documents`` (the training split): trained on :func:`sample_megabytes` of it
    (whole documents, :func:`spread_sample`), and kept beside the documents' ``datasets`` cache files, keyed by
    their fingerprint and the vocabulary settings, so that preparing the same corpus again (another run, another
    process, a resume) loads it instead of training it again. In-memory documents are never cached."""
    settings = {k: getattr(args, k) for k in ("vocab_size", "lowercase", "min_frequency", "tokenizer_train_mb")}
    folder = corpus_cache_folder(documents, "hfssl-wordpiece", settings, _CACHE_VERSION)
    if folder is not None and (folder / "tokenizer.json").is_file():
        log(f"tokenizer: the vocabulary trained on this corpus before, from {folder}")
        return load_tokenizer(folder, model_max_length)
    sample = training_sample(documents, args.tokenizer_train_mb, log)
    tokenizer = train_wordpiece(sample, vocab_size=args.vocab_size, lowercase=args.lowercase,
                                min_frequency=args.min_frequency, model_max_length=model_max_length)
    if folder is not None:
        try:
            publish_tokenizer(tokenizer, folder, overwrite=True)
        except OSError as err:  # a read-only cache only costs the next run the training time
            log(f"note: could not cache the tokenizer in {folder} ({err})")
    return tokenizer


def get_or_train_tokenizer(args: TokenizerArgs, documents: datasets.Dataset | None, model_max_length: int, *,
                           reuse: str | Path | None = None, log=print) -> PreTrainedTokenizerBase:
    """The tokenizer folder ``args.tokenizer_name_or_path`` or else ``reuse`` (a run's own saved tokenizer, a model
    folder's) when one is given; otherwise :func:`corpus_tokenizer` on ``documents``."""
    path = args.tokenizer_name_or_path or reuse
    if path:
        return load_tokenizer(path, model_max_length)
    if documents is None:
        raise ValueError("no tokenizer path and no documents to train one on")
    return corpus_tokenizer(args, documents, model_max_length, log)
