"""Every file a recipe reads, broken four ways (empty, truncated, another format, another encoding): ONE
``error:`` line that names the file and says what to do, exit code 2, and nothing ever unpickled.

Recipe rows run ``main`` under :func:`hfssl.errors.run_cli` in this process (as tests/test_bad_inputs_*.py
do) and fail before any data work or model load; the other rows call the library function a recipe calls,
under ``run_cli`` too, so the line checked is the one a user would see. Each test makes its own broken file.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import assert_user_error, run_in_process

from hfssl.errors import UserError, run_cli
from hfssl.files import check_model_folder, check_safetensors

DATA = Path(__file__).resolve().parent / "data"
MARKER_NAME = "UNPICKLED"


class Planted:
    """A pickle that, if ever unpickled, writes a marker file next to itself."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"weight": Planted(path.parent / MARKER_NAME)}))
    return path


def safetensors_bytes(tensors: dict[str, tuple[str, list[int], int]]) -> bytes:
    """A real safetensors file (zeros) from {name: (dtype, shape, nbytes)}, written by hand."""
    header, offset = {}, 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def bert_folder(folder: Path, weights: bytes | None = None) -> Path:
    """A model folder whose config.json is a BERT's and whose weights file is ``weights`` (every check of these
    rows happens before any tensor is read)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "vocab_size": 99}))
    (folder / "model.safetensors").write_bytes(safetensors_bytes({"w": ("F32", [4, 4], 64)}) if weights is None
                                               else weights)
    return folder


def one_line(fn, capsys) -> str:
    """Run ``fn`` under run_cli: exit code 2, no traceback, and ONE ``error:`` line, stderr's last: returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_cli(lambda argv: fn(), [])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]  # progress bars may come first
    assert done.value.code == 2 and lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err, err
    assert len(lines[-1]) < 1000
    return lines[-1]


# --------------------------------------------------------------------------------- weights (the case)
def test_a_pickle_named_model_safetensors_is_named_and_never_unpickled(tmp_path, capsys):
    folder = bert_folder(tmp_path / "model", weights=b"")
    planted_pickle(folder / "model.safetensors")
    for script, extra in (("finetune_text_classification.py", ["--train_file", DATA / "cls_train.jsonl",
                                                               "--validation_file", DATA / "cls_validation.jsonl"]),
                          ("bert_mlm.py", [])):
        proc = run_in_process(script, ["--model_name_or_path", folder, "--output_dir", tmp_path / "out", *extra],
                              capsys)
        assert_user_error(proc, str(folder / "model.safetensors"), "Python pickle", "never unpickles")
    assert not (folder / MARKER_NAME).exists()
    assert not (tmp_path / "out").exists()


def test_a_pickle_as_pytorch_model_bin_is_refused_before_torch_load(tmp_path, capsys):
    folder = bert_folder(tmp_path / "model")
    (folder / "model.safetensors").unlink()
    planted_pickle(folder / "pytorch_model.bin")
    line = one_line(lambda: check_model_folder(folder), capsys)
    assert str(folder / "pytorch_model.bin") in line and "not a torch.save zip archive" in line
    assert not (folder / MARKER_NAME).exists()


@pytest.mark.parametrize("case, expected", [
    ("empty", "is empty"),
    ("truncated", "cut short (truncated)"),
    ("text", "not a safetensors file (it looks like text)"),
    ("header cut", "cut short (truncated) inside its header"),
    ("extra bytes", "bytes past its last tensor"),
])
def test_a_broken_safetensors_file_is_named_from_its_header(case, expected, tmp_path, capsys):
    good = safetensors_bytes({"a": ("F32", [8], 32), "b": ("F16", [2, 2], 8)})
    broken = {"empty": b"", "truncated": good[: len(good) - 10], "text": b"version https://git-lfs.github.com/spec/v1\n",
              "header cut": good[:20], "extra bytes": good + b"\0" * 8}[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(good)
    check_safetensors(path, "--model_name_or_path")  # the valid file passes
    path.write_bytes(broken)
    line = one_line(lambda: check_safetensors(path, "--model_name_or_path"), capsys)
    assert str(path) in line and expected in line and "re-create" in line


def test_mae_from_a_folder_with_truncated_weights_is_one_line(tmp_path, capsys):
    folder = tmp_path / "mae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit_mae"}))
    full = safetensors_bytes({"w": ("F32", [64], 256)})
    (folder / "model.safetensors").write_bytes(full[:-100])
    proc = run_in_process("mae.py", ["--model_name_or_path", folder, "--output_dir", tmp_path / "out"], capsys)
    assert_user_error(proc, str(folder / "model.safetensors"), "truncated")


