import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ACCELERATE_DISABLE_RICH", "1")


@pytest.fixture
def run_script():
    """Run a repo script in a subprocess with this interpreter; returns CompletedProcess (checked)."""
    import subprocess

    def run(script, *args, check=True, timeout=600, env=None):
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    return run
