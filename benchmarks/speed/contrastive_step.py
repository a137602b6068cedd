"""SimCLR / MoCo / BYOL training throughput: hfssl's recipe against the same model trained the plain way.

    hfssl  hfssl/methods/ssl_recipe.py: images decoded once to fixed-size uint8 (hfssl.vision.data), fit(),
           two independent views per batch drawn on the device (TwoViews: crop, flip, colour jitter, grey,
           blur / solarise), the momentum update of MoCo / BYOL in on_step_end
    plain  published SimCLR code the Hugging Face way: a datasets Image column of PNG files, set_transform
           with per-sample torchvision views, twice per image (RandomResizedCrop, flip, RandomApply(ColorJitter),
           RandomGrayscale, [GaussianBlur, RandomSolarize], ToTensor, Normalize), a shuffled DataLoader, a
           hand-written loop (AdamW, transformers' cosine schedule, autocast, per-parameter momentum update)

Same model class and initial weights, batch size, and the views, heads and optimiser settings of
recipes/configs/<method>_tiny.yaml. Images/s is measured between optimizer steps after --warmup untimed
steps; the data path of each alone (loader + two views, no model) is measured too.

    python benchmarks/speed/contrastive_step.py --method simclr                   # small ResNet, 32x32, CPU
    python benchmarks/speed/contrastive_step.py --method byol --preset resnet50 --image_size 224 --batch_size 256 \\
        --mixed_precision bf16 --workers 8 --max_images 20000               # GPU, ResNet-50
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from step_common import data_rate, png_dataset, sync  # noqa: E402 (benchmarks/speed/step_common.py)

from hfssl.config import parse  # noqa: E402
from hfssl.ema import cosine_momentum  # noqa: E402
from hfssl.hub import HubArgs  # noqa: E402
from hfssl.methods import contrastive_methods  # noqa: E402
from hfssl.methods.contrastive import CollapseGuard, SSLArgs  # noqa: E402
from hfssl.train import TrainArgs, fit, make_accelerator  # noqa: E402
from hfssl.vision.arrays import read_idx  # noqa: E402
from hfssl.vision.backbones import BackboneArgs, build_backbone, input_size  # noqa: E402
from hfssl.vision.data import ImageDataArgs, embedded_folder, load_images  # noqa: E402
from hfssl.vision.loader import PIXELS, collate_images  # noqa: E402
from hfssl.vision.probe import MonitorArgs  # noqa: E402
from hfssl.vision.transforms import AugmentArgs  # noqa: E402
from hfssl.vision.views import SMALL_FOR_BLUR, TwoViews, ViewArgs  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "images" / "fashion-mnist"
TARGETS = {"moco": ("query", "key"), "byol": ("online", "target")}  # (trained, momentum) encoders


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["simclr", "moco", "byol"], default="simclr")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with Fashion-MNIST IDX files (else embedded)")
    p.add_argument("--max_images", type=int, default=10_000, help="images used (decoded once by hfssl)")
    p.add_argument("--preset", default="small", help="ResNet preset: tiny, small, resnet18, resnet34, resnet50")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--small_image_upsample", type=int, default=2, help="backbone upsampling of images <= 64 px")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps")
    p.add_argument("--steps", type=int, default=15, help="timed optimizer steps")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, both sides")
    p.add_argument("--mixed_precision", choices=["no", "bf16"], default="no")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; on a "
                   "machine shared with other jobs, 1 avoids oversubscription)")
    return p.parse_args(argv)


def recipe_settings(args) -> tuple[AugmentArgs, ViewArgs, BackboneArgs, SSLArgs, TrainArgs]:
    """The recipe's own parse of its config, with this benchmark's model size, batch, steps and precision."""
    config = ROOT / "recipes" / "configs" / f"{args.method}_tiny.yaml"
    _, crop, views, enc, ssl, train, _, _ = parse(
        ImageDataArgs, AugmentArgs, ViewArgs, BackboneArgs, SSLArgs, TrainArgs, HubArgs, MonitorArgs,
        args=["--preset", args.preset, "--image_size", str(args.image_size),
              "--small_image_upsample", str(args.small_image_upsample)], default_config=config)
    train = dataclasses.replace(
        train, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size, eval_steps=0,
        save_steps=0, logging_steps=10**6, dataloader_num_workers=args.workers, mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=1, lr_scheduler_type="cosine", max_grad_norm=0, resume=False, report_to="none")
    return crop, views, enc, ssl, train


def load_arrays(args) -> np.ndarray:
    """The first --max_images training images, (N, 28, 28) uint8."""
    folder = Path(args.data) if any(Path(args.data).glob("train-images-idx3-ubyte*")) else embedded_folder()
    return read_idx(next(folder.glob("train-images-idx3-ubyte*")))[: args.max_images]


def time_hfssl(args, x, model, crop: AugmentArgs, views: ViewArgs, ssl: SSLArgs, train_args: TrainArgs, out: Path) -> tuple:
    """(images/s of fit, images/s of its data path alone, seconds to decode once, pixel mean, pixel std)."""
    np.savez(out / "images.npz", x=x)
    t0 = time.perf_counter()
    data = load_images(ImageDataArgs(data=str(out / "images.npz"), image_size=args.image_size, eval_fraction=0))
    decode_s = time.perf_counter() - t0
    train_args = dataclasses.replace(train_args, output_dir=str(out / "hfssl"))
    accelerator = make_accelerator(train_args)
    transform, guard, ticks = TwoViews(data.mean, data.std, crop, views), CollapseGuard(ssl.collapse_threshold), []

    def on_step_end(m, step, total):  # the recipe's: momentum update, collapse guard; then the clock
        m.step_end(step, total)
        guard(m, step)
        sync(accelerator.device)
        ticks.append(time.perf_counter())

    pixels = data.train.select_columns([PIXELS])
    fit(accelerator, model, train_args, train_data=pixels, collate_fn=collate_images, transform=transform,
        on_step_end=on_step_end)
    step_rate = args.batch_size * args.steps / (ticks[-1] - ticks[args.warmup - 1])
    loader = torch.utils.data.DataLoader(pixels.shuffle(seed=0), batch_size=args.batch_size,
                                         collate_fn=collate_images, num_workers=args.workers, drop_last=True)
    return step_rate, data_rate(loader, transform, accelerator.device, args.warmup + args.steps, "view1"), decode_s, data.mean, data.std


def view_pipeline(args, crop: AugmentArgs, v: ViewArgs, view: int, mean, std):
    """One view as published SimCLR / BYOL code writes it, with the parameters of ``v``."""
    from torchvision import transforms as T

    blur, solarize = v.view_probs(view)
    ops = [T.RandomResizedCrop(args.image_size, scale=(crop.crop_min_scale, crop.crop_max_scale)),
           T.RandomHorizontalFlip(crop.hflip),
           T.RandomApply([T.ColorJitter(v.brightness, v.contrast, v.saturation, v.hue)], p=v.jitter_prob),
           T.RandomGrayscale(v.grayscale_prob)]
    if blur > 0 and args.image_size > SMALL_FOR_BLUR:  # hfssl's rule: no blur on images of 32 px and less
        kernel = max(3, int(0.1 * args.image_size) // 2 * 2 + 1)
        ops.append(T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur))
    if solarize > 0:
        ops.append(T.RandomSolarize(128, p=solarize))
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean=mean, std=std)])


def plain_dataset(x: np.ndarray, args, crop: AugmentArgs, v: ViewArgs, mean, std):
    """PNG files in an Image column; set_transform draws two independent views of each image on access."""
    ds = png_dataset(x)
    first, second = view_pipeline(args, crop, v, 0, mean, std), view_pipeline(args, crop, v, 1, mean, std)

    def two_views(examples):
        images = [im.convert("RGB") for im in examples["image"]]
        return {"view1": [first(im) for im in images], "view2": [second(im) for im in images]}

    ds.set_transform(two_views)
    return ds


@torch.no_grad()
def momentum_update(online, target, m: float) -> None:
    for p_o, p_t in zip(online.parameters(), target.parameters()):
        p_t.mul_(m).add_(p_o.detach(), alpha=1 - m)


def time_plain(args, x, model, crop: AugmentArgs, v: ViewArgs, ssl: SSLArgs, train: TrainArgs, mean, std) -> tuple[float, float]:
    """(images/s of the plain loop, images/s of its data path alone)."""
    from transformers import get_cosine_schedule_with_warmup

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = plain_dataset(x, args, crop, v, mean, std)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=True)  # default collate: {"view1": (B, 3, S, S), "view2": ...}
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.learning_rate,
                                  betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon,
                                  weight_decay=train.weight_decay)
    total = args.warmup + args.steps
    warmup = math.ceil(train.warmup * total) if train.warmup < 1 else int(train.warmup)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    step, ticks = 0, []
    while step < total:
        for batch in loader:
            batch = {k: t.to(device, non_blocking=True) for k, t in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16"):
                loss = model(view1=batch["view1"], view2=batch["view2"]).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if args.method in TARGETS:  # BYOL's cosine momentum schedule (constant when base == final)
                m = cosine_momentum(step, total, ssl.momentum, ssl.momentum_final)
                momentum_update(*(getattr(model, name) for name in TARGETS[args.method]), m)
            sync(device)
            ticks.append(time.perf_counter())
            if step == total:
                break
    step_rate = args.batch_size * args.steps / (ticks[-1] - ticks[args.warmup - 1])
    return step_rate, data_rate(loader, None, device, args.warmup + args.steps, "view1")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    crop, views, enc, ssl, train = recipe_settings(args)
    x = load_arrays(args)
    torch.manual_seed(0)
    ours = contrastive_methods()[args.method](build_backbone(enc, args.image_size), ssl)
    plain = contrastive_methods()[args.method](build_backbone(enc, args.image_size), ssl)
    plain.load_state_dict(ours.state_dict())  # same initial weights (and MoCo's initial queue)
    with tempfile.TemporaryDirectory() as tmp:
        ours_rate, ours_data, decode_s, mean, std = time_hfssl(args, x, ours, crop, views, ssl, train, Path(tmp))
        plain_rate, plain_data = time_plain(args, x, plain, crop, views, ssl, train, list(mean), list(std))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    name = f"MoCo {ssl.moco_version}" if args.method == "moco" else {"simclr": "SimCLR", "byol": "BYOL"}[args.method]
    print(f"\n{name}, {enc.backbone} {enc.preset}, {len(x)} images {args.image_size}x{args.image_size} (backbone "
          f"input {input_size(enc, args.image_size)} px), batch {args.batch_size} x 2 views, {device}, {args.mixed_precision} "
          f"precision, {args.workers} workers, {args.steps} timed steps (hfssl decoded the images once in "
          f"{decode_s:.1f} s)")
    print(f"{'':24s}{'train images/s':>16s}{'data path alone':>18s}")
    print(f"{'hfssl (fit)':24s}{ours_rate:16.1f}{ours_data:18.1f}")
    print(f"{'plain (torch loop)':24s}{plain_rate:16.1f}{plain_data:18.1f}")
    print(f"{'ratio hfssl / plain':24s}{ours_rate / plain_rate:16.2f}{ours_data / plain_data:18.2f}")


if __name__ == "__main__":
    main()
