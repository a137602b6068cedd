"""Shared by the side-by-side step benchmarks (mae_step.py, contrastive_step.py): the plain side's PNG dataset
and the timing helpers."""

from __future__ import annotations

import io
import time

import numpy as np
import torch


def png_dataset(x: np.ndarray):
    """``(N, H, W)`` uint8 images as a ``datasets`` ``Image`` column of PNG files, as a Hub dataset holds them."""
    import datasets
    from PIL import Image

    pngs = []
    for im in x:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    return datasets.Dataset.from_dict({"image": pngs}, features=datasets.Features({"image": datasets.Image()}))


def sync(device) -> None:
    """Wait for queued GPU work so that a wall-clock reading covers it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def data_rate(loader, transform, device, batches: int, key: str) -> float:
    """Images/s of ``loader`` (+ the per-batch ``transform`` on ``device``) alone, over ``batches`` batches
    after one warm-up batch; ``key`` names the batch entry whose length counts the images."""
    n, start = 0, None
    for i, batch in enumerate(loader):
        batch = {k: v.to(device) for k, v in batch.items()}
        if transform is not None:
            batch = transform(batch, torch.Generator(device=device).manual_seed(i))
        sync(device)
        if i == 0:
            start = time.perf_counter()
        else:
            n += len(batch[key])
        if i == batches:
            break
    return n / (time.perf_counter() - start)
