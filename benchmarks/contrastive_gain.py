"""Do SimCLR / MoCo / BYOL features beat raw pixels and a random backbone? Fashion-MNIST, CPU budget.

1. Baselines on the 60,000 training / 10,000 test images (32 px, as the recipes see them): raw pixels,
   and the randomly initialised backbone of the recipes' architecture (same seed as the recipes).
2. For each method: pretrain with recipes/<method>.py on the training images WITHOUT labels (flags after
   --recipe_args go to every recipe, e.g. --max_steps), then take the exported folder, load it with
   ``AutoModel.from_pretrained`` and evaluate its frozen features the same way.
3. Evaluation (hfssl.vision.probe): weighted cosine kNN (k=20, T=0.07, the 60,000 training features as
   the bank) and a logistic-regression linear probe (L2 picked on a held-out tenth of the training set),
   both scored on the 10,000 test images.

    python benchmarks/contrastive_gain.py --threads 2 --methods simclr moco byol --recipe_args --max_steps 800
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hfssl.vision.backbones import BackboneArgs, build_backbone  # noqa: E402
from hfssl.vision.data import PIXELS, ImageDataArgs, load_images, pixels_from_bytes  # noqa: E402
from hfssl.vision.probe import evaluate_features, extract_features  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "images" / "fashion-mnist"


def raw_pixels(ds, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised pixels of the first channel (the images are grey: the three channels are equal)."""
    x = torch.cat([pixels_from_bytes(ds[i:i + 5000][PIXELS])[:, 0].flatten(1).float() for i in range(0, len(ds), 5000)])
    return (x / 255 - mean[0]) / std[0], torch.as_tensor(ds["label"])


def row(name: str, scores: dict, minutes: float | None = None) -> dict:
    r = {"features": name, "knn": scores["knn_accuracy"], "linear_probe": scores["linear_probe_accuracy"],
         "minutes": minutes}
    print(f"{name:28s} kNN {100 * r['knn']:.2f}  linear probe {100 * r['linear_probe']:.2f}"
          + (f"  ({minutes:.1f} min of pretraining)" if minutes else ""), flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/hfssl-contrastive"))
    p.add_argument("--methods", nargs="*", default=["simclr", "moco", "byol"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip_baselines", action="store_true")
    p.add_argument("--small_image_upsample", type=int, default=2, help="must match the recipes' setting")
    p.add_argument("--preset", default="small", help="ResNet preset of the recipes and of the random baseline")
    p.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="passed to every recipe")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = load_images(ImageDataArgs(data=str(args.data), image_size=32))
    print(data.report, flush=True)
    train, test, classes = data.train, data.eval, len(data.label_names)
    results = []
    if not args.skip_baselines:
        tx, ty = raw_pixels(train, data.mean, data.std)
        vx, vy = raw_pixels(test, data.mean, data.std)
        results.append(row("raw pixels", evaluate_features(tx, ty, vx, vy, classes)))
        torch.manual_seed(42)  # the recipes' default seed
        random_bb = build_backbone(BackboneArgs(backbone="resnet", preset=args.preset,
                                                small_image_upsample=args.small_image_upsample), 32)
        feats = [extract_features(random_bb, ds, data.mean, data.std, progress=True) for ds in (train, test)]
        results.append(row(f"random backbone (resnet {args.preset})", evaluate_features(*feats[0], *feats[1], classes)))
    from transformers import AutoModel

    for method in args.methods:
        out = args.work_dir / method
        cmd = [sys.executable, str(ROOT / "recipes" / f"{method}.py"), "--data", str(args.data), "--output_dir",
               str(out), "--overwrite_output_dir", "--linear_probe", "false", "--preset", args.preset,
               "--small_image_upsample", str(args.small_image_upsample), *args.recipe_args]
        print("pretraining:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        minutes = (time.perf_counter() - start) / 60
        backbone = AutoModel.from_pretrained(out / "model").eval()
        feats = [extract_features(backbone, ds, data.mean, data.std, progress=True) for ds in (train, test)]
        results.append(row(method, evaluate_features(*feats[0], *feats[1], classes), minutes))
    print("\n| features | kNN (k=20) | linear probe | pretraining |\n| --- | --- | --- | --- |")
    for r in results:
        minutes = f"{r['minutes']:.1f} min" if r["minutes"] else ""
        print(f"| {r['features']} | {100 * r['knn']:.1f} | {100 * r['linear_probe']:.1f} | {minutes} |")
    (args.work_dir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
