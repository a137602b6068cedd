"""Do SimCLR / MoCo / BYOL features beat raw pixels and a random backbone? Fashion-MNIST, CPU budget.

1. Baselines on the 60,000 training / 10,000 test images (32 px, as the recipes see them): raw pixels,
   and the randomly initialised backbone of the recipes' architecture (same seed as the recipes).
2. For each method: pretrain with recipes/<method>.py on the training images WITHOUT labels (flags after
   --recipe_args go to every recipe, e.g. --max_steps), then take the exported folder, load it with
   ``AutoModel.from_pretrained`` and evaluate its frozen features the same way.
3. Evaluation (hfssl.vision.probe): weighted cosine kNN (k=20, T=0.07, the 60,000 training features as
   the bank) and a logistic-regression linear probe (L2 picked on a held-out tenth of the training set),
   both scored on the 10,000 test images.
4. With ``--transfer GLYPHS.npz`` (benchmarks/gain/make_glyphs.py: letters in fonts, a domain no recipe saw):
   each method's exported folder is read as a user would, ``AutoImageProcessor`` + ``AutoModel``, and the
   processor's pixels of the glyph images (read at their own 28 px, resized by the processor straight to
   the backbone's input size and normalised with the pretraining statistics) go through the plain model
   (``features()``: channels-last, no further resizing); the same pixels through ``--random_seeds`` random inits of the same architecture give the
   baseline (mean +- sd). kNN bank / probe training set: the glyph training split; scored: its test split.
   ``--pretrained NAME=FOLDER`` evaluates existing exported folders instead of pretraining;
   ``--transfer_only`` skips the in-domain part.

The recipes run with their configs' settings: SimCLR's default batch is 128 (docs/results.md); the
30-minute table there ran SimCLR at 256 (``--recipe_args --per_device_train_batch_size 256 ...``).

    python benchmarks/gain/contrastive_gain.py --threads 2 --methods simclr moco byol --recipe_args --max_steps 800
    python benchmarks/gain/make_glyphs.py --out /tmp/glyphs.npz
    python benchmarks/gain/contrastive_gain.py --threads 1 --transfer /tmp/glyphs.npz --transfer_only \
        --pretrained simclr=runs/simclr_tiny/model moco=runs/moco_tiny/model byol=runs/byol_tiny/model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hfssl.vision.backbones import BackboneArgs, build_backbone, features  # noqa: E402
from hfssl.vision.data import ImageData, ImageDataArgs, load_images  # noqa: E402
from hfssl.vision.loader import PIXELS, pixels_from_bytes  # noqa: E402
from hfssl.vision.probe import evaluate_features, extract_features, knn_predict  # noqa: E402

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


def processor_pixels(processor, ds) -> torch.Tensor:
    """``(N, 3, S, S)`` float pixel values of every image of ``ds``, made by the exported image processor."""
    from PIL import Image

    out = []
    for start in range(0, len(ds), 1000):
        chunk = pixels_from_bytes(ds[start:start + 1000][PIXELS]).permute(0, 2, 3, 1).numpy()  # (B, S, S, 3) uint8
        out.append(processor([Image.fromarray(a) for a in chunk], return_tensors="pt")["pixel_values"])
    return torch.cat(out)


@torch.no_grad()
def pixel_features(model, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([features(model, pixels[i:i + batch_size]).float() for i in range(0, len(pixels), batch_size)])


def transfer(folders: dict[str, Path], glyphs: ImageData, args) -> list[dict]:
    """Frozen kNN / probe on the glyph set: each exported folder (processor + AutoModel) and random inits."""
    from transformers import AutoImageProcessor, AutoModel

    classes, train_y, test_y = len(glyphs.label_names), torch.as_tensor(glyphs.train["label"]), torch.as_tensor(glyphs.eval["label"])
    cache, rows = {}, []

    def score(model, processor) -> dict:
        key = processor.to_json_string()
        if key not in cache:  # the same processor settings give the same pixels: make them once
            cache[key] = [processor_pixels(processor, ds) for ds in (glyphs.train, glyphs.eval)]
        tx, vx = (pixel_features(model, x) for x in cache[key])
        mu = tx.mean(0)  # centred kNN: the bank's mean feature taken off bank and queries before the cosine
        centred = knn_predict(tx - mu, train_y, vx - mu, classes)
        return {**evaluate_features(tx, train_y, vx, test_y, classes),
                "knn_centred_accuracy": float((centred == test_y).float().mean())}

    if args.random_processor is not None and args.random_processor not in folders:
        raise SystemExit(f"error: --random_processor {args.random_processor} is not one of the evaluated folders "
                         f"({', '.join(folders)}), --random_processor; give one of those names")
    processors, sizes = {}, None
    for name, folder in folders.items():
        processors[name], model = AutoImageProcessor.from_pretrained(folder), AutoModel.from_pretrained(folder)
        sizes = model.config.hidden_sizes
        rows.append({"features": name, **score(model, processors[name])})
        print(f"transfer {name:10s} kNN {100 * rows[-1]['knn_accuracy']:.2f}  centred kNN "
              f"{100 * rows[-1]['knn_centred_accuracy']:.2f}  probe {100 * rows[-1]['linear_probe_accuracy']:.2f}", flush=True)
    if not processors:
        raise SystemExit("--transfer needs pretrained folders: --methods or --pretrained")
    pixels_of = args.random_processor or list(folders)[-1]  # the random inits see the pixels of this processor
    processor = processors[pixels_of]
    print(f"random inits read the letters through the processor of {pixels_of} ({folders[pixels_of]})", flush=True)
    randoms = []
    for seed in args.random_seeds:  # the same pixels through untrained backbones
        torch.manual_seed(seed)
        model = build_backbone(BackboneArgs(backbone="resnet", preset=args.preset,
                                            small_image_upsample=args.small_image_upsample), 32)
        if model.config.hidden_sizes != sizes:
            raise SystemExit(f"--preset {args.preset} is not the architecture of the pretrained folders ({sizes})")
        randoms.append(score(model, processor))
        print(f"transfer random seed {seed} kNN {100 * randoms[-1]['knn_accuracy']:.2f}  centred kNN "
              f"{100 * randoms[-1]['knn_centred_accuracy']:.2f}  "
              f"probe {100 * randoms[-1]['linear_probe_accuracy']:.2f}", flush=True)
    keys = ("knn_accuracy", "knn_centred_accuracy", "linear_probe_accuracy")
    mean = {k: statistics.mean(r[k] for r in randoms) for k in keys}
    sd = {k: statistics.pstdev(r[k] for r in randoms) for k in mean}
    print(f"\nTransfer to {args.transfer} ({len(train_y)} bank / probe images, {len(test_y)} scored, {classes} classes), "
          f"random init: mean of seeds {args.random_seeds}, pixels by {pixels_of}'s processor\n"
          "| features | kNN | centred kNN | linear probe | kNN - random | centred kNN - random | probe - random |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| random init ({len(randoms)} seeds) | "
          + " | ".join(f"{100 * mean[k]:.1f} +- {100 * sd[k]:.1f}" for k in keys) + " | | | |")
    for r in rows:
        print(f"| {r['features']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " | "
              + " | ".join(f"{100 * (r[k] - mean[k]):+.1f}" for k in keys) + " |")
    return [*rows, *({"features": f"random seed {s}", **r} for s, r in zip(args.random_seeds, randoms))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/hfssl-contrastive"))
    p.add_argument("--methods", nargs="*", default=["simclr", "moco", "byol"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip_baselines", action="store_true")
    p.add_argument("--small_image_upsample", type=int, default=2, help="must match the recipes' setting")
    p.add_argument("--preset", default="small", help="ResNet preset of the recipes and of the random baseline")
    p.add_argument("--transfer", type=Path, help="a labelled .npz of another domain (benchmarks/gain/make_glyphs.py)")
    p.add_argument("--transfer_image_size", type=int, default=28,
                   help="side the transfer images are read at (their own: make_glyphs.py writes 28); the "
                        "exported processor then resizes them to the backbone's input, as for a user")
    p.add_argument("--random_seeds", type=int, nargs="+", default=[42, 0, 1, 2, 3],
                   help="random inits averaged as the transfer baseline (42: the recipes' seed)")
    p.add_argument("--random_processor", default=None, metavar="NAME",
                   help="whose image processor (a --pretrained NAME or a method) makes the pixels the random inits "
                        "are scored on; default: the last folder's. Processors differ in their normalisation "
                        "statistics, which moves the random figures by 0.1-0.5 points")
    p.add_argument("--pretrained", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="evaluate these exported folders instead of pretraining (--methods is then ignored)")
    p.add_argument("--transfer_only", action="store_true", help="skip the in-domain baselines and evaluations")
    p.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="passed to every recipe")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    in_domain = not args.transfer_only
    if in_domain:
        data = load_images(ImageDataArgs(data=str(args.data), image_size=32))
        print(data.report, flush=True)
        train, test, classes = data.train, data.eval, len(data.label_names)
    results = []
    if in_domain and not args.skip_baselines:
        tx, ty = raw_pixels(train, data.mean, data.std)
        vx, vy = raw_pixels(test, data.mean, data.std)
        results.append(row("raw pixels", evaluate_features(tx, ty, vx, vy, classes)))
        torch.manual_seed(42)  # the recipes' default seed
        random_bb = build_backbone(BackboneArgs(backbone="resnet", preset=args.preset,
                                                small_image_upsample=args.small_image_upsample), 32)
        feats = [extract_features(random_bb, ds, data.mean, data.std, progress=True) for ds in (train, test)]
        results.append(row(f"random backbone (resnet {args.preset})", evaluate_features(*feats[0], *feats[1], classes)))
    from transformers import AutoModel

    folders = dict(spec.split("=", 1) for spec in args.pretrained)
    folders = {name: Path(folder) for name, folder in folders.items()}
    for method in [] if folders else args.methods:
        out = args.work_dir / method
        cmd = [sys.executable, str(ROOT / "recipes" / f"{method}.py"), "--data", str(args.data), "--output_dir",
               str(out), "--overwrite_output_dir", "--linear_probe", "false", "--preset", args.preset,
               "--small_image_upsample", str(args.small_image_upsample), *args.recipe_args]
        print("pretraining:", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        minutes = (time.perf_counter() - start) / 60
        folders[method] = out / "model"
        if in_domain:
            backbone = AutoModel.from_pretrained(out / "model").eval()
            feats = [extract_features(backbone, ds, data.mean, data.std, progress=True) for ds in (train, test)]
            results.append(row(method, evaluate_features(*feats[0], *feats[1], classes), minutes))
    if in_domain and args.pretrained:
        for name, folder in folders.items():
            backbone = AutoModel.from_pretrained(folder).eval()
            feats = [extract_features(backbone, ds, data.mean, data.std, progress=True) for ds in (train, test)]
            results.append(row(name, evaluate_features(*feats[0], *feats[1], classes)))
    transfer_rows = []
    if args.transfer:
        glyphs = load_images(ImageDataArgs(data=str(args.transfer), image_size=args.transfer_image_size))
        print(glyphs.report, flush=True)
        transfer_rows = transfer(folders, glyphs, args)
    if results:
        print("\n| features | kNN (k=20) | linear probe | pretraining |\n| --- | --- | --- | --- |")
    for r in results:
        minutes = f"{r['minutes']:.1f} min" if r["minutes"] else ""
        print(f"| {r['features']} | {100 * r['knn']:.1f} | {100 * r['linear_probe']:.1f} | {minutes} |")
    (args.work_dir / "results.json").write_text(json.dumps({"in_domain": results, "transfer": transfer_rows}, indent=1))


if __name__ == "__main__":
    main()
