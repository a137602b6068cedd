"""Fault injection on the shared loop (tests/toy_fit.py runs hfssl.train.fit as a real subprocess): kill -9 at
random points including inside a checkpoint write, damaged and missing checkpoint files, a full disk, a NaN
loss, --overwrite_output_dir / --resume semantics, and what a failed run leaves behind. Each checks the
promise in docs/DESIGN.md: bit-identical weights after resuming, one clear line for every fault, nothing
that completed lost."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from bad_inputs import assert_user_error, snapshot
from safetensors.torch import load_file

from hfssl.checkpoint import complete_checkpoints, latest_checkpoint, save_checkpoint
from hfssl.errors import Fault

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--max_steps", "16", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2",
       "--logging_steps", "1", "--save_steps", "2", "--save_total_limit", "2", "--learning_rate", "3e-3"]


def toy(out: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "tests/toy_fit.py"), "--output_dir", str(out), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a / "final.safetensors"), load_file(b / "final.safetensors")
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    toy(out, *TOY)
    return out


def kill_when(proc: subprocess.Popen, ready, deadline_s: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when the run ended first."""
    deadline = time.time() + deadline_s
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.time() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def start(out: Path, *extra) -> subprocess.Popen:
    resume = ["--resume"] if latest_checkpoint(out) is not None else []
    return subprocess.Popen([sys.executable, str(ROOT / "tests/toy_fit.py"), "--output_dir", str(out), *TOY, *extra,
                             *resume], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def half_written(out: Path) -> bool:
    """A checkpoint write is under way: a .tmp-step-N folder with at least one file in it."""
    return any(any(t.iterdir()) for t in (out / "checkpoints").glob(".tmp-step-*")) if (out / "checkpoints").is_dir() else False


def test_killed_inside_checkpoint_writes_resumes_to_identical_weights(straight, tmp_path):
    """Three kill -9s, each while a checkpoint is half on disk; resumed each time: same weights, bit for bit,
    and metrics.jsonl holds every step once."""
    victim = tmp_path / "victim"
    for _ in range(3):
        assert kill_when(start(victim, "--slow_save", "0.25"), lambda: half_written(victim))
    toy(victim, *TOY, *(["--resume"] if latest_checkpoint(victim) else []))
    same_weights(straight, victim)
    assert not list((victim / "checkpoints").glob(".tmp-*")), "the temporary folder of a killed write was left"
    assert steps_logged(victim) == steps_logged(straight)  # the killed runs' extra lines were dropped on resume


@pytest.mark.slow
def test_killed_at_random_points_many_times(straight, tmp_path):
    """Eight kill -9s at random moments (seeded), some inside checkpoint writes, some between them."""
    rng = random.Random(7)
    victim = tmp_path / "victim"
    for _ in range(8):
        proc = start(victim, "--slow_save", "0.1", "--sleep", "0.05")
        wait = rng.uniform(4.0, 9.0)  # process start-up (~4 s) plus some steps
        t0 = time.time()
        if not kill_when(proc, lambda t0=t0, wait=wait: time.time() - t0 > wait):
            break  # finished before the kill: nothing left to interrupt
    if not (victim / "final.safetensors").exists():
        toy(victim, *TOY, *(["--resume"] if latest_checkpoint(victim) else []))
    same_weights(straight, victim)


def test_damaged_newest_checkpoints_are_reported_and_the_previous_one_used(straight, tmp_path):
    """The three newest checkpoints damaged three ways (a truncated model file, a missing optimizer file, a cut
    trainer_state.json): each is named and set aside, step-10 is used, and the weights still end identical."""
    victim = tmp_path / "victim"
    toy(victim, *TOY, "--save_total_limit", "4")
    step = {p.name: p for p in complete_checkpoints(victim)}
    data = (step["step-16"] / "model.safetensors").read_bytes()
    (step["step-16"] / "model.safetensors").write_bytes(data[: len(data) // 3])
    (step["step-14"] / "optimizer.bin").unlink()
    (step["step-12"] / "trainer_state.json").write_text('{"step": 1')
    (victim / "final.safetensors").unlink()
    out = toy(victim, *TOY, "--save_total_limit", "4", "--resume")
    log = out.stdout + out.stderr
    for name in ("step-16", "step-14", "step-12"):
        assert f"checkpoint {step[name]} is damaged" in log
        assert (victim / "checkpoints" / f"damaged-{name}").is_dir()  # kept for inspection, never chosen again
    assert f"resumed from {step['step-10']} at step 10" in log
    same_weights(straight, victim)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    """A writer that fails like a full disk (after a partial file): one Fault naming the checkpoint, saying
    no space, the temporary folder gone, the previous checkpoint intact."""
    root = tmp_path / "checkpoints"
    (root / "step-2").mkdir(parents=True)
    (root / "step-2/trainer_state.json").write_text('{"step": 2}')
    before = snapshot(tmp_path)

    def full_disk(folder):
        Path(folder, "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder, "optimizer.bin")))

    accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None, save_state=full_disk)
    with pytest.raises(Fault) as err:
        save_checkpoint(accelerator, tmp_path, {"step": 4}, keep=2)
    message = str(err.value)
    assert "step-4" in message and "no space left" in message and "step-2 is intact" in message and "--resume" in message
    assert not (root / ".tmp-step-4").exists() and not (root / "step-4").exists()
    assert snapshot(tmp_path) == before


def _small_tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_disk_full_on_a_real_small_filesystem(tmp_path):
    """The same on a real full disk: a 512 KB tmpfs nearly filled before the run (skipped without mount rights)."""
    disk = tmp_path / "disk"
    if not _small_tmpfs(disk, 512):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights); the patched-writer test covers it")
    try:
        out = disk / "run"
        out.mkdir()
        (disk / "filler").write_bytes(b"\0" * (512 - 16) * 1024)  # 16 KB left: metrics fit, a 25 KB checkpoint does not
        proc = toy(out, *TOY, check=False)
        line = assert_user_error(proc, "checkpoint", "no space left")
        assert "step-2" in line and not list((out / "checkpoints").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=10)


def test_nan_loss_stops_with_one_line_and_keeps_the_checkpoints(tmp_path):
    out = tmp_path / "nan"
    proc = toy(out, *TOY, "--nan_at_step", "5", check=False)
    line = assert_user_error(proc, "the training loss is nan at step 5")
    assert "--learning_rate" in line
    assert [p.name for p in complete_checkpoints(out)] == ["step-4", "step-2"]
    assert not (out / "final.safetensors").exists()
    assert all(value is None or isinstance(value, (int, float)) for line in (out / "metrics.jsonl").read_text().splitlines()
               for value in json.loads(line).values())  # strict JSON: no NaN tokens


def test_overwrite_starts_a_truly_fresh_run_and_resume_continues_it(tmp_path):
    """Run A saves step-3 and step-6; run B (--overwrite_output_dir) must not keep or resume A's state."""
    out = tmp_path / "run"
    toy(out, *TOY, "--max_steps", "6", "--save_steps", "3")
    assert [p.name for p in complete_checkpoints(out)] == ["step-6", "step-3"]
    b = toy(out, *TOY, "--overwrite_output_dir", "--save_steps", "1", "--max_steps", "4", "--dropout", "0.1")
    assert "removed the earlier run's checkpoints" in b.stdout
    assert [p.name for p in complete_checkpoints(out)] == ["step-4", "step-3"]  # B's own, A's step-6 gone
    assert steps_logged(out) == [1, 2, 3, 4]  # A's lines gone
    resumed = toy(out, *TOY, "--save_steps", "1", "--max_steps", "4", "--dropout", "0.1", "--resume")
    assert "step-4" in resumed.stdout + resumed.stderr and "step-6" not in resumed.stdout + resumed.stderr


def test_resume_refusals(tmp_path):
    """--resume without a checkpoint, or with other data/shape settings, is one line; nothing is touched."""
    empty = tmp_path / "empty"
    assert_user_error(toy(empty, *TOY, "--resume", check=False), "--resume", "no complete checkpoint")
    assert not empty.exists()
    out = tmp_path / "run"
    toy(out, *TOY, "--max_steps", "4")
    before = snapshot(out)
    line = assert_user_error(toy(out, *TOY, "--max_steps", "6", "--dropout", "0.5", "--resume", check=False),
                             "step-4", "dropout 0.2 -> 0.5")
    assert "per_device_train_batch_size" not in line  # only what differs is named
    line = assert_user_error(toy(out, *TOY, "--per_device_train_batch_size", "4", "--resume", check=False),
                             "per_device_train_batch_size 8 -> 4")
    assert snapshot(out) == before
    assert_user_error(toy(out, *TOY, "--resume", "--overwrite_output_dir", check=False), "--resume",
                      "--overwrite_output_dir")


def test_what_a_failed_run_leaves_does_not_block_the_corrected_rerun(tmp_path):
    """A run that failed before its first checkpoint leaves only hfssl's early files: the rerun starts fresh.
    A folder with anything else in it (or a checkpoint) is still refused."""
    out = tmp_path / "run"
    (out / "tokenizer").mkdir(parents=True)
    (out / "tokenizer" / "vocab.txt").write_text("[PAD]\n")  # an interrupted tokenizer save
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    proc = toy(out, *TOY, "--max_steps", "2")
    assert "removed the earlier run's tokenizer, metrics.jsonl" in proc.stdout
    assert not (out / "tokenizer").exists() and steps_logged(out) == [1, 2]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert_user_error(toy(mine, *TOY, check=False), "--output_dir", "--overwrite_output_dir")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_save_total_limit_zero_is_refused(tmp_path):
    assert_user_error(toy(tmp_path / "z", *TOY, "--save_total_limit", "0", check=False), "--save_total_limit")
    assert not (tmp_path / "z").exists()


def test_interrupted_tokenizer_of_the_bert_recipe_is_retrained(tmp_path):
    """bert_mlm.py killed while saving its tokenizer (no checkpoint yet): the rerun trains a new one."""
    from bad_inputs import run_recipe

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(8):  # 2 held-out documents: the default objective (NSP) needs 2 per split
        (corpus / f"d{i}.txt").write_text(" ".join(f"The cat number {j} sat on mat {i}." for j in range(60)))
    out = tmp_path / "bert"
    (out / "tokenizer").mkdir(parents=True)
    (out / "tokenizer" / "tokenizer_config.json").write_text("{")  # cut mid-write
    proc = run_recipe("bert_mlm.py", "--corpus", corpus, "--output_dir", out, "--max_steps", "1", "--vocab_size", "200",
                      "--eval_fraction", "0.25", "--save_steps", "0", "--logging_steps", "1", "--eval_steps", "0",
                      "--per_device_train_batch_size", "4", "--cache_dir", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "removed the earlier run's tokenizer" in proc.stdout
    from transformers import AutoTokenizer

    assert "cat" in AutoTokenizer.from_pretrained(out / "model").get_vocab()


@pytest.mark.slow
def test_killed_during_data_preparation_leaves_a_cache_the_rerun_can_use(tmp_path):
    """kill -9 while datasets writes its cache (sentence splitting of a 6 MB corpus); the rerun (same cache)
    succeeds and builds the same number of instances as a run on a clean cache."""
    from bad_inputs import run_recipe

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = (ROOT / "hfssl/data/austen").glob("*.txt.gz")
    import gzip

    for i, path in enumerate(sorted(text)):
        (corpus / f"{i}.txt").write_text(gzip.open(path, "rt", encoding="utf-8").read())
    args = ["--corpus", corpus, "--max_steps", "1", "--save_steps", "0", "--eval_steps", "0",
            "--document_separator", "^CHAPTER ", "--preprocessing_num_proc", "1"]
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes/bert_mlm.py"), *map(str, args), "--output_dir",
                             str(tmp_path / "a"), "--cache_dir", str(cache)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert kill_when(proc, lambda: cache.is_dir() and any(p.is_file() for p in cache.rglob("*.arrow")), 300)
    rerun = run_recipe("bert_mlm.py", *args, "--output_dir", tmp_path / "a", "--cache_dir", cache, timeout=900)
    clean = run_recipe("bert_mlm.py", *args, "--output_dir", tmp_path / "b", "--cache_dir", tmp_path / "clean",
                       timeout=900)
    assert rerun.returncode == 0 and clean.returncode == 0, rerun.stderr[-2000:] + clean.stderr[-2000:]
    count = [next(line for line in p.stdout.splitlines() if line.startswith("corpus:")) for p in (rerun, clean)]
    assert count[0] == count[1]
    shutil.rmtree(cache, ignore_errors=True)
