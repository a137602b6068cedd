"""hfssl.text.corpus: formats, document cutting, sentence splitting, bad input, caching."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hfssl
from hfssl.text.corpus import (
    DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS,
    CorpusArgs,
    CorpusReport,
    default_corpus,
    load_corpus,
    load_documents,
    resolve_paths,
    split_sentences,
)

datasets.disable_progress_bars()

# Hard-wrapped paragraphs, a heading without a full stop, an abbreviation at a line end.
WRAPPED = """The first line is
wrapped here. And a second
sentence follows.

A heading

New paragraph starts with Mr.
Smith, who came.   It rained.
"""
WRAPPED_SENTENCES = [
    "The first line is wrapped here.",
    "And a second sentence follows.",
    "A heading",
    "New paragraph starts with Mr. Smith, who came.",
    "It rained.",
]


def load(corpus, tmp_path, **kwargs):
    return load_documents(corpus, cache_dir=str(tmp_path / "cache"), **kwargs)


def sentences(ds) -> list[list[str]]:
    return ds["sentences"]


def test_txt_paragraphs_are_joined_and_split(tmp_path):
    (tmp_path / "a.txt").write_text(WRAPPED)
    ds, report = load(tmp_path / "a.txt", tmp_path)
    assert sentences(ds) == [WRAPPED_SENTENCES]
    assert ds.column_names == ["sentences"]
    assert (report.files, report.documents, report.sentences, report.empty_documents) == (1, 1, 5, 0)
    assert report.bytes == len(WRAPPED.encode())


def test_txt_gz_and_crlf_read_like_txt(tmp_path):
    with gzip.open(tmp_path / "a.txt.gz", "wt") as f:
        f.write(WRAPPED.replace("\n", "\r\n"))
    ds, _ = load(tmp_path / "a.txt.gz", tmp_path)
    assert sentences(ds) == [WRAPPED_SENTENCES]


def test_split_sentences():
    assert split_sentences("  Hello there.  How are you?\n") == ["Hello there.", "How are you?"]
    assert split_sentences("   ") == []


def test_document_separator_cuts_chapters_and_counts_empty_ones(tmp_path):
    text = ("TITLE\n\nBy Someone\n\nCHAPTER I\n\nOne. Two.\n\n  CHAPTER II\n\n\n"
            "Chapter 3\nThree\nwrapped.\nCHAPTER IV\n\nFour.\n")
    (tmp_path / "book.txt").write_text(text)
    ds, report = load(tmp_path / "book.txt", tmp_path, document_separator=DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS)
    # preamble, I, II (empty: removed and counted), 3, IV; separator lines are dropped
    assert sentences(ds) == [["TITLE", "By Someone"], ["One.", "Two."], ["Three wrapped."], ["Four."]]
    assert (report.documents, report.empty_documents, report.sentences) == (4, 1, 6)
    # an empty preamble is not a document
    (tmp_path / "b.txt").write_text("\n\nCHAPTER I\nA.\nCHAPTER II\nB.\n")
    ds, report = load(tmp_path / "b.txt", tmp_path, document_separator=r"^CHAPTER")
    assert sentences(ds) == [["A."], ["B."]] and report.empty_documents == 0


def test_sentence_per_line_format(tmp_path):
    (tmp_path / "g.txt").write_text("First sentence. Still first\nSecond one\n\n\nDoc two line.\n  \nDoc three.\n")
    ds, report = load(tmp_path / "g.txt", tmp_path, sentence_per_line=True)
    assert sentences(ds) == [["First sentence. Still first", "Second one"], ["Doc two line."], ["Doc three."]]
    assert report.sentences == 4
    with pytest.raises(ValueError, match="not a valid regex"):
        load(tmp_path / "g.txt", tmp_path, document_separator="^(CHAPTER")
    with pytest.raises(ValueError, match="either"):
        load(tmp_path / "g.txt", tmp_path, sentence_per_line=True, document_separator="^X")


def test_jsonl_and_jsonl_gz_one_document_per_line(tmp_path):
    rows = [{"body": "A first doc. It has\ntwo sentences.", "id": 1}, {"body": ""}, {"body": None},
            {"body": "Para one\n\npara two"}]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    (tmp_path / "d.jsonl").write_text(lines)
    with gzip.open(tmp_path / "e.jsonl.gz", "wt") as f:
        f.write(lines)
    for name in ["d.jsonl", "e.jsonl.gz"]:
        ds, report = load(tmp_path / name, tmp_path, text_field="body")
        assert sentences(ds) == [["A first doc.", "It has two sentences."], ["Para one", "para two"]]
        assert (report.documents, report.empty_documents) == (2, 2)


def test_jsonl_errors_name_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"other": "x"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2.*'text'"):
        load(tmp_path / "d.jsonl", tmp_path)
    (tmp_path / "e.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"e\.jsonl:2.*JSON"):
        load(tmp_path / "e.jsonl", tmp_path)
    (tmp_path / "f.jsonl").write_text('{"text": ["a", "list"]}\n')
    with pytest.raises(ValueError, match=r"f\.jsonl:1.*list"):
        load(tmp_path / "f.jsonl", tmp_path)


def test_parquet_and_save_to_disk(tmp_path):
    pq.write_table(pa.table({"text": ["Alpha one. Alpha two.", None], "n": [1, 2]}), tmp_path / "p.parquet")
    datasets.Dataset.from_dict({"content": ["Beta.", "Gamma one. Gamma two."]}).save_to_disk(tmp_path / "saved")
    ds, report = load(tmp_path / "p.parquet", tmp_path)
    assert sentences(ds) == [["Alpha one.", "Alpha two."]] and report.empty_documents == 1
    ds, _ = load(tmp_path / "saved", tmp_path, text_field="content")
    assert sentences(ds) == [["Beta."], ["Gamma one.", "Gamma two."]]
    with pytest.raises(ValueError, match=r"p\.parquet.*no column 'content'"):
        load(tmp_path / "p.parquet", tmp_path, text_field="content")


def write_cut_gzip(path: Path, text: str, keep: float = 0.5) -> Path:
    """``text`` gzipped, then cut to ``keep`` of its compressed bytes (a download that stopped half-way)."""
    data = gzip.compress(text.encode("utf-8"))
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def many_words(n: int, seed: int = 0) -> list[str]:
    """``n`` lines of pseudo-random words: they compress badly, so half a .gz still holds > 8 KB of text."""
    import random

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    return [" ".join(rng.choice(words) for _ in range(12)).capitalize() + "." for _ in range(n)]


@pytest.mark.parametrize("name, size", [("cut.txt.gz", 4000), ("tiny.txt.gz", 20), ("cut.jsonl.gz", 4000),
                                        ("tiny.jsonl.gz", 20)])
def test_truncated_gzip_is_an_error_naming_the_file(tmp_path, name, size):
    """A .gz cut in half fails inside the datasets generator (big file: after the 8 KB check) or in the
    check (small file): either way a UserError that names the file, never a bare EOFError."""
    from hfssl.errors import UserError

    lines = many_words(size)
    text = "\n".join(json.dumps({"text": t}) for t in lines) if "jsonl" in name else "\n".join(lines)
    (tmp_path / "good.txt").write_text("A good file. It is fine.")
    write_cut_gzip(tmp_path / name, text)
    with pytest.raises(UserError, match=rf"{re.escape(str(tmp_path / name))}: cannot be read \(EOFError.*re-create"):
        load(tmp_path, tmp_path)


def test_corrupt_gzip_and_parquet_are_errors_naming_the_file(tmp_path):
    from hfssl.errors import UserError

    data = bytearray(gzip.compress("\n".join(many_words(4000)).encode()))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # damaged in the middle: a zlib / CRC error
    (tmp_path / "bad.txt.gz").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"bad\.txt\.gz: cannot be read"):
        load(tmp_path / "bad.txt.gz", tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not really a parquet file")
    with pytest.raises(UserError, match=r"bad\.parquet: cannot be read \(Arrow"):
        load(tmp_path / "bad.parquet", tmp_path)


def test_folders_recurse_and_globs_expand_in_sorted_order(tmp_path, caplog):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("Bee.")
    (root / "a.txt").write_text("Ay.")
    (root / "sub" / "c.jsonl").write_text('{"text": "Sea."}\n')
    (root / "notes.md").write_text("not text")
    (root / ".hidden.txt").write_text("Hidden.")
    datasets.Dataset.from_dict({"text": ["Dee."]}).save_to_disk(root / "sub" / "zsaved")
    paths = resolve_paths(root)
    assert [p.relative_to(root).as_posix() for p in paths] == ["a.txt", "b.txt", "sub/c.jsonl", "sub/zsaved"]
    assert "notes.md" in caplog.text  # skipped, but said so
    ds, report = load(root, tmp_path)
    assert sentences(ds) == [["Ay."], ["Bee."], ["Sea."], ["Dee."]] and report.files == 4
    assert [p.name for p in resolve_paths(str(root / "*.txt"))] == ["a.txt", "b.txt"]
    assert [p.name for p in resolve_paths([root / "b.txt", str(root / "**" / "*.jsonl")])] == ["b.txt", "c.jsonl"]


def test_missing_and_unsupported_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        resolve_paths(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match=r"zz\*\.txt"):
        resolve_paths(str(tmp_path / "zz*.txt"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        resolve_paths(tmp_path / "empty_dir")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match=r"x\.csv"):
        resolve_paths(tmp_path / "x.csv")


def test_binary_file_is_refused(tmp_path):
    (tmp_path / "ok.txt").write_text("Fine.")
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ValueError, match=r"bin\.txt.*binary"):
        load(tmp_path, tmp_path)


def test_undecodable_bytes_are_replaced_and_reported(tmp_path):
    (tmp_path / "good.txt").write_text("Plain text.")
    (tmp_path / "latin1.txt").write_bytes("Caf\u00e9 ouvert. Fin.".encode("latin-1"))
    ds, report = load(tmp_path, tmp_path)
    assert sentences(ds) == [["Plain text."], ["Caf\ufffd ouvert.", "Fin."]]
    assert report.files_with_replaced_bytes == [str(tmp_path / "latin1.txt")]
    assert "latin1.txt" in str(report)


def test_empty_corpus_is_an_error_naming_the_paths(tmp_path):
    (tmp_path / "blank.txt").write_text("\n   \n\n")
    with pytest.raises(ValueError, match=r"blank\.txt"):
        load(tmp_path / "blank.txt", tmp_path)


def test_corpus_args_validation():
    with pytest.raises(ValueError, match="--num_proc must be at least 1"):
        CorpusArgs(num_proc=0)
    with pytest.raises(ValueError, match="--text_field"):
        CorpusArgs(text_field="")
    with pytest.raises(ValueError, match="--document_separator .* not a valid regex"):
        CorpusArgs(document_separator="(")
    with pytest.raises(ValueError, match="either --sentence_per_line"):
        CorpusArgs(document_separator="^#", sentence_per_line=True)
    CorpusArgs(num_proc=None, document_separator="^#")


def test_report_as_dict_and_str():
    report = CorpusReport(files=2, bytes=2_000_000, documents=3, sentences=9, empty_documents=1)
    assert report.as_dict() == {"files": 2, "bytes": 2_000_000, "documents": 3, "sentences": 9,
                                "files_with_replaced_bytes": [], "empty_documents": 1}
    assert str(report) == ("corpus: 2 files, 2.00 MB, 3 documents, 9 sentences, 1 empty documents removed")


def test_second_call_is_served_from_cache_and_edits_invalidate_it(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(WRAPPED)
    ds1, _ = load(path, tmp_path)
    files = [f["filename"] for f in ds1.cache_files]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    ds2, _ = load(path, tmp_path)
    assert [f["filename"] for f in ds2.cache_files] == files  # same Arrow files, not rewritten
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    path.write_text("Changed text.")
    ds3, _ = load(path, tmp_path)
    assert sentences(ds3) == [["Changed text."]]


def test_num_proc_keeps_file_order(tmp_path):
    for i in range(4):
        (tmp_path / f"f{i}.txt").write_text(f"Doc {i}. End {i}.")
    ds, _ = load(sorted(tmp_path.glob("*.txt")), tmp_path, num_proc=2)
    assert sentences(ds) == [[f"Doc {i}.", f"End {i}."] for i in range(4)]


def test_embedded_default_corpus_is_chapters(tmp_path):
    files = default_corpus()
    assert len(files) == 6 and all(f.endswith(".txt.gz") for f in files)
    assert all(Path(f).parent == Path(hfssl.__file__).parent / "data" / "austen" for f in files)
    ds, report = load_corpus(CorpusArgs(cache_dir=str(tmp_path / "cache")))
    # 269 chapter headings (4 novels "CHAPTER I", 2 novels "Chapter 1") + 6 title pages
    assert report.documents == 275 and report.empty_documents == 0
    assert report.sentences > 30_000 and report.files_with_replaced_bytes == []
    assert sentences(ds)[0] == ["EMMA", "By Jane Austen", "VOLUME I"]
    assert sentences(ds)[1][0].startswith("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and")


def test_prepared_corpus_keeps_sentences_only_and_is_reopened_without_reading(tmp_path, monkeypatch):
    import hfssl.text.corpus as corpus_module

    for i in range(3):
        (tmp_path / f"f{i}.txt").write_text(f"Doc {i} starts. It ends here {i}.\n\nSecond paragraph {i}.")
    files = sorted(tmp_path.glob("*.txt"))
    first, report = load(files, tmp_path, num_proc=2)
    cache = tmp_path / "cache"
    # What stays on disk: the sentences folder; the read text (the generator's Arrow copy) is gone.
    assert [p.name for p in cache.iterdir() if p.is_dir() and p.name.startswith("hfssl-corpus-")]
    assert not list(cache.rglob("generator-*.arrow"))
    assert len(first.cache_files) == 2 and all("hfssl-corpus-" in f["filename"] for f in first.cache_files)

    def no_reading(*args, **kwargs):
        raise AssertionError("the files were read again")

    monkeypatch.setattr(corpus_module, "_read_raw", no_reading)
    again, again_report = load(files, tmp_path, num_proc=2)
    assert sentences(again) == sentences(first) == [[f"Doc {i} starts.", f"It ends here {i}.", f"Second paragraph {i}."]
                                                    for i in range(3)]
    assert again_report == report and again._fingerprint == first._fingerprint  # later caches (tokens) are hit
    # Another setting or an edited file is another folder, read afresh.
    with pytest.raises(AssertionError, match="read again"):
        load(files, tmp_path, num_proc=2, sentence_per_line=True)
    files[0].write_text("Edited.")
    with pytest.raises(AssertionError, match="read again"):
        load(files, tmp_path, num_proc=2)
