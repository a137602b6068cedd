"""Does MAE pretraining pay? Fashion-MNIST, few labels, a fixed CPU budget.

1. Pretrain an MAE (recipes/mae.py) on the 60,000 training images without their labels, for
   --pretrain_minutes (the step count is calibrated from a few timed steps first).
2. For each seed: draw --labelled training images (balanced); fine-tune (recipes/finetune_image_classification.py)
   once from the MAE checkpoint and once from scratch (same architecture, processor, steps, seed); test
   accuracy on --test_images test images. The gain is MAE minus scratch.
3. Frozen features (mean of the patch tokens) of the MAE encoder, of a randomly initialised encoder of the
   same shape, and raw pixels: linear probe (logistic regression) and kNN (cosine, k=20) from the same
   labelled images. Self-supervised features are worth something only above raw pixels and random.

    python benchmarks/gain/mae_gain.py --pretrain_minutes 30 --seeds 0 1 2          # the real budget
    python benchmarks/gain/mae_gain.py --pretrain_minutes 0.3 --seeds 0 --finetune_epochs 1 --test_images 500
    python benchmarks/gain/mae_gain.py --data /data/imagenet --preset base --image_size 224 --patch_size 16 \
        --batch_size 256 --mixed_precision bf16 --labelled 10000 --test_images 10000   # GPU, ImageNet folders
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from hfssl.methods.mae import MAEArgs, MAEPretrainer, mae_config  # noqa: E402
from hfssl.vision.arrays import arrays_to_pixels, read_idx  # noqa: E402
from hfssl.vision.data import FASHION_MNIST_LABELS, ImageDataArgs, load_images  # noqa: E402
from hfssl.vision.loader import PIXELS, pixels_from_bytes  # noqa: E402
from hfssl.vision.probe import knn_predict, linear_probe  # noqa: E402
from hfssl.vision.transforms import normalize  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "images" / "fashion-mnist"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with the four Fashion-MNIST IDX .gz files, or "
                   "a labelled image folder / save_to_disk dataset with a test or validation split (ImageNet-style)")
    p.add_argument("--out", default="runs/mae_gain", help="working folder (checkpoints, subsets, results.json)")
    p.add_argument("--pretrain_minutes", type=float, default=30.0)
    p.add_argument("--pretrain_steps", type=int, default=0, help="skip the calibration and run this many steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--labelled", type=int, default=1000, help="labelled training images per seed (balanced)")
    p.add_argument("--test_images", type=int, default=10_000)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--patch_size", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=128, help="pretraining batch")
    p.add_argument("--base_learning_rate", type=float, default=1.5e-3, help="pretraining, per 256 images")
    p.add_argument("--finetune_epochs", type=float, default=30)
    p.add_argument("--finetune_lr", type=float, default=1e-3)
    p.add_argument("--finetune_batch", type=int, default=64)
    p.add_argument("--knn_k", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--mixed_precision", default="no", help="pretraining precision: no or bf16 (CPU autocast, AMX)")
    return p.parse_args(argv)


def run(script: str, *args, threads=None) -> str:
    """Run a recipe with this interpreter; its stdout (stderr shown on failure)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def calibrate_steps(args) -> int:
    """Optimizer steps that fit --pretrain_minutes, from 4 timed steps of the same model and batch."""
    model = MAEPretrainer(mae_config(MAEArgs(preset=args.preset, patch_size=args.patch_size), args.image_size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, noise = torch.randn(args.batch_size, 3, args.image_size, args.image_size), torch.rand(args.batch_size, model.num_patches)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16"):
            loss = model(x, noise).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return max(1, int(args.pretrain_minutes * 60 / statistics.median(times[1:])))


class DecodedRows:
    """Rows of a decoded hfssl image dataset, fetched as ``(N, S, S, 3)`` uint8 arrays only when picked."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(len(self.ds))[rows]  # an index array or a slice
        return pixels_from_bytes(self.ds.select(rows)[PIXELS]).permute(0, 2, 3, 1).numpy()


def read_data(args, data: Path):
    """Fashion-MNIST IDX files, or any image folder / save_to_disk dataset with labels and a test split
    (ImageNet-style ``train/<class>/*`` + ``val/<class>/*``), decoded once at ``--image_size`` by hfssl.
    Returns training images (indexable), labels, test images and labels, class names, what MAE pretrains on."""
    if any(data.glob("train-images-idx3-ubyte*")):
        x_all = read_idx(next(data.glob("train-images-idx3-ubyte*")))
        y_all = read_idx(next(data.glob("train-labels-idx1-ubyte*"))).astype(np.int64)
        xt, yt = (read_idx(next(data.glob(f"t10k-{k}-idx*"))) for k in ("images", "labels"))
        return (x_all, y_all, xt[: args.test_images], yt[: args.test_images].astype(np.int64), FASHION_MNIST_LABELS,
                next(data.glob("train-images-idx3-ubyte*")))
    decoded = load_images(ImageDataArgs(data=str(data), image_size=args.image_size, eval_fraction=0.0, storage="decoded"))
    if decoded.label_names is None or decoded.eval is None:
        raise SystemExit(f"{data}: mae_gain needs labelled images with a test/validation split")
    test = decoded.eval.select(range(min(args.test_images, len(decoded.eval))))
    return (DecodedRows(decoded.train), np.asarray(decoded.train["label"], dtype=np.int64), DecodedRows(test)[:],
            np.asarray(test["label"], dtype=np.int64), decoded.label_names, data)


def pretrain(args, data: Path, out: Path, test_npz: Path) -> Path:
    steps = args.pretrain_steps or calibrate_steps(args)
    print(f"pretraining: {steps} steps of {args.batch_size} images (~{args.pretrain_minutes} min)", flush=True)
    t0 = time.perf_counter()
    run("recipes/mae.py", "--data", data, "--eval_data", test_npz,
        "--output_dir", out / "mae", "--overwrite_output_dir", "true", "--max_steps", steps, "--preset", args.preset,
        "--image_size", args.image_size, "--patch_size", args.patch_size, "--per_device_train_batch_size",
        args.batch_size, "--base_learning_rate", args.base_learning_rate, "--eval_steps", max(steps // 4, 1),
        "--save_steps", 0, "--logging_steps", max(steps // 20, 1), "--mixed_precision", args.mixed_precision,
        threads=args.threads)
    print(f"pretrained in {(time.perf_counter() - t0) / 60:.1f} min -> {out / 'mae/model'}", flush=True)
    return out / "mae" / "model"


def finetune(args, model: Path, npz: Path, out: Path, seed: int, scratch: bool) -> float:
    stdout = run("recipes/finetune_image_classification.py", "--model_name_or_path", model, "--data", npz,
                 "--from_scratch", scratch, "--output_dir", out, "--num_train_epochs", args.finetune_epochs,
                 "--per_device_train_batch_size", args.finetune_batch, "--per_device_eval_batch_size", 256,
                 "--learning_rate", args.finetune_lr, "--weight_decay", 0.05, "--warmup_steps", 0.1,
                 "--lr_scheduler_type", "cosine", "--eval_strategy", "no", "--save_strategy", "no", "--report_to",
                 "none", "--seed", seed, "--crop_min_scale", 0.5, "--disable_tqdm", "true", threads=args.threads)
    return float(re.search(r"eval accuracy ([0-9.]+)", stdout).group(1))


@torch.no_grad()
def features(encoder, x: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """Mean of the final patch tokens, ``(N, H)``, in batches of 500."""
    out = []
    for i in range(0, len(x), 500):
        pixels = normalize(torch.from_numpy(arrays_to_pixels(x[i : i + 500], size, "features")), mean, std)
        out.append(encoder(pixel_values=pixels).last_hidden_state[:, 1:].mean(1))
    return torch.cat(out)


def knn(train: torch.Tensor, y_train: np.ndarray, test: torch.Tensor, y_test: np.ndarray, k: int) -> float:
    """Weighted cosine kNN (hfssl.vision.probe, the monitor of the contrastive recipes)."""
    pred = knn_predict(train, torch.from_numpy(y_train), test, int(y_train.max()) + 1, k)
    return float((pred.numpy() == y_test).mean())


def probe(train: torch.Tensor, y_train: np.ndarray, test: torch.Tensor, y_test: np.ndarray) -> float:
    """Linear probe: logistic regression on standardised frozen features, L2 chosen on held-out train rows."""
    result = linear_probe(train, torch.from_numpy(y_train), test, torch.from_numpy(y_test), int(y_train.max()) + 1)
    return result["linear_probe_accuracy"]


def frozen_scores(args, model_dir: Path, x, y, xt, yt, seed: int) -> dict[str, float]:
    from transformers import AutoImageProcessor, ViTModel

    processor = AutoImageProcessor.from_pretrained(model_dir)
    mae = ViTModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    torch.manual_seed(seed)
    random = ViTModel(mae.config, add_pooling_layer=False).eval()
    scores = {}
    raw_train, raw_test = (torch.from_numpy(a.reshape(len(a), -1).astype(np.float32)) for a in (x, xt))
    scores["raw pixels kNN"] = knn(raw_train, y, raw_test, yt, args.knn_k)
    scores["raw pixels probe"] = probe(raw_train, y, raw_test, yt)
    for name, encoder in (("random ViT", random), ("MAE ViT", mae)):
        f, ft = (features(encoder, a, args.image_size, processor.image_mean, processor.image_std) for a in (x, xt))
        scores[f"{name} kNN"] = knn(f, y, ft, yt, args.knn_k)
        scores[f"{name} probe"] = probe(f, y, ft, yt)
    return scores


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    x_all, y_all, xt, yt, names, pretrain_data = read_data(args, data)
    np.savez(out / "test.npz", x=xt[:2000])  # reconstruction loss and pictures while pretraining
    model_dir = pretrain(args, pretrain_data, out, out / "test.npz")
    results = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        per_class = args.labelled // len(names)
        pick = np.concatenate([rng.choice(np.flatnonzero(y_all == c), per_class, replace=False)
                               for c in range(len(names))])
        x, y = x_all[pick], y_all[pick]
        npz = out / f"labelled-{seed}.npz"
        np.savez(npz, x=x, y=y, x_test=xt, y_test=yt, label_names=np.array(names))
        row = {"seed": seed, "finetune MAE": finetune(args, model_dir, npz, out / f"ft-mae-{seed}", seed, False),
               "finetune scratch": finetune(args, model_dir, npz, out / f"ft-scratch-{seed}", seed, True)}
        row["gain"] = row["finetune MAE"] - row["finetune scratch"]
        row.update(frozen_scores(args, model_dir, x, y, xt, yt, seed))
        results.append(row)
        print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    budget = f"{args.pretrain_steps} steps" if args.pretrain_steps else f"~{args.pretrain_minutes} min"
    print(f"\n{data.name}, {args.labelled} labelled images, {len(xt)} test images, seeds {args.seeds}, "
          f"MAE {args.preset} pretrained {budget} on {len(x_all)} unlabelled images")
    for key in [k for k in results[0] if k != "seed"]:
        values = [r[key] for r in results]
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"  {key:22s} {statistics.mean(values):.4f}{spread}   ({', '.join(f'{v:.4f}' for v in values)})")


if __name__ == "__main__":
    main()
