"""A tiny model trained with hfssl.train.fit, run as a subprocess by the loop tests.

python tests/toy_fit.py OUTPUT_DIR [--resume] [--max_steps N] [--sleep S] [--accum K] [--batch B]
Writes OUTPUT_DIR/final.safetensors with the final weights.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from datasets import Dataset
from safetensors.torch import save_file
from torch import nn

from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import run_cli
from hfssl.train import TrainArgs, fit, make_accelerator


@dataclass
class ToyArgs:
    sleep: float = 0.0
    dropout: float = 0.2
    noise: float = 0.05
    slow_save: float = 0.0  # seconds to pause inside each checkpoint write (fault tests kill the run there)
    nan_at_step: int = 0  # make the loss NaN from this optimizer step on (fault tests)


@dataclass
class Out:
    loss: torch.Tensor


class Toy(nn.Module):
    def __init__(self, dropout: float, nan_at_step: int = 0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.nan_at_step, self.steps = nan_at_step, 0

    def forward(self, x, y):
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        if self.nan_at_step and self.steps + 1 >= self.nan_at_step:
            loss = loss * float("nan")
        return Out(loss=loss)


def toy_data(n: int = 96) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8) + 0.1 * torch.randn(n, generator=g)
    return Dataset.from_dict({"x": x.tolist(), "y": y.tolist()})


def collate(rows):
    return {"x": torch.tensor([r["x"] for r in rows]), "y": torch.tensor([r["y"] for r in rows])}


def add_noise(batch, generator, scale):
    """A random per-step transform, like MLM masking: must be replayed exactly on resume."""
    noise = torch.randn(batch["x"].shape, generator=generator, device=batch["x"].device)
    return {**batch, "x": batch["x"] + scale * noise}


def slow_writes(seconds: float) -> None:
    """Pause ``seconds`` after each file a checkpoint write puts on disk (model, optimizer, scheduler ...),
    so a test can kill the run with a checkpoint half written."""
    import accelerate.checkpointing as checkpointing

    write = checkpointing.save

    def paused(*args, **kwargs):
        result = write(*args, **kwargs)
        time.sleep(seconds)
        return result

    checkpointing.save = paused


def main(argv=None):
    train_args, toy = parse(TrainArgs, ToyArgs, args=argv)
    settings = {**run_settings(train_args), "dropout": toy.dropout, "noise": toy.noise}  # not the fault knobs
    accelerator = make_accelerator(train_args, settings)
    data = toy_data()
    if toy.slow_save:
        slow_writes(toy.slow_save)
    model = Toy(toy.dropout, toy.nan_at_step)

    def slow(m, step, total):
        m.steps = step
        time.sleep(toy.sleep)

    result = fit(accelerator, model, train_args, train_data=lambda epoch: data, collate_fn=collate,
                 transform=lambda b, g: add_noise(b, g, toy.noise), on_step_end=slow, settings=settings)
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
                  f"{train_args.output_dir}/final.safetensors")
        print("FINAL_STEP", result.step)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
