"""`make pretrain` gives the run every core of a CPU-only machine (`accelerate launch` alone would give it one
thread), a user's own OMP_NUM_THREADS wins, and a run on one thread of several cores says so with the flag
that changes it. The thread count is read from the run's own report line (torch.get_num_threads() inside the
launched process), not from its speed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfssl.distributed import cpu_threads_report, usable_cores

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_pretrain(tmp_path: Path, name: str, omp: str | None) -> subprocess.CompletedProcess:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document {d} begins here. It has a second sentence about item {d}. "
                                  f"The third sentence ends it, number {d * 7}." for d in range(40)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(HF_HUB_OFFLINE="1", HFSSL_DEBUG="0", **({"OMP_NUM_THREADS": omp} if omp is not None else {}))
    args = (f"--corpus {corpus} --output_dir {tmp_path / name} --max_steps 1 --vocab_size 120 --min_frequency 1 --nsp false "
            "--max_seq_length 32 --per_device_train_batch_size 4 --eval_fraction 0 --save_steps 0 --logging_steps 1")
    # BIN: this interpreter's accelerate; STAMP empty: the installed environment is used as it is, never rebuilt
    return subprocess.run(["make", "-s", "--no-print-directory", "pretrain", f"BIN={BIN}", "STAMP=", f"ARGS={args}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def report_threads(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = re.search(r"running on cpu: 1 process, (\d+) CPU threads? each, (\d+) cores usable", proc.stdout)
    assert found, proc.stdout[-3000:]
    assert int(found.group(2)) == usable_cores()
    return int(found.group(1))


@pytest.mark.skipif(shutil.which("make") is None or not (BIN / "accelerate").exists(),
                    reason="needs make and accelerate's launcher beside this interpreter")
def test_make_pretrain_uses_every_core_unless_the_user_sets_omp_num_threads(tmp_path):
    cores = usable_cores()
    default = make_pretrain(tmp_path, "default", None)
    assert report_threads(default) == cores
    assert "note: training on 1 CPU thread" not in default.stdout
    mine = make_pretrain(tmp_path, "mine", "1")
    assert report_threads(mine) == 1
    if cores > 1:  # one thread of several cores: one line naming the launcher flag that changes it
        note = [x for x in mine.stdout.splitlines() if x.startswith("note: training on 1 CPU thread")]
        assert len(note) == 1 and f"--num_cpu_threads_per_process {cores}" in note[0]


def test_thread_report_notes_only_one_thread_of_several_cores_in_one_process_per_machine():
    assert len(cpu_threads_report("cpu", 1, 1, 1, 2)) == 2  # the case `accelerate launch` makes on a CPU box
    assert len(cpu_threads_report("cpu", 2, 2, 1, 2)) == 1  # two processes of one thread each use both cores
    assert len(cpu_threads_report("cpu", 1, 1, 1, 1)) == 1  # a one-core machine
    assert len(cpu_threads_report("cpu", 1, 1, 2, 2)) == 1
    assert len(cpu_threads_report("cuda", 1, 1, 1, 8)) == 1  # the GPU does the work
    assert cpu_threads_report("cpu", 2, 2, 4, 8)[0] == "running on cpu: 2 processes, 4 CPU threads each, 8 cores usable"
