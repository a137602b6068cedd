"""recipes/mae.py and recipes/finetune_image_classification.py end to end on tiny images: reconstruction
pictures, a ViT folder the Auto classes load, two real processes, and a fine-tuned classifier in a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["horizontal", "vertical"]
SMALL = ["--image_size", "16", "--patch_size", "4", "--preset", "tiny", "--decoder_hidden_size", "32",
         "--decoder_num_hidden_layers", "1", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
         "--logging_steps", "2", "--eval_steps", "3", "--save_steps", "0", "--num_pictures", "4", "--seed", "1"]


def stripes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 12x12 grey images of horizontal (label 0) or vertical (label 1) stripes, random phase and noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    phase = rng.integers(0, 4, n)[:, None, None]
    rows, cols = np.indices((12, 12))
    lines = np.where(y[:, None, None] == 0, rows[None] + phase, cols[None] + phase) % 4 < 2
    x = np.clip(lines * 200 + rng.normal(30, 10, (n, 12, 12)), 0, 255).astype(np.uint8)
    return x, y


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    x, y = stripes(96, 0)
    x_test, y_test = stripes(24, 1)
    path = tmp_path_factory.mktemp("images") / "stripes.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, label_names=np.array(NAMES))
    return path


def run(script: str, *args, launcher=(), timeout=300) -> str:
    """Run ``script`` (a path under the repository) with ``args`` as a user would; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *launcher, str(ROOT / script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> tuple[Path, str]:
    """Two real CPU processes (torchrun, gloo), two epochs: 96 images / (16 x 2) = 3 steps per epoch."""
    out = tmp_path_factory.mktemp("mae") / "run"
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29600 + os.getpid() % 1000)]
    return out, run("recipes/mae.py", "--data", data, "--output_dir", out, "--num_epochs", "2", "--max_steps", "-1",
                    *SMALL, launcher=launcher)


def test_two_processes_share_the_epochs_and_the_learning_rate_scales(pretrained):
    out, stdout = pretrained
    assert "[process 0/2] finished 6 optimizer steps" in stdout and "[process 1/2] finished 6 " in stdout
    assert "learning rate 0.00025" in stdout  # base 2e-3 x total batch (16 x 2) / 256
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_loss" in x]
    assert [x["step"] for x in evals] == [3, 6] and all(x["eval_examples"] == 24 for x in evals)  # exact gather
    assert all(np.isfinite(x["loss"]) and x["samples_per_s"] > 0 for x in lines if "loss" in x)


def test_mae_recipe_writes_pictures_and_a_vit_the_auto_classes_load(pretrained, data):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    out, stdout = pretrained
    assert f"saved the pretrained encoder to {out / 'model'}" in stdout
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["step-3.png", "step-6.png"]
    assert Image.open(out / "reconstructions/step-6.png").size == (4 * 98 + 2, 4 * 98 + 2)
    folder = out / "model"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "vit"
    assert "mae" in (folder / "README.md").read_text()
    model, info = AutoModelForImageClassification.from_pretrained(folder, num_labels=2, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"} and not info["unexpected_keys"]
    processor = AutoImageProcessor.from_pretrained(folder)
    x = np.load(data)["x"]  # the processor carries the training images' statistics (resized 12 -> 16)
    assert processor.size["height"] == 16 and abs(processor.image_mean[0] - x.mean() / 255) < 0.01


def test_finetune_recipe_gives_a_pipeline_that_returns_labels(pretrained, data, tmp_path):
    from transformers import pipeline

    out = tmp_path / "ft"
    stdout = run("recipes/finetune_image_classification.py", "--model_name_or_path", pretrained[0] / "model",
                 "--data", data, "--output_dir", out, "--max_steps", "8", "--per_device_train_batch_size", "16",
                 "--learning_rate", "3e-3", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
                 "--use_cpu", "true")
    assert "eval accuracy" in stdout and f"saved the fine-tuned model to {out}" in stdout
    assert 0 <= json.loads((out / "all_results.json").read_text())["eval_accuracy"] <= 1
    classify = pipeline("image-classification", model=str(out))
    x, _ = stripes(2, 5)
    answers = classify([Image.fromarray(x[0], "L"), Image.fromarray(np.stack([x[1]] * 3, -1), "RGB")])
    assert all({a["label"] for a in answer} == set(NAMES) for answer in answers)
    assert all(abs(sum(a["score"] for a in answer) - 1) < 1e-4 for answer in answers)
