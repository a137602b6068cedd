"""benchmarks/gain/pretraining_gain.py reuses a fine-tuning run or a pretrained folder only for the same model, data and
settings: a stale result of another model is refused with one error line, never read back as this model's."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks/gain"))

import pretraining_gain as gain  # noqa: E402


@pytest.fixture
def folders(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\nword\n")
    (model / "model.safetensors").write_bytes(b"weights-1")
    (model / "README.md").write_text("card")
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text(json.dumps({"text": f"a {split} row", "label": 0}) + "\n")
    return model, files


def test_fingerprint_follows_what_the_run_reads(folders):
    model, files = folders
    settings = ["--learning_rate", "0.001", "--seed", "0"]
    pre, scratch = gain.run_fingerprint(model, files, settings, False), gain.run_fingerprint(model, files, settings, True)
    (model / "README.md").write_text("another card")  # not read by fine-tuning
    assert gain.run_fingerprint(model, files, settings, False) == pre
    (model / "model.safetensors").write_bytes(b"weights-2")  # other weights: pretrained arm differs, scratch does not
    assert gain.run_fingerprint(model, files, settings, False) != pre
    assert gain.run_fingerprint(model, files, settings, True) == scratch
    (model / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\nother\n")  # another tokenizer: both differ
    assert gain.run_fingerprint(model, files, settings, True) != scratch
    scratch2 = gain.run_fingerprint(model, files, settings, True)
    assert gain.run_fingerprint(model, files, ["--learning_rate", "0.003", "--seed", "0"], True) != scratch2
    files["test"].write_text(json.dumps({"text": "changed", "label": 1}) + "\n")
    assert gain.run_fingerprint(model, files, settings, True) != scratch2


def test_finetune_reads_back_only_its_own_result(folders, tmp_path, monkeypatch):
    import finetune_text_classification

    model, files = folders
    args = Namespace(epochs=5, max_seq_length=128)
    calls = []
    monkeypatch.setattr(finetune_text_classification, "main", lambda argv: calls.append(argv) or {"eval_accuracy": 0.75})
    monkeypatch.setattr(gain, "test_accuracy", lambda out, test, max_length: 0.5)
    out = tmp_path / "ft" / "run"
    out.mkdir(parents=True)
    assert gain.finetune(model, files, out, 1e-3, 0, False, args) == (0.75, 0.5)
    assert len(calls) == 1
    assert gain.finetune(model, files, out, 1e-3, 0, False, args) == (0.75, 0.5)  # read back, not run again
    assert len(calls) == 1

    (model / "model.safetensors").write_bytes(b"weights of another pretraining")
    with pytest.raises(SystemExit, match=r"^error: .*gain_result\.json is the result of another model.*delete"):
        gain.finetune(model, files, out, 1e-3, 0, False, args)
    (out / "gain_result.json").write_text(json.dumps([0.9, 0.9]))  # a result with no fingerprint at all
    with pytest.raises(SystemExit, match=r"^error: "):
        gain.finetune(model, files, out, 1e-3, 0, False, args)
    assert len(calls) == 1


def test_pretrained_folder_reused_only_for_the_same_flags(tmp_path, monkeypatch):
    runs = []

    def recipe(cmd, **kw):  # what the recipe leaves: OUTPUT/model with weights
        runs.append(cmd)
        folder = Path(cmd[cmd.index("--output_dir") + 1]) / "model"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"w")

    monkeypatch.setattr(gain.subprocess, "run", recipe)
    out = gain.pretrain(tmp_path, "p", "bert", ["--max_steps", "10"], None)
    assert len(runs) == 1 and out == tmp_path / "p" / "model"
    assert gain.pretrain(tmp_path, "p", "bert", ["--max_steps", "10"], None) == out
    assert len(runs) == 1
    with pytest.raises(SystemExit, match=r"^error: .*pretrained with .*--max_steps.*another --name"):
        gain.pretrain(tmp_path, "p", "bert", ["--max_steps", "20"], None)
    (tmp_path / "p" / "gain_pretrain.json").unlink()  # a folder from before the record existed
    with pytest.raises(SystemExit, match=r"^error: .*unrecorded settings"):
        gain.pretrain(tmp_path, "p", "bert", ["--max_steps", "10"], None)


def test_results_file_merges_only_results_of_one_model(folders, tmp_path):
    model, _ = folders
    path = tmp_path / "results_x.json"
    fresh = gain.earlier_results(path, model)
    assert fresh == {"model_digest": gain.folder_digest(model)}
    path.write_text(json.dumps({**fresh, "bbc/pretrained": [0.001, [0.9]]}))
    assert gain.earlier_results(path, model)["bbc/pretrained"] == [0.001, [0.9]]
    (model / "model.safetensors").write_bytes(b"weights of another pretraining")
    with pytest.raises(SystemExit, match=r"^error: .*results_x\.json holds results of another model"):
        gain.earlier_results(path, model)
    path.write_text(json.dumps({"bbc/pretrained": [0.001, [0.9]]}))  # no digest: cannot tell whose
    with pytest.raises(SystemExit, match=r"^error: "):
        gain.earlier_results(path, model)
