"""Per-format readers behind :func:`hfssl.text.corpus.load_documents`: each yields
``(document text, file had undecodable bytes)`` rows, errors naming the file."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

TEXT_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
_WHOLE_FILE_BYTES = 64 * 2**20  # on disk; larger files are read line by line


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115


def check_text_file(path: str) -> None:
    """Refuse binary files (NUL bytes in the first 8 KB) and broken gzip streams, naming the file."""
    try:
        with _open_bytes(path) as f:
            head = f.read(8192)
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot be read ({e})") from None
    if b"\x00" in head:
        raise ValueError(f"{path} looks like a binary file (NUL bytes in its first 8 KB); hfssl reads UTF-8 "
                         f"text ({', '.join(TEXT_SUFFIXES)}), .parquet and save_to_disk folders")


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
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e}); a .jsonl file holds one object per line") from None
        if not isinstance(record, dict) or text_field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}:{lineno}: no field {text_field!r} (found {keys}); set text_field")
        text = record[text_field] or ""
        if not isinstance(text, str):
            raise ValueError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, expected text")
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
            raise ValueError(f"{path} holds a DatasetDict (splits {list(ds)}); point the corpus at one split")
        schema = ds.data.schema
        batches = lambda: ds.with_format("arrow").iter(batch_size=1000)  # noqa: E731
    if text_field not in schema.names:
        raise ValueError(f"{path}: no column {text_field!r} (columns: {schema.names}); set text_field")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise ValueError(f"{path}: column {text_field!r} has type {kind}, expected text")
    for batch in batches():
        for value in batch.column(text_field).to_pylist():
            yield (value or ""), False


def generate_documents(files: list, text_field: str, separator: str | None, sentence_per_line: bool):
    """``Dataset.from_generator`` body. ``files`` holds [path, size, mtime_ns] so edits bust the cache."""
    for path, _size, _mtime in files:
        name = path.lower()
        if name.endswith((".txt", ".txt.gz")):
            rows = _txt_documents(path, separator, sentence_per_line)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            rows = _jsonl_documents(path, text_field)
        else:
            rows = _column_documents(path, text_field)
        for text, replaced in rows:
            yield {"text": text, "source": path, "replaced": replaced}
