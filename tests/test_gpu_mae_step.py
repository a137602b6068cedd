"""benchmarks/speed/gpu_mae.sh runs benchmarks/speed/mae_step.py on a GPU (ViT-B/16, 224 px, 20,000 JPEGs); here the same step
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
    script = (ROOT / "benchmarks/speed/gpu_mae.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/speed/gpu_mae.sh")]).returncode == 0
    assert "benchmarks/speed/mae_step.py" in script and "--jpeg_images" in script and "--image_size 224" in script


def test_gpu_scripts_pick_the_first_python_that_has_cuda_and_the_modules_they_need(tmp_path):
    """benchmarks/speed/gpu_python.sh (sourced by both GPU scripts) with stand-in pythons: one that lacks a module the
    script needs is passed over for the next candidate; none is installed when one will do."""
    def fake(name: str, ok_without: str) -> Path:  # a "python" whose usability check passes unless asked for ok_without
        path = tmp_path / name
        path.write_text(f'#!/usr/bin/env bash\nfor a in "$@"; do [ "$a" = "{ok_without}" ] && exit 1; done\nexit 0\n')
        path.chmod(0o755)
        return path

    lacks_torchvision, full = fake("lacks", "torchvision"), fake("full", "never")
    (tmp_path / "repo").mkdir()  # a checkout without ./.venv, so that the real one is never a candidate
    (tmp_path / "repo" / "benchmarks").symlink_to(ROOT / "benchmarks")
    for needs, candidate, expected in [("torchvision sklearn", lacks_torchvision, "none"),
                                       ("", lacks_torchvision, str(lacks_torchvision))]:
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PYTHON": str(candidate), "GPU_VENV": str(full.parent / "venv"),
               "NEEDS": needs}
        shell = f'cd {tmp_path}/repo && mkdir -p {tmp_path}/venv/bin && cp {full} {tmp_path}/venv/bin/python && ' \
                '. benchmarks/speed/gpu_python.sh && echo "PY=$PY"'
        proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0 and "installing" not in proc.stdout, proc.stdout + proc.stderr
        chosen = proc.stdout.strip().splitlines()[-1]
        assert chosen == (f"PY={tmp_path}/venv/bin/python" if expected == "none" else f"PY={expected}")
    for script in ("gpu_mae.sh", "gpu_bert.sh"):
        assert ". benchmarks/speed/gpu_python.sh" in (ROOT / "benchmarks/speed" / script).read_text()


def test_mae_step_on_jpegs_runs_both_sides_at_a_tiny_size(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/speed/mae_step.py"), "--jpeg_images", "24", "--work_dir",
                           str(tmp_path), "--image_size", "80", "--patch_size", "16", "--batch_size", "4",
                           "--warmup", "1", "--steps", "2", "--threads", "1"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "24 JPEGs at 80x80" in proc.stdout
    ratio = re.search(r"ratio hfssl / plain\s+([\d.]+)\s+([\d.]+)", proc.stdout)
    assert ratio and float(ratio.group(1)) > 0 and float(ratio.group(2)) > 0
    assert len(list((tmp_path / "jpegs_24").rglob("*.jpg"))) == 24
