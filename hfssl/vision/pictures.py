"""Pictures of what an MAE sees and rebuilds: a PNG grid saved (and logged) at every evaluation.

One row per image, four columns: the original, the visible patches (dropped ones grey), the
prediction for every patch, and the prediction pasted into the dropped patches next to the visible ones
(the picture in MAE's paper). Fixed images and fixed masking noise, so the grids of a run are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

_GAP = 2  # pixels of white between cells


def denormalize_to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised ``(B, C, H, W)`` -> ``(B, H, W, C)`` uint8 on the CPU."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    pixels = ((images.float() * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu()


def reconstruction_grid(original: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor,
                        mean: Sequence[float], std: Sequence[float], min_cell: int = 96) -> np.ndarray:
    """``original`` / ``predicted`` normalised ``(B, C, H, W)``, ``mask`` ``(B, 1, H, W)`` (1 = dropped)
    -> an ``(rows, cols, 3)`` uint8 picture, cells enlarged (nearest) to at least ``min_cell`` pixels."""
    mask = mask.to(original.dtype)
    grey = torch.zeros_like(original)  # the mean colour after normalisation
    columns = [original, original * (1 - mask) + grey * mask, predicted, original * (1 - mask) + predicted * mask]
    cells = [denormalize_to_uint8(c, mean, std).numpy() for c in columns]  # 4 x (B, H, W, C)
    B, H, W, _ = cells[0].shape
    zoom = max(1, -(-min_cell // H))
    h, w = H * zoom, W * zoom
    grid = np.full((B * (h + _GAP) + _GAP, 4 * (w + _GAP) + _GAP, 3), 255, dtype=np.uint8)
    for col, cell in enumerate(cells):
        big = cell.repeat(zoom, axis=1).repeat(zoom, axis=2)  # (B, h, w, C)
        for row in range(B):
            top, left = _GAP + row * (h + _GAP), _GAP + col * (w + _GAP)
            grid[top : top + h, left : left + w] = big[row]
    return grid


class ReconstructionPictures:
    """An ``on_evaluate`` hook for ``fit``: writes ``out_dir/reconstructions/step-N.png`` for fixed images
    and noise (main process only) and logs the picture to the active trackers."""

    def __init__(self, accelerator, pixels: torch.Tensor, noise: torch.Tensor, views, out_dir: str | Path):
        self.accelerator, self.views = accelerator, views
        self.pixels, self.noise = pixels, noise  # (K, 3, S, S) uint8, (K, L)
        self.folder = Path(out_dir) / "reconstructions"

    def __call__(self, model, step: int, metrics: dict | None = None) -> Path | None:
        if not self.accelerator.is_main_process:
            return None
        device = next(model.parameters()).device
        original = self.views(self.pixels.to(device))  # (K, 3, S, S) normalised, never augmented
        was_training = model.training
        model.eval()
        predicted, mask = model.reconstruct(original, self.noise.to(device))
        model.train(was_training)
        grid = reconstruction_grid(original, predicted, mask, self.views.mean, self.views.std)
        return save_picture(self.accelerator, grid, self.folder, step, "reconstructions")


def image_rows_grid(rows: Sequence[torch.Tensor], min_cell: int = 64) -> np.ndarray:
    """Rows of images ``(N, C, S, S)`` in [-1, 1] (generative models' pixels) -> one ``(H, W, 3)`` uint8 picture,
    a row per tensor, cells enlarged (nearest) to at least ``min_cell`` pixels."""
    cells = [denormalize_to_uint8(r.clamp(-1, 1), (0.5,) * r.shape[1], (0.5,) * r.shape[1]).numpy() for r in rows]
    n, (H, W) = max(len(c) for c in cells), cells[0].shape[1:3]
    zoom = max(1, -(-min_cell // H))
    h, w = H * zoom, W * zoom
    grid = np.full((len(cells) * (h + _GAP) + _GAP, n * (w + _GAP) + _GAP, 3), 255, dtype=np.uint8)
    for row, cell in enumerate(cells):
        big = cell.repeat(zoom, axis=1).repeat(zoom, axis=2)
        for col in range(len(big)):
            top, left = _GAP + row * (h + _GAP), _GAP + col * (w + _GAP)
            grid[top: top + h, left: left + w] = big[col][..., :3] if big.shape[-1] >= 3 else big[col]
    return grid


def save_picture(accelerator, grid: np.ndarray, folder: Path, step: int, name: str) -> Path:
    """Write ``folder/step-N.png`` (main process only) and log it to the trackers that take images."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step}.png"
    Image.fromarray(grid).save(path)
    for tracker in accelerator.trackers:
        try:
            if tracker.name == "tensorboard":
                tracker.log_images({name: grid[None]}, step=step, dataformats="NHWC")
            else:
                tracker.log_images({name: [grid]}, step=step)
        except (AttributeError, NotImplementedError, TypeError):  # a tracker without images
            pass
    return path
