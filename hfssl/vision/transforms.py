"""Batched image views on the training device: random resized crop + flip as one ``grid_sample``.

torchvision's ``RandomResizedCrop`` and ``RandomHorizontalFlip`` work one image at a time and draw from
torch's global RNG. Here the crop boxes (drawn exactly as torchvision draws them) and the flips come
from the generator the training loop seeds per step, so a resumed run sees the same views, and the
whole batch is cropped, resized and flipped by a single ``grid_sample`` on uint8 input moved to the
device as is (4x less transfer than float). The result equals torchvision's
``resized_crop(..., antialias=False)`` + ``hflip`` except within half an input pixel of the crop
border, where torchvision repeats the edge pixel and this reads the real neighbouring pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hfssl.vision.data import ImageData
from hfssl.vision.encoded import ENCODED, ROW, SOURCE
from hfssl.vision.loader import PIXELS, DecodeInWorkers, pixels_from_bytes


@dataclass
class AugmentArgs:
    """The geometric augmentation of training images, the one crop / flip argument set of every image recipe:
    a random resized crop and a horizontal flip (MAE's and fine-tuning's whole augmentation; the first step
    of each contrastive view, before the colour operations of :class:`hfssl.vision.views.ViewArgs`)."""

    augment: bool = field(default=True, metadata={"help": "Random resized crop + horizontal flip while training."})
    crop_min_scale: float = field(default=0.2, metadata={"help": "Smallest crop, as a fraction of the image area."})
    crop_max_scale: float = field(default=1.0, metadata={"help": "Largest crop, as a fraction of the image area."})
    hflip: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})

    def __post_init__(self):
        if not 0 < self.crop_min_scale <= self.crop_max_scale <= 1:
            raise ValueError(f"need 0 < crop_min_scale <= crop_max_scale <= 1, got {self.crop_min_scale}, "
                             f"{self.crop_max_scale}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip={self.hflip} must be a probability")


def random_resized_crop_boxes(n: int, height: int, width: int, generator: torch.Generator,
                              scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """``(n, 4)`` integer boxes ``(top, left, h, w)`` drawn like ``RandomResizedCrop.get_params``:
    up to ``tries`` (area, aspect) draws per image, the first that fits wins, else a centre crop."""
    device = generator.device
    area = height * width * torch.empty(n, tries, device=device).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                              generator=generator)
    aspect = log_ratio.exp()
    w = (area * aspect).sqrt().round()  # (n, tries)
    h = (area / aspect).sqrt().round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(-1, keepdim=True)  # (n, 1) first draw that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    # the centre-crop fallback of torchvision, for images where no draw fits
    in_ratio = width / height
    fw = width if in_ratio <= max(ratio) else round(height * max(ratio))
    fh = height if in_ratio >= min(ratio) else round(width / min(ratio))
    ok = fits.any(-1)
    w, h = torch.where(ok, w, float(fw)), torch.where(ok, h, float(fh))
    u = torch.rand(n, 2, device=device, generator=generator)
    top = torch.where(ok, (u[:, 0] * (height - h + 1)).floor(), float((height - fh) // 2))
    left = torch.where(ok, (u[:, 1] * (width - w + 1)).floor(), float((width - fw) // 2))
    return torch.stack([top, left, h, w], dim=-1).long()


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None):
    """Crop ``boxes`` ``(B, 4)`` out of ``images`` ``(B, C, H, W)``, resize to ``size`` (bilinear) and
    mirror the rows where ``flip`` ``(B,)`` is true: ``(B, C, size, size)`` float."""
    B, _, H, W = images.shape
    top, left, h, w = boxes.to(images.device, torch.float32).unbind(-1)  # (B,) each
    centres = torch.arange(size, device=images.device, dtype=torch.float32) + 0.5  # (S,) output pixel centres
    xs = left[:, None] + centres * (w[:, None] / size) - 0.5  # (B, S) source column, in pixels
    ys = top[:, None] + centres * (h[:, None] / size) - 0.5  # (B, S) source row
    if flip is not None:
        xs = torch.where(flip[:, None].to(images.device), xs.flip(-1), xs)
    gx = (2 * xs + 1) / W - 1  # grid_sample's [-1, 1] coordinates (align_corners=False)
    gy = (2 * ys + 1) / H - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, S, S, 2)
    x = images if images.is_floating_point() else images.float()
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(B, C, H, W)`` pixels on the 0..255 scale -> ``(x / 255 - mean) / std`` float (in place on one float
    copy: no temporary batch per operation, 2x faster on a CPU, the same numbers)."""
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    return images.to(torch.float32, copy=True).div_(255.0).sub_(m).div_(s)


