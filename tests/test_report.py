"""report.png from metrics.jsonl: forgiving reading, the plotted data, atomic writes; TensorBoard logging."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from hfssl import report
from hfssl.report import draw_figure, figure_size, group_panels, load_series, report_markdown, write_report


def _records() -> list[dict]:
    """A run logging every 10 steps, evaluating every 50, killed after step 60 and resumed from step 50."""
    records = []
    for step in range(10, 61, 10):
        records.append({"step": step, "loss": 5.0 - step / 50, "mlm_accuracy": step / 200, "lr": 1e-4 * step / 60,
                        "tokens_per_s": 1000.0 + step})
        if step % 50 == 0:
            records.append({"step": step, "eval_mlm_accuracy": step / 150, "eval_mlm_loss": 4.5 - step / 60,
                            "eval_perplexity": math.exp(4.5 - step / 60)})
    # resumed from the step-50 checkpoint: step 60 is logged again, slightly differently; the last one wins
    for step in range(60, 101, 10):
        records.append({"step": step, "loss": 4.9 - step / 50, "mlm_accuracy": step / 190, "lr": 1e-4 * (1 - step / 200),
                        "tokens_per_s": 900.0 + step})
        if step % 50 == 0:
            records.append({"step": step, "eval_mlm_accuracy": step / 140, "eval_mlm_loss": 4.4 - step / 60,
                            "eval_perplexity": math.exp(4.4 - step / 60)})
    records[-3]["loss"] = float("nan")  # step 90 diverged for a moment
    records[-2]["tokens_per_s"] = float("inf")  # step 100: a zero-length timer
    return records


def _write(folder: Path, records: list[dict], tail: str = '{"step": 110, "loss": 1.2') -> Path:
    """Python's json writes NaN / Infinity as is; ``tail`` is the line a crash cut short."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def _expected(records: list[dict]) -> dict:
    """Brute force: per key, every step with a finite value, taking the last such record for that step."""
    expected = {}
    keys = {k for r in records for k in r if k != "step"}
    for key in keys:
        finite = [r for r in records if key in r and math.isfinite(r[key])]
        steps = sorted({r["step"] for r in finite})
        values = [[r[key] for r in finite if r["step"] == s][-1] for s in steps]
        if steps:
            expected[key] = (steps, values)
    return expected


def test_load_series_dedups_drops_non_finite_and_skips_truncated(tmp_path):
    records = _records()
    series = load_series(_write(tmp_path, records))
    assert series == _expected(records)
    # spelled out for the interesting cases
    assert series["loss"][0] == [10, 20, 30, 40, 50, 60, 70, 80, 100]  # 90 was NaN, 110 was cut off
    assert series["loss"][1][5] == pytest.approx(4.9 - 60 / 50)  # the resumed run's step 60
    assert series["tokens_per_s"][0][-1] == 90 and series["eval_perplexity"][0] == [50, 100]


def test_report_png_draws_exactly_the_input(tmp_path):
    records = _records()
    pyplot_before = "matplotlib.pyplot" in sys.modules
    path = write_report(_write(tmp_path, records).parent, title="toy run")
    assert path == tmp_path / "report.png"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        # 7 panels: training loss, lr, throughput, training acc, held-out acc, held-out loss, perplexity
        assert figure_size(7) == (12.0, 10.5)
        assert im.size == (1200, 1050)
    if not pyplot_before:
        assert "matplotlib.pyplot" not in sys.modules  # the caller's pyplot state is never touched

    expected = _expected(records)
    fig = draw_figure(load_series(tmp_path / "metrics.jsonl"), "toy run")
    plotted = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            plotted[line.get_label().split(" (last")[0]] = (ax.get_title(), list(line.get_xdata()),
                                                             list(line.get_ydata()))
    assert {k: v[1:] for k, v in plotted.items()} == expected
    assert {k: v[0] for k, v in plotted.items()} == {
        "loss": "Training loss", "lr": "Learning rate", "tokens_per_s": "Throughput",
        "mlm_accuracy": "Training accuracy", "eval_mlm_accuracy": "Held-out accuracy",
        "eval_mlm_loss": "Held-out loss", "eval_perplexity": "Held-out perplexity"}
    assert fig._suptitle.get_text() == "toy run - step 100"


