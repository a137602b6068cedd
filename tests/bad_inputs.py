"""Harness of the table-driven bad-input tests: run a recipe as a user would and check the contract of
docs/DESIGN.md ("What hfssl promises"): exit code 2, the last line of stderr is ONE line
``error: <what>, <which file/row/flag>, <what to do>`` naming the culprit, no traceback, and every file
that existed before is untouched."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import traceback
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


_RECIPES: dict[str, object] = {}


def _recipe(script: str):
    """recipes/<script> imported once as a module (recipes are scripts, not a package)."""
    if script not in _RECIPES:
        name = f"bad_inputs_{Path(script).stem}"
        spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        _RECIPES[script] = module
    return _RECIPES[script]


def run_in_process(script: str, args: list, capsys) -> subprocess.CompletedProcess:
    """``run_cli(main, args)`` here, as the script's ``__main__`` block runs it; the exit code and the
    captured output come back as a CompletedProcess for :func:`assert_user_error`."""
    from hfssl.errors import run_cli

    capsys.readouterr()
    code = 0
    try:
        run_cli(_recipe(script).main, [str(a) for a in args])
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 (a traceback is what the check must report)
        traceback.print_exc()
        code = 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess([script, *args], code, out.out, out.err)
