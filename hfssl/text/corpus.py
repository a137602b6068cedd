"""Raw text files -> a ``datasets.Dataset`` of documents, each a list of sentences.

Reading goes through ``Dataset.from_generator`` (Arrow on disk), then one batched ``map`` joins
hard-wrapped lines into paragraphs and splits them into sentences with blingfire, into a folder of the
``datasets`` cache keyed by the files' paths, sizes and modification times and the reading settings
(``hfssl-corpus-<key>``; the read text is deleted once split). A second call on the same files opens
that folder without reading them. Nothing is dropped silently: empty documents and files with undecodable bytes
are counted in the :class:`CorpusReport`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import blingfire
import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.fingerprint import Hasher

from hfssl.errors import UserError
from hfssl.text.readers import TEXT_SUFFIXES, check_text_file, generate_documents

logger = logging.getLogger(__name__)

# Chapters of the embedded novels are documents. Four novels write "CHAPTER IV", two "Chapter 4".
DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS = r"^\s*(?:CHAPTER|Chapter)\s+(?:[IVXLC]+|\d+)\b"
SUFFIXES = (*TEXT_SUFFIXES, ".parquet")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")  # a blank (or whitespace-only) line
_PARAGRAPH_MARK = "\u2029"  # blingfire always breaks after U+2029; str.split() removes it from the text
_FEATURES = datasets.Features(
    {"text": datasets.Value("string"), "source": datasets.Value("string"), "replaced": datasets.Value("bool")}
)


@dataclass
class CorpusArgs:
    """Where the text comes from and how it is cut into documents."""

    corpus: str | None = field(default=None, metadata={"help": "File, folder or glob of .txt[.gz], .jsonl[.gz], "
                               ".parquet or save_to_disk folders. Default: the embedded Austen novels by chapter."})
    text_field: str = field(default="text", metadata={"help": "Text field of jsonl/parquet/save_to_disk input."})
    document_separator: str | None = field(default=None, metadata={"help": "Regex on .txt lines: a matching line "
                                           "starts a new document and is dropped. Default: a document per file."})
    sentence_per_line: bool = field(default=False, metadata={"help": "Google BERT format: a sentence per line, "
                                                                     "blank line between documents."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for sentence splitting."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: HF cache)."})

    def __post_init__(self):
        if not self.text_field:
            raise ValueError("--text_field must name a field, got an empty string")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError(f"--num_proc must be at least 1 (or unset), got {self.num_proc}")
        check_separator(self.document_separator, self.sentence_per_line)


def check_separator(document_separator: str | None, sentence_per_line: bool) -> None:
    """``document_separator`` must be a valid regex, and not combined with ``sentence_per_line``."""
    if sentence_per_line and document_separator:
        raise UserError("--sentence_per_line and --document_separator both cut the text into documents; use "
                        "either --sentence_per_line (blank lines separate documents) or --document_separator")
    try:
        re.compile(document_separator or "")  # a bad regex fails here, not inside a worker
    except re.error as e:
        raise UserError(f"--document_separator {document_separator!r} is not a valid regex ({e}); fix the "
                        "pattern") from None


@dataclass
class CorpusReport:
    """What was read: shown to the user so that nothing disappears unnoticed."""

    files: int
    bytes: int  # on disk, compressed size for .gz
    documents: int  # non-empty documents returned
    sentences: int
    files_with_replaced_bytes: list[str] = field(default_factory=list)
    empty_documents: int = 0  # documents with no sentence, removed

    def __str__(self) -> str:
        text = (f"corpus: {self.files} files, {self.bytes / 1e6:.2f} MB, {self.documents} documents, "
                f"{self.sentences} sentences, {self.empty_documents} empty documents removed")
        if self.files_with_replaced_bytes:
            text += (f", undecodable UTF-8 bytes replaced by U+FFFD in {len(self.files_with_replaced_bytes)} "
                     f"file(s): {', '.join(self.files_with_replaced_bytes)}")
        return text

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_corpus() -> list[str]:
    """Paths of the six embedded Jane Austen novels (gzipped text inside the installed package)."""
    folder = Path(str(resources.files("hfssl") / "data" / "austen"))
    files = sorted(str(p) for p in folder.glob("*.txt.gz"))
    if not files:
        raise FileNotFoundError(f"embedded corpus missing from {folder}; reinstall hfssl (pip install -e .)")
    return files


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _expand(path: Path, explicit: bool) -> list[Path]:
    """One existing path -> the corpus files it stands for (folders recursively, sorted, hidden ignored)."""
    if not explicit and path.name.startswith("."):
        return []  # .git, .cache, ... inside a folder
    if _is_saved_dataset(path) or (path.is_file() and path.name.lower().endswith(SUFFIXES)):
        return [path]
    if path.is_file() and explicit:
        raise UserError(f"{path}: unsupported file type; hfssl reads {', '.join(SUFFIXES)} files "
                        "and datasets save_to_disk folders: convert it or remove it from --corpus")
    if path.is_file():
        logger.warning("skipping %s: unsupported file type", path)
        return []
    return [p for child in sorted(path.iterdir()) for p in _expand(child, explicit=False)]


def resolve_paths(corpus: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files, folders (recursive, supported suffixes) and globs -> absolute paths in a stable order."""
    items = [corpus] if isinstance(corpus, str | Path) else list(corpus)
    if not items:
        raise UserError("no corpus given, --corpus: pass a file, a folder or a glob")
    out: list[Path] = []
    for item in items:
        text = str(Path(item).expanduser())
        if any(c in text for c in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern {text}; check --corpus")
            for m in matches:
                out.extend(_expand(Path(m).absolute(), explicit=False))
        elif not Path(text).exists():
            raise FileNotFoundError(f"corpus path not found: {text}; check --corpus")
        else:
            out.extend(_expand(Path(text).absolute(), explicit=True))
    if not out:
        raise FileNotFoundError(f"no {', '.join(SUFFIXES)} file or save_to_disk folder found in "
                                f"{', '.join(map(str, items))}; point --corpus at your text files")
    return out


def split_sentences(text: str) -> list[str]:
    """Split one piece of text into sentences with blingfire; stripped, empties dropped."""
    return [s for s in (s.strip() for s in blingfire.text_to_sentences(text).split("\n")) if s]


def _document_sentences(text: str, sentence_per_line: bool) -> list[str]:
    """One document -> its sentences. Lines of a paragraph are joined; sentences never span paragraphs."""
    if sentence_per_line:
        return [s for s in (line.strip() for line in text.split("\n")) if s]
    paragraphs = (" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text))
    joined = f"{_PARAGRAPH_MARK} ".join(p for p in paragraphs if p)  # one blingfire call per document
    if not joined:
        return []
    pieces = blingfire.text_to_sentences(joined).split("\n")
    return [s for piece in pieces for s in (s.strip() for s in piece.split(_PARAGRAPH_MARK)) if s]


def _split_batch(batch: dict, sentence_per_line: bool) -> dict:
    """Batched ``map`` function: ``text`` column -> ``sentences`` column.

    blingfire is called through ctypes, which releases the GIL, so threads split documents in parallel
    (1.7x on 2 cores) without the ~1 s start-up of a worker process."""
    texts = batch["text"]
    workers = min(len(texts) // 4, os.cpu_count() or 1, 4)
    if workers < 2:
        return {"sentences": [_document_sentences(t, sentence_per_line) for t in texts]}
    with ThreadPoolExecutor(workers) as pool:  # created here: an executor in a global would break hashing
        return {"sentences": list(pool.map(_document_sentences, texts, [sentence_per_line] * len(texts)))}


def _identity(path: Path) -> list:
    """[path, size, mtime_ns] of a file, or of everything inside a save_to_disk folder."""
    stats = [p.stat() for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path.stat()]
    return [str(path), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def _read_raw(files: list[list], text_field, separator, sentence_per_line, cache_dir) -> datasets.Dataset:
    """Files -> Arrow rows (text, source, replaced), unwrapping generation errors to name the file.

    One process: reading lines is cheap next to sentence splitting (the ``map``, which takes num_proc),
    and errors keep their type and message."""
    try:
        return datasets.Dataset.from_generator(
            generate_documents, features=_FEATURES, cache_dir=cache_dir,
            gen_kwargs={"files": files, "text_field": text_field, "separator": separator,
                        "sentence_per_line": sentence_per_line},
        )
    except datasets.exceptions.DatasetGenerationError as e:
        # The readers' errors (UserError, a ValueError) name the file and the line: show them plainly.
        if isinstance(e.__cause__, ValueError | OSError):
            raise e.__cause__ from None
        raise


CORPUS_VERSION = "hfssl-corpus-1"  # of what the sentences folder holds: a change must not reuse folders made before


def corpus_folder(files: list[list], text_field, separator, sentence_per_line, cache_dir) -> tuple[Path, str]:
    """The folder that holds a corpus's sentences (and, beside them, its tokenizer, token ids and instances):
    keyed by the files' paths, sizes and modification times and the reading settings."""
    key = Hasher.hash([CORPUS_VERSION, files, text_field, separator, sentence_per_line])
    return Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / f"hfssl-corpus-{key}", key


def _saved_sentences(folder: Path, key: str) -> datasets.Dataset | None:
    """The sentences of a finished earlier preparation (its ``complete.json`` names the shards), or None."""
    marker = folder / "complete.json"
    if not marker.is_file():
        return None
    shards = [folder / name for name in json.loads(marker.read_text())["shards"]]
    if not all(f.is_file() for f in shards):
        return None
    ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in shards])
    ds._fingerprint = key  # what the first preparation's map gave it: later caches (tokens, instances) match
    return ds


def _split_into_folder(files, text_field, separator, sentence_per_line, cache_dir, num_proc, folder: Path,
                       key: str) -> datasets.Dataset:
    """Read the files (Arrow, through the datasets cache), split sentences into ``folder``, then delete the read
    text: it was one more copy of the corpus on disk (the sentences keep the same words)."""
    raw = _read_raw(files, text_field, separator, sentence_per_line, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ds = raw.map(_split_batch, batched=True, fn_kwargs={"sentence_per_line": sentence_per_line},
                 remove_columns=["text"], num_proc=num_proc if num_proc and num_proc > 1 else None,
                 features=datasets.Features({**{k: v for k, v in _FEATURES.items() if k != "text"},
                                             "sentences": datasets.List(datasets.Value("string"))}),
                 cache_file_name=str(folder / "sentences.arrow"), new_fingerprint=key, desc="splitting sentences")
    shards = [Path(f["filename"]) for f in ds.cache_files]
    tmp = folder / f"complete.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"shards": [f.name for f in shards], "files": files}))
    os.replace(tmp, folder / "complete.json")
    builder = {Path(f["filename"]).parent.parent for f in raw.cache_files}  # .../generator/default-<hash>
    for path in builder:
        shutil.rmtree(path, ignore_errors=True)
    return ds


def load_documents(corpus, *, text_field: str = "text", document_separator: str | None = None,
                   sentence_per_line: bool = False, cache_dir: str | None = None,
                   num_proc: int | None = None) -> tuple[datasets.Dataset, CorpusReport]:
    """Read a corpus into a Dataset with one row per non-empty document and a ``sentences`` column.

    The sentences live in ``hfssl-corpus-<key>`` of the datasets cache (:func:`corpus_folder`); a second call on
    unchanged files with the same settings opens them without reading the files again."""
    check_separator(document_separator, sentence_per_line)
    paths = resolve_paths(corpus)
    files = [_identity(p) for p in paths]
    folder, key = corpus_folder(files, text_field, document_separator, sentence_per_line, cache_dir)
    ds = _saved_sentences(folder, key)
    if ds is None:
        for p in paths:
            if p.name.lower().endswith(TEXT_SUFFIXES):
                check_text_file(str(p))
        ds = _split_into_folder(files, text_field, document_separator, sentence_per_line, cache_dir, num_proc,
                                folder, key)
    table = ds.data.table  # (documents,) columns source, replaced, sentences
    lengths = pc.list_value_length(table.column("sentences")).to_numpy(zero_copy_only=False)
    bad = pc.unique(pc.filter(table.column("source"), table.column("replaced"))).to_pylist()
    report = CorpusReport(files=len(paths), bytes=sum(f[1] for f in files), documents=int((lengths > 0).sum()),
                          sentences=int(lengths.sum()), files_with_replaced_bytes=sorted(bad),
                          empty_documents=int((lengths == 0).sum()))
    if report.documents == 0:
        named = ", ".join(map(str, paths[:5])) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        raise UserError(f"no text found in corpus {named} ({report.empty_documents} empty documents); check "
                        "--corpus (and --text_field / --document_separator)")
    if bad:
        logger.warning("undecodable UTF-8 bytes replaced by U+FFFD in: %s", ", ".join(bad))
    ds = ds.remove_columns(["source", "replaced"])
    if report.empty_documents:
        ds = ds.select(np.flatnonzero(lengths > 0))
    return ds, report


def load_corpus(args: CorpusArgs) -> tuple[datasets.Dataset, CorpusReport]:
    """:func:`load_documents` from :class:`CorpusArgs`; no corpus means the embedded novels by chapter."""
    corpus, separator = args.corpus, args.document_separator
    if corpus is None:
        corpus = default_corpus()
        separator = separator or (None if args.sentence_per_line else DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS)
    return load_documents(corpus, text_field=args.text_field, document_separator=separator,
                          sentence_per_line=args.sentence_per_line, cache_dir=args.cache_dir,
                          num_proc=args.num_proc)


@dataclass
class EvalSplitArgs:
    """How much of the corpus the text recipes hold out (whole documents) for held-out metrics."""

    eval_fraction: float = field(default=0.05, metadata={"help": "Fraction of documents held out for evaluation "
                                                                  "(0: no evaluation)."})

    def __post_init__(self):
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")


def split_documents(documents: datasets.Dataset, args: EvalSplitArgs, seed: int) -> dict:
    """``{"train", "test"}`` by whole documents (``test`` None when ``eval_fraction`` is 0)."""
    if args.eval_fraction == 0:
        return {"train": documents, "test": None}
    if len(documents) < 2:
        raise UserError(f"the corpus has {len(documents)} document, --eval_fraction {args.eval_fraction} "
                        "needs at least 2 (set --document_separator, give more files, or --eval_fraction 0)")
    return documents.train_test_split(test_size=args.eval_fraction, seed=seed)
