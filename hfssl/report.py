"""A picture of a run: ``report.png``, drawn from ``metrics.jsonl``, for people and model cards.

One glance should answer "did it learn, did it overfit, was it fast": a grid of panels over optimizer
steps with the training losses, the learning rate, training and held-out (``eval_*``) accuracies,
held-out losses and perplexity, throughput, and any other logged scalar. Only panels with data are drawn.

The log is read forgivingly because it is written by runs that resume and crash: the last value per
(step, key) wins, non-finite and non-numeric values are missing, undecodable lines (a truncated last
line) are skipped. Drawing uses a private Agg canvas, never ``pyplot``, so the caller's matplotlib
state is untouched, and the picture is written to a temporary file then renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

DPI = 100
REPORT_NAME = "report.png"
_COLS = 3
_PANEL_SIZE = (4.0, 3.5)  # inches per panel: 3 x 2 panels make a 12 x 7 inch figure

# (title, y label, does a key belong here); a key goes to the first panel that takes it
_PANELS = (
    ("Training loss", "loss", lambda k: not k.startswith("eval_") and "loss" in k),
    ("Learning rate", "learning rate", lambda k: k == "lr"),
    ("Throughput", "per second", lambda k: k.endswith("_per_s")),
    ("Training accuracy", "accuracy", lambda k: not k.startswith("eval_") and "accuracy" in k),
    ("Held-out accuracy", "accuracy", lambda k: k.startswith("eval_") and "accuracy" in k),
    ("Held-out loss", "loss", lambda k: k.startswith("eval_") and "loss" in k),
    ("Held-out perplexity", "perplexity", lambda k: k.startswith("eval_") and "perplexity" in k),
    ("Other metrics", "value", lambda k: True),
)

Series = dict[str, tuple[list[int], list[float]]]


def _number(value) -> float | None:
    """A finite float, or None for NaN/Infinity, booleans, strings, lists, ints too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def load_series(path: str | Path) -> Series:
    """``{key: (steps, values)}`` from a metrics.jsonl, steps ascending, one value per step (the last logged)."""
    by_key: dict[str, dict[int, float]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # a line cut by a crash, or garbage
                continue
            step = record.get("step") if isinstance(record, dict) else None
            if isinstance(step, bool) or not isinstance(step, int):
                continue
            for key, value in record.items():
                if key != "step" and (x := _number(value)) is not None:
                    by_key.setdefault(key, {})[step] = x  # a resumed run's later line replaces the earlier
    return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in by_key.items()}


def group_panels(keys) -> dict[str, list[str]]:
    """Panel title -> the keys drawn in it, in the order of ``_PANELS``; empty panels left out."""
    groups: dict[str, list[str]] = {title: [] for title, _, _ in _PANELS}
    for key in sorted(keys):
        groups[next(title for title, _, takes in _PANELS if takes(key))].append(key)
    return {title: ks for title, ks in groups.items() if ks}


def figure_size(n_panels: int) -> tuple[float, float]:
    """Inches (width, height) of a grid of up to three panels a row."""
    cols = min(_COLS, n_panels)
    return cols * _PANEL_SIZE[0], math.ceil(n_panels / cols) * _PANEL_SIZE[1]


def draw_figure(series: Series, title: str):
    """A ``matplotlib.figure.Figure`` (on an Agg canvas) with one panel per group of ``series``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = group_panels(series)
    labels = {t: y for t, y, _ in _PANELS}
    fig = Figure(figsize=figure_size(len(groups)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    cols = min(_COLS, len(groups))
    for i, (panel, keys) in enumerate(groups.items()):
        ax = fig.add_subplot(math.ceil(len(groups) / cols), cols, i + 1)
        for key in keys:
            steps, values = series[key]
            sparse = key.startswith("eval_") or len(steps) < 3  # evaluations are few: show each point
            ax.plot(steps, values, marker="o" if sparse else None, markersize=3, linewidth=1.3,
                    label=f"{key} (last {_short(values[-1])})")
        _style(ax, panel, labels[panel], keys)
    last = max(xs[-1] for xs, _ in series.values())
    fig.suptitle(f"{title} - step {last}", fontsize=13)
    return fig


def _short(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"  # 12,470 tokens/s rather than 1.247e+04


def _style(ax, panel: str, ylabel: str, keys: list[str]):
    if panel == "Throughput":  # tokens_per_s -> "tokens / s"
        ylabel = " / ".join(sorted({k.removesuffix("_per_s") for k in keys})) + " per second"
    if panel == "Held-out perplexity" and ax.dataLim.y0 > 0:  # log only where every value can be drawn
        ax.set_yscale("log")
    ax.set_title(panel, fontsize=11)
    ax.set_xlabel("optimizer step", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.8)


def write_report(output_dir: str | Path, title: str | None = None) -> Path | None:
    """Draw ``output_dir/metrics.jsonl`` into ``output_dir/report.png``; None (nothing written) without data."""
    out = Path(output_dir)
    metrics = out / "metrics.jsonl"
    if not metrics.is_file():
        return None
    series = load_series(metrics)
    if not series:
        return None
    fig = draw_figure(series, title or out.resolve().name)
    target = out / REPORT_NAME
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".report-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the picture is meant to be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def report_markdown(filename: str = REPORT_NAME) -> str:
    """A model-card snippet that embeds the report picture, with a one-line caption."""
    return (f"![training report]({filename})\n\n"
            "*Training and held-out metrics over optimizer steps, drawn by hfssl from `metrics.jsonl`.*\n")
