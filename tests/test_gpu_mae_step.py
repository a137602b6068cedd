"""benchmarks/gpu_mae.sh runs benchmarks/mae_step.py on a GPU (ViT-B/16, 224 px, 20,000 JPEGs); here the same step
runs on the CPU at a tiny size with JPEGs (encoded storage on hfssl's side, load_dataset("imagefolder") + a
per-sample transform + Trainer on the plain side), and the shell script is checked for syntax and for the
step it calls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_mae_script_calls_the_jpeg_step_and_parses():
    script = (ROOT / "benchmarks/gpu_mae.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_mae.sh")]).returncode == 0
    assert "benchmarks/mae_step.py" in script and "--jpeg_images" in script and "--image_size 224" in script


def test_mae_step_on_jpegs_runs_both_sides_at_a_tiny_size(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/mae_step.py"), "--jpeg_images", "24", "--work_dir",
                           str(tmp_path), "--image_size", "80", "--patch_size", "16", "--batch_size", "4",
                           "--warmup", "1", "--steps", "2", "--threads", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "24 JPEGs at 80x80" in proc.stdout
    ratio = re.search(r"ratio hfssl / plain\s+([\d.]+)\s+([\d.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0 and float(ratio.group(2)) > 0
    assert len(list((tmp_path / "jpegs_24").rglob("*.jpg"))) == 24
