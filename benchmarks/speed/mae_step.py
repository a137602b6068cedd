"""MAE training throughput: hfssl against ViTMAEForPreTraining driven the plain way, side by side.

    hfssl  images decoded once to fixed-size uint8 (hfssl.vision.data), the loop's fit(), augmentation
           (random resized crop + flip) and masking noise drawn per batch on the device
    plain  transformers' run_mae.py way: Trainer, a datasets Image column of PNG files and a per-sample
           torchvision transform (decode, RGB, RandomResizedCrop bicubic, flip, ToTensor, Normalize)

Same ViTMAEConfig, same initial weights, same batch size, same optimiser (AdamW 0.9/0.95, cosine).
Images/s is measured between optimizer steps after --warmup untimed steps; the data path of each alone
(loader + augmentation, no model) is measured too, to show whether it could be the bottleneck.

    python benchmarks/speed/mae_step.py                                       # tiny, 32x32, CPU
    python benchmarks/speed/mae_step.py --preset base --image_size 224 --patch_size 16 --batch_size 256 \\
        --mixed_precision bf16 --workers 8 --max_images 20000           # GPU, ViT-B/16
    python benchmarks/speed/mae_step.py --jpeg_images 20000 --preset base --image_size 224 --patch_size 16 \\
        --batch_size 256 --mixed_precision bf16 --workers 8             # GPU, ViT-B/16 on JPEGs (gpu_mae.sh)

With ``--jpeg_images N`` the images are a folder of N JPEGs of about 500x375 (benchmarks/data/image_loader.py makes
it from scikit-learn's sample photographs): hfssl keeps them encoded and crops in its loader workers, the plain
side reads them as run_mae.py does (``load_dataset("imagefolder")``, the same per-sample transform).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from step_common import data_rate, png_dataset, sync  # noqa: E402 (benchmarks/speed/step_common.py)

from hfssl.methods.mae import MAEArgs, MAEBatchTransform, MAEPretrainer, mae_config  # noqa: E402
from hfssl.train import TrainArgs, fit, make_accelerator  # noqa: E402
from hfssl.vision.arrays import read_idx  # noqa: E402
from hfssl.vision.data import ImageDataArgs, embedded_folder, load_images  # noqa: E402
from hfssl.vision.loader import collate_images  # noqa: E402
from hfssl.vision.transforms import AugmentArgs, ImageViews, training_data  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "images" / "fashion-mnist"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with Fashion-MNIST IDX files (else embedded)")
    p.add_argument("--max_images", type=int, default=10_000, help="images used (decoded once by hfssl)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--patch_size", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps")
    p.add_argument("--steps", type=int, default=15, help="timed optimizer steps")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, both sides")
    p.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; on a "
                   "machine shared with other jobs, 1 avoids oversubscription)")
    p.add_argument("--jpeg_images", type=int, default=0, help="use a folder of this many ~500x375 JPEGs instead of "
                   "the Fashion-MNIST arrays (0: arrays)")
    p.add_argument("--work_dir", default="/tmp/hfssl-mae-step", help="where the JPEG folder is made and kept")
    return p.parse_args(argv)


def load_arrays(args) -> np.ndarray:
    """The first --max_images training images, (N, 28, 28) uint8."""
    folder = Path(args.data) if any(Path(args.data).glob("train-images-idx3-ubyte*")) else embedded_folder()
    return read_idx(next(folder.glob("train-images-idx3-ubyte*")))[: args.max_images]


def time_hfssl(args, x, model: MAEPretrainer, out: Path) -> tuple[float, float, float, tuple, tuple]:
    """(images/s of fit, images/s of its data path alone, seconds to prepare the data, pixel mean, pixel std).
    ``x``: ``(N, H, W)`` uint8 arrays, or the Path of a JPEG folder."""
    if isinstance(x, Path):
        source, normalize = x, "imagenet"
    else:
        source, normalize = out / "images.npz", None
        np.savez(source, x=x)
    t0 = time.perf_counter()
    data = load_images(ImageDataArgs(data=str(source), image_size=args.image_size, eval_fraction=0,
                                     normalize=normalize, cache_dir=str(out / "cache")))
    decode_s = time.perf_counter() - t0
    train_data, device_crop = training_data(data, AugmentArgs(), seed=0)  # encoded storage: crops in the workers
    train_args = TrainArgs(output_dir=str(out / "hfssl"), max_steps=args.warmup + args.steps, learning_rate=1e-4,
                           per_device_train_batch_size=args.batch_size, adam_beta2=0.95, weight_decay=0.05,
                           lr_scheduler_type="cosine", warmup=0.05, max_grad_norm=0, logging_steps=10**6,
                           eval_steps=0, save_steps=0, dataloader_num_workers=args.workers,
                           mixed_precision=args.mixed_precision)
    accelerator = make_accelerator(train_args)
    transform = MAEBatchTransform(ImageViews(data.mean, data.std, device_crop), model.num_patches)
    ticks = []
    fit(accelerator, model, train_args, train_data=train_data, collate_fn=collate_images,
        transform=transform, on_step_end=lambda m, step, total: (sync(accelerator.device), ticks.append(time.perf_counter())))
    step_rate = args.batch_size * args.steps / (ticks[-1] - ticks[args.warmup - 1])
    rows = train_data(0) if callable(train_data) else train_data
    loader = torch.utils.data.DataLoader(rows.shuffle(seed=0), batch_size=args.batch_size,
                                         collate_fn=collate_images, num_workers=args.workers, drop_last=True)
    return step_rate, data_rate(loader, transform, accelerator.device, args.warmup + args.steps, "pixel_values"), decode_s, data.mean, data.std


def plain_dataset(x, args, mean, std):
    """run_mae.py's data: image files in an Image column (PNGs of the arrays, or the JPEG folder read with
    ``load_dataset("imagefolder")``), a per-sample torchvision transform on access."""
    from torchvision.transforms import (
        Compose,
        InterpolationMode,
        Lambda,
        Normalize,
        RandomHorizontalFlip,
        RandomResizedCrop,
        ToTensor,
    )

    if isinstance(x, Path):
        import datasets

        ds = datasets.load_dataset("imagefolder", data_dir=str(x), split="train").select_columns(["image"])
    else:
        ds = png_dataset(x)
    transforms = Compose([Lambda(lambda img: img.convert("RGB") if img.mode != "RGB" else img),
                          RandomResizedCrop(args.image_size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC),
                          RandomHorizontalFlip(), ToTensor(), Normalize(mean=mean, std=std)])

    def preprocess_images(examples):
        examples["pixel_values"] = [transforms(image) for image in examples["image"]]
        return examples

    ds.set_transform(preprocess_images)
    return ds


def plain_collate(examples):
    return {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}


def time_plain(args, x: np.ndarray, model, mean, std, out: Path) -> tuple[float, float]:
    """(images/s of Trainer, images/s of its data path alone)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    ds = plain_dataset(x, args, mean, std)
    ticks = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            sync(model.device)
            ticks.append(time.perf_counter())

    training_args = TrainingArguments(
        output_dir=str(out / "plain"), per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
        learning_rate=1e-4, weight_decay=0.05, adam_beta2=0.95, lr_scheduler_type="cosine", warmup_steps=0.05,
        remove_unused_columns=False, dataloader_num_workers=args.workers, report_to="none", save_strategy="no",
        logging_steps=10**6, bf16=args.mixed_precision == "bf16", fp16=args.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(), max_grad_norm=0, dataloader_drop_last=True, disable_tqdm=True)
    Trainer(model=model, args=training_args, train_dataset=ds, data_collator=plain_collate, callbacks=[Clock()]).train()
    step_rate = args.batch_size * args.steps / (ticks[-1] - ticks[args.warmup - 1])
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, collate_fn=plain_collate, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    return step_rate, data_rate(loader, None, model.device, args.warmup + args.steps, "pixel_values")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.jpeg_images:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
        from image_loader import make_folder  # benchmarks/data/image_loader.py

        x = Path(args.work_dir) / f"jpegs_{args.jpeg_images}"
        make_folder(x, args.jpeg_images)
    else:
        x = load_arrays(args)
    torch.manual_seed(0)
    config = mae_config(MAEArgs(preset=args.preset, patch_size=args.patch_size), args.image_size)
    ours = MAEPretrainer(config)
    from transformers import ViTMAEForPreTraining

    plain = ViTMAEForPreTraining(config)
    plain.load_state_dict(ours.model.state_dict())  # same initial weights
    with tempfile.TemporaryDirectory() as tmp:
        ours_rate, ours_data, decode_s, mean, std = time_hfssl(args, x, ours, Path(tmp))
        plain_rate, plain_data = time_plain(args, x, plain, list(mean), list(std), Path(tmp))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    what = f"{args.jpeg_images} JPEGs" if args.jpeg_images else f"{len(x)} images"
    print(f"\nMAE {args.preset}, {what} at {args.image_size}x{args.image_size}, patch {args.patch_size}, "
          f"batch {args.batch_size}, {device}, {args.mixed_precision} precision, {args.workers} workers, "
          f"{args.steps} timed steps (hfssl prepared the images in {decode_s:.1f} s)")
    print(f"{'':24s}{'train images/s':>16s}{'data path alone':>18s}")
    print(f"{'hfssl (fit)':24s}{ours_rate:16.1f}{ours_data:18.1f}")
    print(f"{'plain HF (Trainer)':24s}{plain_rate:16.1f}{plain_data:18.1f}")
    print(f"{'ratio hfssl / plain':24s}{ours_rate / plain_rate:16.2f}{ours_data / plain_data:18.2f}")


if __name__ == "__main__":
    main()
