"""recipes/wav2vec2.py end to end on tiny audio made here: logs, the exported folder loading into the Auto
classes with only their head new, continuing from it, exact resume (slow), one-line bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, AutoModelForCTC

from tests.bad_inputs import assert_user_error, run_in_process, run_recipe

TINY = ["--max_seconds", "1.0", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
        "--logging_steps", "1", "--eval_fraction", "0.25", "--warmup", "0.1"]


def make_speechlike(folder, n=8, seed=0):
    """Clips of 1-2 s: harmonic tones with a moving pitch plus noise, at 22.05 kHz stereo and 8 kHz mono."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rate = 22_050 if i % 2 else 8_000
        t = np.arange(int(rate * rng.uniform(1.0, 2.0))) / rate
        f0 = rng.uniform(100, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 + rng.normal(0, 0.01, len(t))
        wave = wave.astype(np.float32)
        sf.write(folder / f"c{i}.{'flac' if i % 3 else 'wav'}", np.stack([wave, wave], 1) if i % 2 else wave, rate)
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2v")
    data = make_speechlike(root / "audio")
    (data / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    out = root / "run"
    proc = run_recipe("wav2vec2.py", "--data", data, "--output_dir", out, "--max_steps", "8", "--eval_steps", "4",
                      "--save_steps", "4", *TINY, env={"HF_DATASETS_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out, proc


def test_recipe_logs_the_wav2vec2_metrics_and_names_skipped_files(pretrained):
    _, out, proc = pretrained
    assert "1 file(s) skipped: " in proc.stdout and "broken.wav" in proc.stdout
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "loss" in r]
    assert len(train) == 8
    for key in ("contrastive_loss", "diversity_loss", "contrastive_accuracy", "codebook_perplexity",
                "gumbel_temperature"):
        assert all(np.isfinite(r[key]) for r in train), key
    temps = [r["gumbel_temperature"] for r in train]
    assert temps[0] == 2.0 and temps == sorted(temps, reverse=True) and temps[-1] < 2.0
    evals = [r for r in lines if "eval_contrastive_accuracy" in r]
    assert [r["step"] for r in evals] == [4, 8] and 0 <= evals[-1]["eval_contrastive_accuracy"] <= 1
    assert (out / "report.png").is_file() and (out / "model" / "README.md").is_file()


def test_export_loads_into_ctc_and_audio_classification_with_only_the_head_new(pretrained):
    _, out, _ = pretrained
    folder = out / "model"
    saved = load_file(str(folder / "model.safetensors"))
    assert json.loads((folder / "config.json").read_text())["model_type"] == "wav2vec2"
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert extractor.sampling_rate == 16_000 and extractor.do_normalize
    ctc, info = AutoModelForCTC.from_pretrained(folder, vocab_size=12, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["lm_head.bias", "lm_head.weight"]
    cls, info = AutoModelForAudioClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight", "projector.bias",
                                            "projector.weight"]
    encoder = {k: v for k, v in ctc.state_dict().items() if k.startswith("wav2vec2.")}
    assert encoder and all(torch.equal(v, saved[k]) for k, v in encoder.items() if k in saved)
    x = extractor(np.random.default_rng(0).normal(size=8000).astype(np.float32), sampling_rate=16_000,
                  return_tensors="pt")
    assert ctc(**x).logits.shape[-1] == 12 and cls(**x).logits.shape == (1, 3)


@pytest.mark.slow
def test_continue_from_the_exported_folder_and_from_an_encoder_only_folder(pretrained, tmp_path):
    root, out, _ = pretrained
    proc = run_recipe("wav2vec2.py", "--data", root / "audio", "--model_name_or_path", out / "model",
                      "--output_dir", tmp_path / "more", "--max_steps", "2", "--eval_steps", "0", "--save_steps", "0",
                      *TINY, env={"HF_DATASETS_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "initialised (not in the folder): none" in proc.stdout
    # one flag, no --config: wav2vec2_continue.yaml's defaults replace the from-scratch ones, each replaced one named
    line = next(x for x in proc.stdout.splitlines() if x.startswith("--model_name_or_path without --config"))
    assert "wav2vec2_continue.yaml instead of wav2vec2_tiny.yaml" in line and "preset tiny -> the folder's" in line
    AutoModelForCTC.from_pretrained(out / "model", vocab_size=8).wav2vec2.save_pretrained(tmp_path / "enc")
    proc = run_recipe("wav2vec2.py", "--data", root / "audio", "--model_name_or_path", tmp_path / "enc",
                      "--output_dir", tmp_path / "more2", "--max_steps", "1", "--eval_steps", "0", "--save_steps", "0",
                      *TINY, env={"HF_DATASETS_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = proc.stdout.split("initialised (not in the folder): ")[1].splitlines()[0]
    assert "quantizer.codevectors" in new and "project_q.weight" in new and "wav2vec2." not in new


@pytest.mark.slow
def test_resume_is_bit_identical(pretrained, tmp_path):
    root, _, _ = pretrained
    env = {"HF_DATASETS_CACHE": str(root / "cache")}
    common = ["--data", root / "audio", "--max_steps", "6", "--eval_steps", "0", "--save_steps", "3", *TINY]
    assert run_recipe("wav2vec2.py", *common, "--output_dir", tmp_path / "full", env=env).returncode == 0
    assert run_recipe("wav2vec2.py", *common, "--output_dir", tmp_path / "cut", env=env).returncode == 0
    # as if killed after step 3: drop what came later, resume from the step-3 checkpoint
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-6")
    shutil.rmtree(tmp_path / "cut" / "model")
    resumed = run_recipe("wav2vec2.py", *common, "--output_dir", tmp_path / "cut", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args,culprits", [
    (["--data", "/nonexistent/speech"], ["--data", "/nonexistent/speech", "not found"]),
    (["--preset", "huge"], ["--preset", "huge"]),
    (["--mask_time_prob", "1.5"], ["--mask_time_prob"]),
    (["--max_seconds", "0"], ["--max_seconds"]),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, args, culprits):
    proc = run_in_process("wav2vec2.py", ["--output_dir", tmp_path / "o", "--max_steps", "1", *args], capsys)
    assert_user_error(proc, *culprits)
    assert not (tmp_path / "o" / "model").exists()