# --------------------------------------------------------------------------------- model and tokenizer folders
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"])
@pytest.mark.parametrize("case, expected", [
    ("empty", "is empty"),
    ("truncated", ""),
    ("pickle", "not UTF-8 text (it looks like a Python pickle)"),
    ("latin-1", "not UTF-8 text (byte"),
    ("utf-16", "not UTF-8 text (it looks like UTF-16 text)"),
])
def test_each_file_of_a_model_folder_is_named(name, case, expected, tmp_path, capsys):
    folder = bert_folder(tmp_path / "model")
    text = {"vocab.txt": "[PAD]\n[UNK]\ncafé\n", "tokenizer.json": json.dumps({"model": {"vocab": {"café": 0}}}),
            "tokenizer_config.json": json.dumps({"tokenizer_class": "BertTokenizer", "name": "café"}),
            "config.json": (folder / "config.json").read_text()[:-1] + ', "name": "café"}'}[name]
    data = {"empty": b"", "truncated": text.encode()[: len(text) // 2], "pickle": pickle.dumps({"w": [1.0] * 4}),
            "latin-1": text.replace("a", "é").encode("latin-1"), "utf-16": text.encode("utf-16")}[case]
    if case == "truncated" and name == "vocab.txt":
        pytest.skip("half a vocab.txt is a valid, smaller vocabulary")
    (folder / name).write_bytes(data)
    line = one_line(lambda: check_model_folder(folder), capsys)
    assert line.startswith("error: --model_name_or_path: ") and str(folder / name) in line, line
    assert expected in line and ("truncated" in line or case != "truncated")


def test_a_tokenizer_folder_whose_vocab_txt_is_latin1_is_named(tmp_path, capsys):
    """It used to end in the tokenizers library's bare ``Exception: Error while initializing WordPiece``."""
    from hfssl.text.tokenizer import load_tokenizer

    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "vocab.txt").write_bytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncaf\xe9\n".encode("latin-1"))
    line = one_line(lambda: load_tokenizer(folder), capsys)
    assert "tokenizer folder" in line and str(folder / "vocab.txt") in line and "byte" in line


# --------------------------------------------------------------------------------- config files
@pytest.mark.parametrize("content, expected", [
    (b"", "holds no settings"),
    (b"# only a comment\n", "holds no settings"),
    ("# r\xe9glages\nlearning_rate: 0.001\n".encode("latin-1"), "not UTF-8 text (byte"),
    ("learning_rate: 0.001\n".encode("utf-16"), "UTF-16"),
    (b"learning_rate: [0.001\nmax_steps: 3\n", "not valid YAML at line 2"),
    (b"learning_rate: 0.001\n\tmax_steps: 3\n", "not valid YAML at line 2"),
])
def test_a_broken_config_file_is_named(content, expected, tmp_path, capsys):
    path = tmp_path / "my.yaml"
    path.write_bytes(content)
    proc = run_in_process("bert_mlm.py", ["--config", path, "--output_dir", tmp_path / "out"], capsys)
    assert_user_error(proc, str(path), expected)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- fine-tuning files
def test_an_empty_validation_file_is_named(tmp_path, capsys):
    folder = bert_folder(tmp_path / "model")
    for name, content in (("dev.jsonl", ""), ("dev.csv", "text,label\n")):  # empty; a header and no row
        dev = tmp_path / name
        dev.write_text(content)
        proc = run_in_process("finetune_text_classification.py", [
            "--model_name_or_path", folder, "--train_file", DATA / "cls_train.jsonl", "--validation_file", dev,
            "--output_dir", tmp_path / "out"], capsys)
        assert_user_error(proc, str(dev), "give a file with data rows")


