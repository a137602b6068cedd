"""Harness of the table-driven bad-input tests: run a recipe as a user would and check the contract of
docs/DESIGN.md ("What hfssl promises"): exit code 2, the last line of stderr is ONE line
``error: <what>, <which file/row/flag>, <what to do>`` naming the culprit, no traceback, and every file
that existed before is untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(script: str, *args, cwd: Path | None = None, timeout: int = 300, env: dict | None = None):
    """``python recipes/<script> args...`` with one thread, offline; returns the CompletedProcess."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                   "HFSSL_DEBUG": "0", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "recipes" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout, env=environment)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` -> its sha256 (what 'untouched' is checked against)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_user_error(proc: subprocess.CompletedProcess, *culprits: str) -> str:
    """Exit code 2, no traceback, and a last stderr line ``error: ...`` that contains every culprit."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    assert proc.returncode == 2, f"exit code {proc.returncode}\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith("error: "), f"last stderr line is not an error line: {last!r}\n{proc.stderr[-3000:]}"
    for culprit in culprits:
        assert culprit in last, f"{culprit!r} not named in: {last}"
    return last
