"""The papers' settings (recipes/configs/mae_vit_b16.yaml, simclr_resnet50.yaml, moco_v2_resnet50.yaml,
byol_resnet50.yaml) run as written, with the real shapes (ViT-B/16 and ResNet-50 at 224 px, the papers' heads and
queue), for one optimizer step of batch 2 on a few JPEGs of ImageNet-like sizes, one smaller than the crop. Only
the batch size, the step count and the output folder are changed. Each run took 12-20 s on one CPU thread of the
development machine (import, model build, one step, a 100-350 MB export): `slow`, with the end-to-end runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = [0.485, 0.456, 0.406]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    """Three photographs-like JPEGs: 500x375, 375x500 and 160x120 (smaller than the 224 crop: upscaled)."""
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(500, 375), (375, 500), (160, 120)]):
        rows, cols = np.indices((h, w))
        x = np.stack([127 + 120 * np.sin(rows / (9 + 3 * c) + i) * np.cos(cols / (11 + c)) for c in range(3)], -1)
        Image.fromarray(np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    return folder


def run_config(name: str, data: Path, out: Path) -> str:
    cfg = ROOT / "recipes/configs" / name
    script = cfg.read_text().splitlines()[0].split("recipes/")[1].split()[0]  # the recipe its first line launches
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / script), "--config", str(cfg), "--data", str(data),
                           "--output_dir", str(out), "--per_device_train_batch_size", "2", "--max_steps", "1",
                           "--eval_fraction", "0", "--save_steps", "0", "--logging_steps", "1",
                           "--dataloader_num_workers", "0"], capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name, model_type, shapes", [
    ("mae_vit_b16.yaml", "vit", {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                 "intermediate_size": 3072, "patch_size": 16, "image_size": 224}),
    ("simclr_resnet50.yaml", "resnet", {"hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                                        "layer_type": "bottleneck"}),
    ("moco_v2_resnet50.yaml", "resnet", {"hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                                         "layer_type": "bottleneck"}),
    ("byol_resnet50.yaml", "resnet", {"hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                                      "layer_type": "bottleneck"}),
])
def test_paper_config_runs_a_step_with_the_real_shapes(name, model_type, shapes, jpegs, tmp_path):
    out = tmp_path / "run"
    log = run_config(name, jpegs, out)
    assert "images: 3 train" in log and "0 skipped" in log
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 1 and math.isfinite(losses[0])
    config = json.loads((out / "model/config.json").read_text())
    assert config["model_type"] == model_type
    assert {k: config[k] for k in shapes} == shapes
    processor = json.loads((out / "model/preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 224, "width": 224} and processor["image_mean"] == pytest.approx(IMAGENET_MEAN)
    settings = yaml.safe_load((ROOT / "recipes/configs" / name).read_text())
    if name.startswith("mae"):
        assert "model: MAE base" in log and "196 patches of 16x16, 75% dropped" in log
        assert settings["base_learning_rate"] == 1.5e-4 and (settings["adam_beta1"], settings["adam_beta2"]) == (0.9, 0.95)
    else:
        assert f"model: {settings['method']}" in log and "images 224px (backbone input 224px)" in log
