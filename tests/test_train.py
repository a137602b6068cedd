"""The shared training loop: exact resume after a kill, accumulation, schedules, checkpoints, guards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hfssl.checkpoint import latest_checkpoint, prepare_output_dir
from hfssl.optim import build_scheduler, param_groups, warmup_steps_from
from hfssl.train import TrainArgs

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--max_steps", "16", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2",
       "--logging_steps", "2", "--save_steps", "2", "--save_total_limit", "2", "--learning_rate", "3e-3"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow  # the fast suite kills inside checkpoint writes (test_faults.py); this kills between them
def test_killed_run_resumes_to_identical_weights(tmp_path, run_script):
    """SIGKILL a run mid-way, resume it: the final weights equal an uninterrupted run's, bit for bit."""
    run_script("tests/toy_fit.py", "--output_dir", tmp_path / "straight", *TOY)
    victim = tmp_path / "victim"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/toy_fit.py"), "--output_dir", str(victim), *TOY,
                             "--sleep", "0.4"], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(victim) is None or int(latest_checkpoint(victim).name.split("-")[1]) < 6:
        assert proc.poll() is None and time.time() < deadline, "toy run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(victim).name.split("-")[1])
    assert killed_at < 16 and not (victim / "final.safetensors").exists()
    out = run_script("tests/toy_fit.py", "--output_dir", victim, *TOY, "--resume")
    assert f"resumed from {victim / 'checkpoints'}" in out.stdout + out.stderr
    a, b = load_file(tmp_path / "straight/final.safetensors"), load_file(victim / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the pruning after resume kept exactly the newest two checkpoints
    assert sorted(p.name for p in (victim / "checkpoints").iterdir()) == ["step-14", "step-16"]


def test_accumulation_matches_large_batch(tmp_path, run_script):
    """2 micro-batches of 8 with accumulation give the same update as one batch of 16 (no dropout)."""
    common = ["--max_steps", "6", "--logging_steps", "3", "--save_steps", "0", "--dropout", "0", "--noise", "0",
              "--learning_rate", "1e-2"]
    run_script("tests/toy_fit.py", "--output_dir", tmp_path / "big", *common, "--per_device_train_batch_size", "16")
    run_script("tests/toy_fit.py", "--output_dir", tmp_path / "acc", *common, "--per_device_train_batch_size", "8",
               "--gradient_accumulation_steps", "2")
    big, acc = load_file(tmp_path / "big/final.safetensors"), load_file(tmp_path / "acc/final.safetensors")
    for k in big:
        # same shuffled order, so the same 16 examples per step; only float summation order differs
        torch.testing.assert_close(big[k], acc[k], atol=1e-5, rtol=1e-5)


def test_checkpoint_guard_and_temp_folders(tmp_path):
    (tmp_path / "checkpoints/step-3").mkdir(parents=True)
    (tmp_path / "checkpoints/step-3/trainer_state.json").write_text(json.dumps({"step": 3}))
    (tmp_path / "checkpoints/.tmp-step-9").mkdir()  # a crash mid-save: never chosen
    (tmp_path / "checkpoints/step-7").mkdir()  # no trainer_state.json: incomplete, never chosen
    assert latest_checkpoint(tmp_path).name == "step-3"
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_output_dir(tmp_path, resume=False, overwrite=False)
    assert prepare_output_dir(tmp_path, resume=True, overwrite=False) == tmp_path


def test_no_weight_decay_on_bias_and_norm():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(10, 4))
    decay, plain = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in plain["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_warmup_then_decay(kind):
    import math

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, kind, warmup=0.1, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert warmup_steps_from(0.1, 100) == 10 and warmup_steps_from(25, 100) == 25
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    expected = (1 - 0.5) if kind == "linear" else 0.5 * (1 + math.cos(math.pi * 0.5))
    assert lrs[55] == pytest.approx(expected)


def test_the_next_epoch_is_drawn_ahead_once_an_epoch_has_started(tmp_path):
    """fit asks for epoch e + 1 after epoch e's first batch is loaded (so loader workers are forked before any
    builder thread starts), and not in the last epoch the run reaches."""
    from hfssl.train import fit, make_accelerator
    from tests.toy_fit import Toy, collate, toy_data

    args = TrainArgs(output_dir=str(tmp_path / "run"), max_steps=15, per_device_train_batch_size=16,
                     logging_steps=5, save_steps=0, learning_rate=1e-3)
    events, data = [], toy_data()  # 96 rows: 6 steps per epoch, so epochs 0, 1, 2 (part of it)

    def epoch_data(epoch):
        events.append(("data", epoch))
        return data

    def steps(model, step, total):
        events.append(("step", step))

    fit(make_accelerator(args), Toy(0.0), args, train_data=epoch_data, draw_ahead=lambda e: events.append(("ahead", e)),
        collate_fn=collate, on_step_end=steps)
    expected = [("data", 0), ("ahead", 1), *[("step", i) for i in range(1, 7)], ("data", 1), ("ahead", 2),
                *[("step", i) for i in range(7, 13)], ("data", 2), *[("step", i) for i in range(13, 16)]]
    assert events == expected


def test_train_args_validation():
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        TrainArgs(lr_scheduler_type="step")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainArgs(mixed_precision="fp8")


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tmp_path, run_script):
    """--torch_compile true (inductor, here on the CPU) trains the toy model to the same weights as eager."""
    common = ["--max_steps", "4", "--per_device_train_batch_size", "8", "--save_steps", "0", "--dropout", "0",
              "--noise", "0", "--learning_rate", "1e-2", "--logging_steps", "2"]
    run_script("tests/toy_fit.py", "--output_dir", tmp_path / "eager", *common)
    run_script("tests/toy_fit.py", "--output_dir", tmp_path / "compiled", *common, "--torch_compile", "true")
    eager, compiled = load_file(tmp_path / "eager/final.safetensors"), load_file(tmp_path / "compiled/final.safetensors")
    assert eager.keys() == compiled.keys()
    for k in eager:
        torch.testing.assert_close(eager[k], compiled[k], atol=1e-5, rtol=1e-4)
