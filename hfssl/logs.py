"""What the training loop logs: metrics to ``metrics.jsonl`` and Accelerate's trackers, running means,
throughput (tokens/s for text, samples/s otherwise)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator


class MetricsLogger:
    """Writes metrics to ``metrics.jsonl`` in the output folder and to Accelerate's trackers.

    The file is strict JSON (a non-finite value is written as ``null``). A resumed run first drops the lines
    after its checkpoint's step (the killed run logged them, and the resumed run logs those steps again).
    """

    def __init__(self, accelerator: Accelerator, output_dir: Path, resumed_at: int | None = None):
        self.accelerator, self.path = accelerator, output_dir / "metrics.jsonl"
        if resumed_at is not None and accelerator.is_main_process and self.path.is_file():
            keep = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resumed_at]
            tmp = self.path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, self.path)

    def log(self, metrics: dict[str, float], step: int):
        self.accelerator.log(metrics, step=step)
        if self.accelerator.is_main_process:
            clean = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in metrics.items()}
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **clean}, allow_nan=False) + "\n")


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a line that cannot be read (cut by a crash) counts as after any."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def scalar_metrics(output: Any) -> dict[str, float]:
    """The 0-d tensors and floats of a model output (``loss``, ``mlm_accuracy`` ...)."""
    items = output.items() if hasattr(output, "items") else vars(output).items()
    out = {}
    for k, v in items:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = float(v.detach())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def count_units(batch) -> tuple[str, int]:
    """What throughput counts: real tokens of a text batch (attention mask sum), else examples."""
    if isinstance(batch, dict) and "attention_mask" in batch:
        return "tokens", int(batch["attention_mask"].sum())
    if isinstance(batch, dict) and "input_ids" in batch:  # a text batch without padding (no mask needed)
        return "tokens", batch["input_ids"].numel()
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return "samples", len(first)


def summarize_running(running: dict, unit: str, count: int, seconds: float, scheduler) -> dict[str, float]:
    """Means of the metrics since the last log, throughput (``tokens_per_s``) and the learning rate."""
    n = running.pop("_n", 1)
    metrics = {k: v / n for k, v in running.items()}
    metrics[f"{unit}_per_s"] = count / max(seconds, 1e-9)
    metrics["lr"] = scheduler.get_last_lr()[0]
    return metrics
