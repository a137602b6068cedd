"""The speech fine-tuning recipes end to end on a tiny wav2vec 2.0 folder and clips made here, with the
pipelines on the results; the CTC vocabulary, WER / CER against jiwer's known values, one-line bad inputs."""

from __future__ import annotations

import csv

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import pipeline

from hfssl.finetune.audio import character_vocabulary, ctc_metrics, ctc_tokenizer
from hfssl.methods.wav2vec2 import Wav2Vec2Args, Wav2Vec2Pretrainer, export_wav2vec2, wav2vec2_config
from tests.bad_inputs import assert_user_error, run_in_process

FAST = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--learning_rate", "1e-3", "--logging_steps", "1", "--use_cpu", "true", "--save_strategy", "no"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftaudio")
    torch.manual_seed(0)
    export_wav2vec2(Wav2Vec2Pretrainer(wav2vec2_config(Wav2Vec2Args())), root / "model")
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "test"):
        for word, freq in (("low", 220.0), ("high", 880.0)):
            (root / "kws" / split / word).mkdir(parents=True)
            for i in range(3 if split == "train" else 2):
                rate = 8000 if i % 2 else 22_050
                t = np.arange(int(rate * 0.6)) / rate
                wave = (0.4 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.01, len(t))).astype(np.float32)
                path = root / "kws" / split / word / f"{i}.{'flac' if i % 2 else 'wav'}"
                sf.write(path, wave, rate)
                rows.append((split, str(path.relative_to(root)), word))
    for split in ("train", "test"):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "transcript"])
            w.writerows((p, label, {"low": "a low tone", "high": "a high tone"}[label]) for s, p, label in rows
                        if s == split)
    return root


def test_audio_classification_recipe_and_pipeline(folder, tmp_path, capsys):
    proc = run_in_process("finetune_audio_classification.py", ["--model_name_or_path", folder / "model",
                          "--data", folder / "kws", "--output_dir", tmp_path / "kws", *FAST], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "new task-head weights: classifier.bias, classifier.weight, projector.bias, projector.weight" in proc.stdout
    assert "WARNING" not in proc.stdout
    clf = pipeline("audio-classification", model=str(tmp_path / "kws"), device="cpu")
    out = clf(np.sin(2 * np.pi * 220 * np.arange(8000) / 16000).astype(np.float32), top_k=2)
    assert {o["label"] for o in out} == {"low", "high"}
    # the same recipe from a CSV of path,label
    proc = run_in_process("finetune_audio_classification.py", ["--model_name_or_path", folder / "model",
                          "--train_file", folder / "train.csv", "--validation_file", folder / "test.csv",
                          "--output_dir", tmp_path / "csv", *FAST], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ctc_recipe_and_pipeline(folder, tmp_path, capsys):
    proc = run_in_process("finetune_ctc.py", ["--model_name_or_path", folder / "model", "--train_file",
                          folder / "train.csv", "--validation_file", folder / "test.csv", "--output_dir",
                          tmp_path / "asr", *FAST], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "new task-head weights: lm_head.bias, lm_head.weight" in proc.stdout and "WARNING" not in proc.stdout
    assert (tmp_path / "asr" / "vocab.json").is_file() and (tmp_path / "asr" / "processor_config.json").is_file()
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "asr"), device="cpu")
    text = asr(np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32))["text"]
    assert isinstance(text, str) and set(text.replace("[UNK]", "")) <= set("a low high tone")  # the vocabulary


def test_vocabulary_and_error_rates_against_jiwer():
    vocab = character_vocabulary(["a cab", "bad"])
    assert vocab == {"[PAD]": 0, "[UNK]": 1, "a": 2, "b": 3, "c": 4, "d": 5, "|": 6}
    tok = ctc_tokenizer(vocab)
    assert tok.decode(tok("a cab").input_ids, group_tokens=False) == "a cab"
    refs, hyps = ["a cab", "bad"], ["a cad", "bad"]
    labels = np.full((2, 5), -100)
    for i, r in enumerate(refs):
        ids = tok(r).input_ids
        labels[i, : len(ids)] = ids
    logits = np.full((2, 5, len(vocab)), -5.0)
    for i, h in enumerate(hyps):  # one frame per character, no repeats to merge
        for t, c in enumerate(tok(h).input_ids):
            logits[i, t, c] = 5.0
        logits[i, len(h):, 0] = 5.0  # blanks
    from transformers import EvalPrediction

    got = ctc_metrics(tok)(EvalPrediction(predictions=logits, label_ids=labels))
    assert got["wer"] == pytest.approx(jiwer.wer(refs, hyps)) == pytest.approx(1 / 3)
    assert got["cer"] == pytest.approx(jiwer.cer(refs, hyps))


def test_bad_inputs_name_the_row(folder, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,transcript\n{folder / 'kws/test/low/0.wav'},a low tone\n"
                   f"{folder / 'kws/test/high/1.flac'},a HIGH tone!\n")
    proc = run_in_process("finetune_ctc.py", ["--model_name_or_path", folder / "model", "--train_file",
                          folder / "train.csv", "--validation_file", bad, "--output_dir", tmp_path / "o",
                          "--lowercase", "false", *FAST], capsys)
    assert_user_error(proc, "bad.csv: row 1", "transcript", "'H'", "'!'")
    broken = tmp_path / "broken.csv"
    (tmp_path / "x.wav").write_bytes(b"RIFFnope")
    broken.write_text("path,label\nx.wav,low\nx.wav,high\n")
    proc = run_in_process("finetune_audio_classification.py", ["--model_name_or_path", folder / "model",
                          "--train_file", broken, "--validation_split", "0.5", "--output_dir", tmp_path / "o2",
                          *FAST], capsys)
    assert_user_error(proc, "broken.csv: row 0", "x.wav")