def test_other_losses_share_the_training_loss_panel_and_unknown_keys_are_kept():
    groups = group_panels(["loss", "mlm_loss", "nsp_loss", "nsp_accuracy", "embed_std", "samples_per_s",
                           "eval_knn_accuracy", "eval_loss"])
    assert groups == {"Training loss": ["loss", "mlm_loss", "nsp_loss"], "Throughput": ["samples_per_s"],
                      "Training accuracy": ["nsp_accuracy"], "Held-out accuracy": ["eval_knn_accuracy"],
                      "Held-out loss": ["eval_loss"], "Other metrics": ["embed_std"]}
    assert figure_size(len(groups)) == (12.0, 7.0)


def test_odd_lines_are_skipped_not_raised(tmp_path):
    lines = ["", "[1, 2]", '"text"', "null", '{"step": "3", "loss": 1}', '{"step": true, "loss": 1}',
             '{"step": 4, "loss": true, "name": "bert", "hist": [1, 2], "huge": 1e400, "big": ' + "9" * 400 + "}",
             "[" * 100_000, '{"step": 5, "loss": 0.5, "eval_perplexity": 0}', "\udcff"]
    (tmp_path / "metrics.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n\xff\xfe\n")
    assert load_series(tmp_path / "metrics.jsonl") == {"loss": ([5], [0.5]), "eval_perplexity": ([5], [0.0])}
    path = write_report(tmp_path)  # a perplexity of 0 on a log axis is masked, not an error
    with Image.open(path) as im:
        assert im.size == (800, 350)


@pytest.mark.parametrize("content", [None, '{"step": 1}\n', '{"step": 1, "loss": NaN}\n{"step": 2, "lr": "x"}\n', ""])
def test_nothing_to_plot_writes_nothing(tmp_path, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    assert write_report(tmp_path) is None
    assert not (tmp_path / "report.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["metrics.jsonl"])


def test_existing_report_is_replaced_and_no_temp_file_is_left(tmp_path, monkeypatch):
    _write(tmp_path, _records())
    (tmp_path / "report.png").write_bytes(b"old picture")
    assert write_report(tmp_path) == tmp_path / "report.png"
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "report.png"]

    # a failure while drawing surfaces, leaves the previous picture whole and no temp file behind
    (tmp_path / "report.png").write_bytes(b"old picture")
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(tmp_path)
    assert (tmp_path / "report.png").read_bytes() == b"old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "report.png"]


def test_report_markdown():
    md = report_markdown()
    assert md.startswith("![training report](report.png)\n") and len(md.strip().splitlines()) == 3
    assert "![training report](figures/run.png)" in report_markdown("figures/run.png")
    assert report.__doc__ and "report.png" in report.__doc__


def test_fit_reports_to_tensorboard(tmp_path, run_script):
    """``--report_to tensorboard``: event files under output_dir hold the same ``loss`` as metrics.jsonl."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install hfssl[tracking])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_script("tests/toy_fit.py", "--output_dir", out, "--max_steps", "4", "--per_device_train_batch_size", "8",
               "--logging_steps", "2", "--save_steps", "0", "--report_to", "tensorboard", timeout=120)
    events = sorted(out.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {out}: {sorted(p.relative_to(out) for p in out.rglob('*'))}"
    logged = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        if "loss" in acc.Tags()["scalars"]:
            logged.update({e.step: e.value for e in acc.Scalars("loss")})
    steps, losses = load_series(out / "metrics.jsonl")["loss"]
    assert steps == [2, 4] and sorted(logged) == steps
    assert [logged[s] for s in steps] == pytest.approx(losses, rel=1e-6)  # TensorBoard stores float32