def _cls_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "cls_train.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name, make, expected", [
    ("t.jsonl", lambda rows: b"", "is empty"),
    ("t.json", lambda rows: json.dumps(rows).encode()[:-200], "cannot be read as json"),
    ("t.jsonl", lambda rows: "".join(json.dumps({**r, "text": r["text"] + " café"}, ensure_ascii=False) + "\n"
                                     for r in rows).encode("latin-1"), "not UTF-8 text (byte"),
    ("t.csv", lambda rows: ("text,label\n" + "".join(f"{r['text']} café,{r['label']}\n" for r in rows)).encode("utf-16"),
     "UTF-16"),
    ("t.csv", lambda rows: pickle.dumps(rows), "Python pickle"),
    ("t.parquet", lambda rows: b"PAR1" + b"\0" * 100, "cannot be read as parquet"),
])
def test_a_broken_fine_tuning_file_is_named(name, make, expected, tmp_path, capsys):
    from hfssl.finetune.common import load_data_file

    path = tmp_path / name
    path.write_bytes(make(_cls_rows()))
    line = one_line(lambda: load_data_file(path), capsys)
    assert str(path) in line and expected in line


def test_a_latin1_squad_file_is_named(tmp_path, capsys):
    from hfssl.finetune.qa import load_squad_file

    path = tmp_path / "squad.json"
    path.write_bytes('{"data": [{"title": "caf\u00e9", "paragraphs": []}]}'.encode("latin-1"))
    line = one_line(lambda: load_squad_file(path), capsys)
    assert str(path) in line and "not UTF-8" in line


# --------------------------------------------------------------------------------- corpora
@pytest.mark.parametrize("name, content, expected", [
    ("c.jsonl", b"", "no text found"),  # was datasets' 'Instruction "train" corresponds to no data!'
    ("c.txt", "Some text.\n".encode("utf-16"), "is UTF-16 text"),
])
def test_a_broken_corpus_file_is_named(name, content, expected, tmp_path, capsys):
    from hfssl.text.corpus import load_documents

    path = tmp_path / name
    path.write_bytes(content)
    line = one_line(lambda: load_documents(str(path), cache_dir=str(tmp_path / "cache")), capsys)
    assert str(path) in line and expected in line


# --------------------------------------------------------------------------------- image data
def _images(args_data: Path, tmp_path: Path):
    from hfssl.vision.data import ImageDataArgs, load_images

    return load_images(ImageDataArgs(data=str(args_data), cache_dir=str(tmp_path / "cache")))


@pytest.mark.parametrize("case, expected", [
    ("empty", "it is empty"),
    ("truncated", "cut short or damaged"),
    ("pickle", "pickled objects, which hfssl never loads"),
])
def test_a_broken_npz_file_is_named_and_never_unpickled(case, expected, tmp_path, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 255, (64, 8, 8), dtype=np.uint8))
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    else:
        planted_pickle(path)
    line = one_line(lambda: _images(path, tmp_path), capsys)
    assert str(path) in line and expected in line and "numpy.savez" in line
    assert not (tmp_path / MARKER_NAME).exists()


def test_a_truncated_idx_gz_file_is_named(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    raw = b"\0\0\x08\x03" + struct.pack(">III", 50, 8, 8) + bytes(range(256)) * 12 + bytes(3200 - 3072)
    data = gzip.compress(raw)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    line = one_line(lambda: _images(folder, tmp_path), capsys)
    assert str(folder / "train-images-idx3-ubyte.gz") in line and "truncated or damaged" in line


def test_a_damaged_save_to_disk_folder_is_named(tmp_path, capsys):
    import datasets

    folder = tmp_path / "disk"
    datasets.Dataset.from_dict({"image": [[[0] * 4] * 4] * 4, "label": [0, 1, 0, 1]}).save_to_disk(str(folder))
    arrow = next(folder.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    line = one_line(lambda: _images(folder, tmp_path), capsys)
    assert str(folder) in line and "save_to_disk" in line


def test_the_checks_read_no_tensor_and_accept_a_real_folder(tmp_path):
    """A folder save_pretrained wrote passes every check (so the checks never refuse a good model)."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertForMaskedLM(config).save_pretrained(tmp_path / "real")
    check_model_folder(tmp_path / "real")
    with pytest.raises(UserError):
        (tmp_path / "real" / "model.safetensors").write_bytes(b"\0" * 7)
        check_model_folder(tmp_path / "real")
