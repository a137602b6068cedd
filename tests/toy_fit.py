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

from hfssl.config import parse
from hfssl.train import TrainArgs, fit, make_accelerator


@dataclass
class ToyArgs:
    sleep: float = 0.0
    dropout: float = 0.2
    noise: float = 0.05


@dataclass
class Out:
    loss: torch.Tensor


class Toy(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))

    def forward(self, x, y):
        return Out(loss=nn.functional.mse_loss(self.net(x).squeeze(-1), y))


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


def main(argv=None):
    train_args, toy = parse(TrainArgs, ToyArgs, args=argv)
    accelerator = make_accelerator(train_args)
    data = toy_data()

    def slow(model, step, total):
        time.sleep(toy.sleep)

    result = fit(accelerator, Toy(toy.dropout), train_args, train_data=lambda epoch: data, collate_fn=collate,
                 transform=lambda b, g: add_noise(b, g, toy.noise), on_step_end=slow)
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
                  f"{train_args.output_dir}/final.safetensors")
        print("FINAL_STEP", result.step)


if __name__ == "__main__":
    main(sys.argv[1:])
