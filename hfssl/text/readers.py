"""Per-format readers behind :func:`hfssl.text.corpus.load_documents`: each yields
``(document text, file had undecodable bytes)`` rows, errors naming the file.

A file that cannot be read (a truncated or corrupt ``.gz``, a damaged ``.parquet``, an unreadable
save_to_disk folder, a disk error) is a :class:`~hfssl.errors.UserError` that names it, raised from
inside the ``datasets`` generator so that it never surfaces as a bare ``EOFError`` wrapped in a
``DatasetGenerationError``."""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from hfssl.errors import UserError

TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
_WHOLE_FILE_BYTES = 64 * 2**20  # on disk; larger files are read line by line
# What a damaged or unreadable file raises while it is read: gzip's EOFError ("Compressed file ended
# before the end-of-stream marker was reached"), zlib.error (corrupt deflate data), gzip.BadGzipFile and
# other OSErrors, pyarrow's errors for a broken .parquet / Arrow file, a JSONDecodeError for a
# save_to_disk folder whose metadata is damaged.
READ_ERRORS = (EOFError, OSError, zlib.error, pa.ArrowException, json.JSONDecodeError, UnicodeDecodeError)


def unreadable(path: str, err: BaseException) -> UserError:
    """The one-line error for a corpus file that cannot be read: what happened, the file, what to do."""
    reason = " ".join(str(err).split()) or type(err).__name__
    return UserError(f"{path}: cannot be read ({type(err).__name__}: {reason}); the file is damaged, truncated or "
                     "unreadable: re-create or re-download it, or remove it from --corpus")


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115


def check_text_file(path: str) -> None:
    """Refuse binary files (NUL bytes in the first 8 KB) and broken gzip streams, naming the file."""
    try:
        with _open_bytes(path) as f:
            head = f.read(8192)
    except READ_ERRORS as e:
        raise unreadable(path, e) from None
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"{path} is UTF-16 text; hfssl reads UTF-8: convert it (iconv -f utf-16 -t utf-8) or remove "
                        "it from --corpus")
    if b"\x00" in head:
        raise UserError(f"{path} looks like a binary file (NUL bytes in its first 8 KB); hfssl reads UTF-8 "
                        f"text ({', '.join(TEXT_SUFFIXES)}), .parquet and save_to_disk folders: remove it from "
                        "--corpus or convert it to text")


def _decoded_lines(path: str) -> Iterator[tuple[str, bool]]:
    """(line, had undecodable bytes) for each line; bad bytes become U+FFFD.

    A file under 64 MB that decodes cleanly is decoded in one call (several times faster than line by
    line) and split on ``\n`` only, exactly as iterating over the binary file does; larger files stream."""
    text = None
    if os.path.getsize(path) < _WHOLE_FILE_BYTES:
        with _open_bytes(path) as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if text is not None:
        lines = text.split("\n")
        last = lines.pop()
        yield from ((line + "\n", False) for line in lines)
        if last:
            yield last, False
        return
    with _open_bytes(path) as f:
        for raw in f:
            try:
                yield raw.decode("utf-8"), False
            except UnicodeDecodeError:
                yield raw.decode("utf-8", errors="replace"), True


def _txt_documents(path: str, separator: str | None, sentence_per_line: bool) -> Iterator[tuple[str, bool]]:
    """(document text, file had bad bytes so far). Every file yields at least one (maybe empty) row."""
    pattern = re.compile(separator, re.MULTILINE) if separator else None
    lines: list[str] = []
    replaced = started = False
    for line, bad in _decoded_lines(path):
        replaced |= bad
        if sentence_per_line and not line.strip():
            if lines:
                yield "".join(lines), replaced
                lines, started = [], True
        elif pattern is not None and pattern.search(line):
            if started or any(not x.isspace() for x in lines):  # skip an empty preamble only
                yield "".join(lines), replaced
            lines, started = [], True
        else:
            lines.append(line)
    if lines or not started or pattern is not None:
        yield "".join(lines), replaced


def _jsonl_documents(path: str, text_field: str) -> Iterator[tuple[str, bool]]:
    replaced = False
    for lineno, (line, bad) in enumerate(_decoded_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e}); a .jsonl file holds one object per line: fix "
                            "or remove that line") from None
        if not isinstance(record, dict) or text_field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise UserError(f"{path}:{lineno}: no field {text_field!r} (found {keys}); set --text_field")
        text = record[text_field] or ""
        if not isinstance(text, str):
            raise UserError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, expected text; fix that "
                            "line or set --text_field")
        replaced |= bad
        yield text, replaced


def _column_documents(path: str, text_field: str) -> Iterator[tuple[str, bool]]:
    """Documents from a .parquet file or a save_to_disk folder (column ``text_field``)."""
    if path.lower().endswith(".parquet"):
        schema = pq.read_schema(path)
        batches = lambda: pq.ParquetFile(path).iter_batches(columns=[text_field], batch_size=1000)  # noqa: E731
    else:
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            raise UserError(f"{path} holds a DatasetDict (splits {list(ds)}); point --corpus at one split's folder")
        schema = ds.data.schema
        batches = lambda: ds.with_format("arrow").iter(batch_size=1000)  # noqa: E731
    if text_field not in schema.names:
        raise UserError(f"{path}: no column {text_field!r} (columns: {schema.names}); set --text_field")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise UserError(f"{path}: column {text_field!r} has type {kind}, expected text; set --text_field to a text column")
    for batch in batches():
        for value in batch.column(text_field).to_pylist():
            yield (value or ""), False


def _file_documents(path: str, text_field: str, separator: str | None,
                    sentence_per_line: bool) -> Iterator[tuple[str, bool]]:
    name = path.lower()
    if name.endswith((".txt", ".txt.gz")):
        return _txt_documents(path, separator, sentence_per_line)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl_documents(path, text_field)
    return _column_documents(path, text_field)


def generate_documents(files: list, text_field: str, separator: str | None, sentence_per_line: bool):
    """``Dataset.from_generator`` body. ``files`` holds [path, size, mtime_ns] so edits bust the cache.

    A read failure of one file becomes a :class:`UserError` naming that file (see :func:`unreadable`);
    errors that already name it (bad JSON, a missing field) pass through unchanged."""
    for path, _size, _mtime in files:
        rows = _file_documents(path, text_field, separator, sentence_per_line)
        found = False
        while True:
            try:
                text, replaced = next(rows)
            except StopIteration:
                if not found:  # an empty .jsonl / .parquet: one empty document, so "no text found" names it
                    yield {"text": "", "source": path, "replaced": False}
                break
            except UserError:
                raise
            except READ_ERRORS as e:
                raise unreadable(path, e) from e
            found = True
            yield {"text": text, "source": path, "replaced": replaced}
