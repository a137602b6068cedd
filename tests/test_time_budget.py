"""--max_train_minutes: the learning-rate schedule laid over training time, the run ended by the budget (or by
--max_steps first), a final evaluation, resume counting the time already spent, and the bad inputs. Time is a
fake clock (``hfssl.run_length.clock``) that advances only when a training micro-batch, an evaluation batch or a
checkpoint write "costs" it something: no test sleeps or depends on the machine's speed."""

from __future__ import annotations

import json
import math

import pytest
import torch
from bad_inputs import assert_user_error, run_recipe, snapshot
from safetensors.torch import load_file

from hfssl import run_length, train
from hfssl.checkpoint import run_settings
from hfssl.errors import run_cli
from hfssl.optim import build_scheduler
from hfssl.train import TrainArgs, fit, make_accelerator
from tests import toy_fit
from tests.toy_fit import Toy, add_noise, collate, toy_data

PEAK = 1e-2


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class Stopped(Exception):
    pass


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(run_length, "clock", fake)
    return fake


def budget_args(out, **overrides) -> TrainArgs:
    base = dict(output_dir=str(out), max_train_minutes=0.5, per_device_train_batch_size=8, logging_steps=1,
                eval_steps=10, save_steps=5, learning_rate=PEAK, warmup=0.2)
    return TrainArgs(**{**base, **overrides})


def run(args: TrainArgs, clock: FakeClock, costs=lambda i: 1.0, eval_cost: float = 0.0, stop_at: int = 0):
    """fit the toy model: training micro-batch ``i`` costs ``costs(i)`` seconds, an evaluation batch
    ``eval_cost``. Returns (FitResult, [(step, total) seen by on_step_end], [clock after each micro-batch])."""
    batches, hooks, times = [0], [], []

    def transform(batch, generator):
        clock.now += costs(batches[0])
        batches[0] += 1
        times.append(clock.now)
        return add_noise(batch, generator, 0.05)

    def eval_step(model, batch, generator):
        clock.now += eval_cost
        err = model.net(batch["x"]).squeeze(-1) - batch["y"]  # (B,)
        return {"sq": err**2, "n": torch.ones_like(err)}

    def on_step_end(model, step, total):
        hooks.append((step, total))
        if step == stop_at:
            raise Stopped  # the run is stopped mid-way (after its checkpoint at an earlier step)

    settings = run_settings(args)
    result = fit(make_accelerator(args, settings), Toy(0.2), args, train_data=toy_data(), collate_fn=collate,
                 transform=transform, eval_data=toy_data(16), eval_step=eval_step,
                 eval_summary=lambda t: {"mse": t["sq"] / t["n"]}, on_step_end=on_step_end, settings=settings)
    return result, hooks, times


def logged(out, key: str) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line[key] for line in lines if key in line}