def random_crop_flip(pixels: torch.Tensor, args: AugmentArgs, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float ``(B, C, H, W)`` on the 0..255 scale, each image randomly cropped,
    resized back to ``H`` and flipped as ``args`` says (unchanged when ``args.augment`` is false)."""
    if not args.augment:
        return pixels.float()
    B, _, H, W = pixels.shape
    boxes = random_resized_crop_boxes(B, H, W, generator, (args.crop_min_scale, args.crop_max_scale))
    flip = torch.rand(B, device=generator.device, generator=generator) < args.hflip  # (B,)
    return resized_crop(pixels, boxes, H, flip)


def crop_seed(seed: int, epoch: int, row: int) -> int:
    """The seed of one image's crops in one epoch: a function of where it is, never of a loader's state, so
    any number of workers, processes or a resume draw the same crops."""
    return int(np.random.SeedSequence([seed, epoch, row]).generate_state(2, np.uint64)[0] & (2**63 - 1))


class EncodedCrops(DecodeInWorkers):
    """Encoded storage's training transform (``Dataset.with_transform``, run in the DataLoader workers): each
    image decoded whole, then ``views`` random resized crops (boxes drawn exactly as torchvision draws them, on
    the original image, so aspect ratio and resolution are kept) resized to ``size`` and flipped; an image
    smaller than the crop is upscaled. The draws come from :func:`crop_seed` ``(seed, epoch, row)``."""

    def __init__(self, size: int, crop: AugmentArgs, seed: int, epoch: int, views: int = 1):
        super().__init__(size)
        self.crop, self.seed, self.epoch, self.views = crop, seed, epoch, views

    def draws(self, width: int, height: int, row: int) -> list[tuple]:
        if not self.crop.augment:
            return [(None, False)] * self.views
        g = torch.Generator().manual_seed(crop_seed(self.seed, self.epoch, row))
        out = []
        for _ in range(self.views):
            box = random_resized_crop_boxes(1, height, width, g,
                                            (self.crop.crop_min_scale, self.crop.crop_max_scale))[0]
            out.append((tuple(box.tolist()), bool(torch.rand(1, generator=g) < self.crop.hflip)))
        return out


def training_data(data: ImageData, crop: AugmentArgs, seed: int, views: int = 1) -> tuple[Callable | object, AugmentArgs]:
    """What ``fit`` trains on and the crop left to the device. Decoded storage: ``pixel_values`` rows, cropped
    and flipped on the device by ``crop``. Encoded storage: a function ``epoch -> Dataset`` whose rows are
    decoded and cropped in the loader's workers (:class:`EncodedCrops`, ``views`` crops per image: ``pixel_values``
    and ``pixel_values_2``), and nothing left to crop on the device."""
    if PIXELS in data.train.column_names:
        return data.train.select_columns([PIXELS]), crop
    rows = data.train.select_columns([ENCODED, ROW, SOURCE])
    size = data.image_size

    def epoch_data(epoch: int):
        return rows.with_transform(EncodedCrops(size, crop, seed, epoch, views))

    return epoch_data, AugmentArgs(augment=False)


class ImageViews:
    """uint8 ``(B, C, S, S)`` -> augmented (when training) and normalised float, all on the batch's device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], args: AugmentArgs | None = None):
        self.mean, self.std, self.args = tuple(mean), tuple(std), args or AugmentArgs(augment=False)

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.args.augment:
            return normalize(pixels, self.mean, self.std)
        if generator is None:
            raise ValueError("augmentation needs the step's generator (exact resume depends on it)")
        return normalize(random_crop_flip(pixels, self.args, generator), self.mean, self.std)


class ClassificationTransform:
    """A ``Dataset.with_transform`` function for transformers' ``Trainer``: a fetched batch of decoded rows
    -> normalised ``pixel_values`` (augmented when the views augment, with a generator drawn from torch's
    RNG, which ``Trainer`` seeds) and ``labels``. Use one per split: augmented for training only."""

    def __init__(self, views: ImageViews):
        self.views = views

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        generator = None
        if self.views.args.augment:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        out = {"pixel_values": self.views(pixels_from_bytes(batch[PIXELS]), generator)}  # (B, 3, S, S)
        if "label" in batch:
            out["labels"] = torch.as_tensor(batch["label"], dtype=torch.long)  # (B,)
        return out