def step_schedule_lrs(kind: str, warmup: float, steps: int) -> list[float]:
    """The reference: transformers' step schedule over ``steps``; element k is the lr after k steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    sched = build_scheduler(opt, kind, warmup, steps)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_steady_steps_give_the_step_schedule_and_the_run_ends_at_the_budget(tmp_path, clock, monkeypatch, kind):
    """1 s per step and a 30 s budget: the lrs are transformers' 30-step schedule, the run ends at step 30
    (not at num_epochs' 12 steps), evaluations (50 s per batch) and checkpoint writes (100 s) are not counted,
    a final evaluation runs, and on_step_end's total makes step / total the time fraction."""
    real_save = train.save_checkpoint

    def slow_save(*a, **k):
        clock.now += 100.0
        return real_save(*a, **k)

    monkeypatch.setattr(train, "save_checkpoint", slow_save)
    out = tmp_path / "run"
    result, hooks, _ = run(budget_args(out, lr_scheduler_type=kind, eval_steps=7), clock, eval_cost=50.0)
    assert result.step == 30
    lrs = logged(out, "lr")
    reference = step_schedule_lrs(kind, 0.2, 30)
    assert sorted(lrs) == list(range(1, 31))
    for step, lr in lrs.items():
        assert lr == pytest.approx(reference[step], abs=1e-12), step
    assert lrs[30] == 0.0  # the schedule is finished at the budget
    assert logged(out, "train_minutes")[30] == pytest.approx(0.5)
    assert set(logged(out, "eval_mse")) == {7, 14, 21, 28, 30}  # step intervals kept, a final one at the budget
    assert result.eval_metrics["eval_mse"] == logged(out, "eval_mse")[30]
    assert [s for s, _ in hooks] == list(range(1, 31))
    for step, total in hooks:
        assert step / total == pytest.approx(step / 30)
    state = json.loads((out / "checkpoints/step-30/trainer_state.json").read_text())
    assert state["train_seconds"] == 30.0 and state["settings"]["max_train_minutes"] == 0.5


def test_the_schedule_follows_the_clock_not_the_steps(tmp_path, clock):
    """Steps of uneven cost (1, 2, 3 s ... per micro-batch, 2 micro-batches per step): the lr after each step is
    the warmup + linear decay formula at (seconds so far) / budget; the run ends at the first step past 60 s."""
    out = tmp_path / "run"
    costs = lambda i: 1.0 + i % 3  # noqa: E731
    args = budget_args(out, max_train_minutes=1.0, gradient_accumulation_steps=2, per_device_train_batch_size=4,
                       warmup=0.25)
    result, hooks, times = run(args, clock, costs=costs)
    spent = [times[2 * k - 1] - 1000.0 for k in range(1, len(times) // 2 + 1)]  # seconds at the end of step k
    expected_steps = next(k for k, s in enumerate(spent, start=1) if s >= 60.0)
    assert result.step == expected_steps == len(spent)
    for step, lr in logged(out, "lr").items():
        p = min(spent[step - 1] / 60.0, 1.0)
        want = PEAK * (p / 0.25 if p < 0.25 else (1 - p) / 0.75)
        assert lr == pytest.approx(want, abs=1e-12), step
    for step, total in hooks:
        assert step / total == pytest.approx(min(spent[step - 1] / 60.0, 1.0))
    assert logged(out, "train_minutes")[result.step] == pytest.approx(spent[-1] / 60.0)


def test_max_steps_first_ends_the_run_with_a_finished_schedule(tmp_path, clock):
    """--max_steps 12 with a 30 s budget at 1 s per step: the run ends at step 12, the schedule laid over
    whichever end is nearer (here the steps), so it is transformers' 12-step schedule and ends at zero."""
    out = tmp_path / "run"
    result, hooks, _ = run(budget_args(out, max_steps=12, warmup=0.25), clock)  # 3 warmup steps, as transformers'
    assert result.step == 12
    reference = step_schedule_lrs("linear", 0.25, 12)
    for step, lr in logged(out, "lr").items():
        assert lr == pytest.approx(reference[step], abs=1e-12), step
    assert logged(out, "lr")[12] == 0.0 and all(total == pytest.approx(12) for _, total in hooks)


def test_a_resumed_run_counts_the_time_already_spent(tmp_path, clock):
    """Stopped at step 18 (checkpoint at 15, 15 s spent) and resumed on a clock that reads something else: the
    run ends when the total reaches the 30 s budget, at step 30, with the lrs and the weights of a run that was
    never stopped (bit for bit)."""
    straight, victim = tmp_path / "straight", tmp_path / "victim"
    run(budget_args(straight, eval_steps=0), clock)
    with pytest.raises(Stopped):
        run(budget_args(victim, eval_steps=0), clock, stop_at=18)
    saved = json.loads((victim / "checkpoints/step-15/trainer_state.json").read_text())
    assert saved["step"] == 15 and saved["train_seconds"] == 15.0
    clock.now = 123_456.0
    result, hooks, _ = run(budget_args(victim, eval_steps=0, resume=True), clock)
    assert result.step == 30 and hooks[0][0] == 16
    assert logged(victim, "lr") == logged(straight, "lr")
    assert logged(victim, "train_minutes")[30] == pytest.approx(0.5)
    a = {k: v for k, v in result.model.state_dict().items()}
    b = load_file(straight / "checkpoints/step-30/model.safetensors")
    for k in b:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("flags, culprits", [
    (["--max_train_minutes", "0"], ["--max_train_minutes"]),
    (["--max_train_minutes", "-1"], ["--max_train_minutes"]),
    (["--max_train_minutes", "nan"], ["--max_train_minutes"]),
    (["--max_train_minutes", "1", "--warmup", "100"], ["--warmup 100", "--max_train_minutes"]),
])
def test_bad_budget_is_one_line(tmp_path, capsys, flags, culprits):
    with pytest.raises(SystemExit) as exit_:
        run_cli(toy_fit.main, ["--output_dir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith("error: ")
    for culprit in culprits:
        assert culprit in err[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--max_train_minutes", "2"], []])
def test_resume_with_another_budget_is_one_line(tmp_path, clock, capsys, flags):
    """A budgeted run's checkpoint resumed with another budget, or none: one line naming the flag, nothing
    touched (the stored budget is checked before any data work)."""
    out = tmp_path / "run"
    common = ["--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "8",
              "--save_steps", "2", "--logging_steps", "2"]
    run_cli(toy_fit.main, [*common, "--max_train_minutes", "0.5"])  # the fake clock stands still: max_steps ends it
    before = snapshot(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(toy_fit.main, [*common, "--resume", *flags])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and last.startswith("error: --resume")
    assert "--max_train_minutes 0.5" in last and (not flags or "--max_train_minutes 2" in last)
    assert snapshot(out) == before


def test_every_recipe_gets_the_flag():
    """Through TrainArgs: listed by a recipe's --help, and a bad value is one line from the real script."""
    shown = run_recipe("bert_mlm.py", "--help")
    assert shown.returncode == 0 and "--max_train_minutes" in shown.stdout
    assert_user_error(run_recipe("mae.py", "--max_train_minutes", "-5"), "--max_train_minutes")


def test_no_budget_keeps_the_step_schedule(tmp_path, clock):
    """Without a budget the loop is the step loop: the lrs are transformers' schedule over max_steps, however
    the clock runs, and no train_minutes is logged."""
    out = tmp_path / "run"
    result, hooks, _ = run(budget_args(out, max_train_minutes=None, max_steps=8), clock, costs=lambda i: 1e4)
    reference = step_schedule_lrs("linear", 0.2, 8)
    assert result.step == 8 and [logged(out, "lr")[s] for s in range(1, 9)] == reference[1:]
    assert not logged(out, "train_minutes") and all(total == 8 for _, total in hooks)
    assert math.isclose(json.loads((out / "checkpoints/step-5/trainer_state.json").read_text())["train_seconds"],
                        5e4)
