"""hfssl's image loader at ImageNet-like sizes against the plain way (torchvision ImageFolder + transforms.v2).

    python benchmarks/data/image_loader.py --work_dir /tmp/image_loader --num_images 1000 5000 --workers 1 2 --repeats 3

A folder of JPEGs of about 500x375 (or 375x500), in 10 class folders, is made by cropping and rescaling the two
photographs that ship inside scikit-learn's wheel (``load_sample_images``; no download). At 224 px:

* **preparation**: what has to happen before step 1. hfssl, encoded storage (the default above 64 px): the files'
  bytes read into the datasets cache, headers checked, no pixel decoded. hfssl, decoded storage (``--storage
  decoded``, the path every image took before): every image decoded and squashed to 224 x 224. Plain: the
  ImageFolder scan. Seconds, and the cache's bytes against the JPEG folder's.
* **images/s** of the training loader alone with the same worker count: hfssl (decode + random-resized crop of the
  original + flip in the workers; uint8 batches, which the training step normalises on the device; also shown
  with that normalisation done here, in the main process, on the CPU) and the plain way (``ImageFolder`` +
  ``RandomResizedCrop(224, (0.08, 1))`` + flip + ``ToDtype`` + ``Normalize`` in the workers). ``--batches``
  batches of ``--batch_size`` after one warm-up batch; the median of ``--repeats`` alternating runs.
* **peak memory** (MB, from /proc after every batch) of the main process and of the largest worker: resident
  (VmRSS, which counts the pages of the memory-mapped cache a worker has read) and private (RssAnon, what the
  process itself allocated). Bounded if it does not grow with the number of images.

Every measurement runs in a fresh subprocess with ``--threads`` torch threads (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def make_folder(folder: Path, n: int, seed: int = 0) -> float:
    """``n`` JPEGs (quality 90) of about 500x375, landscape or portrait, random crops of the sample photographs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    if folder.is_dir() and len(list(folder.rglob("*.jpg"))) == n:
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    photos = [Image.fromarray(x) for x in load_sample_images().images]  # 640x427 each
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % len(photos)]
        w = int(rng.integers(200, photo.width))
        h = min(photo.height, int(w * rng.uniform(0.6, 1.0)))
        left, top = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        side = (int(rng.integers(480, 521)), int(rng.integers(355, 396)))
        size = side if rng.random() < 0.75 else side[::-1]
        image = photo.crop((left, top, left + w, top + h)).resize(size, Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        (folder / f"class{i % 10}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"class{i % 10}" / f"{i:06d}.jpg", quality=90)
    return time.perf_counter() - start


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process from /proc (Linux): total, private (RssAnon) and file-backed (RssFile: the
    memory-mapped cache and libraries, shared and reclaimable), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class Peaks:
    """Peak memory of this process and of its largest DataLoader worker, sampled after every batch."""

    def __init__(self):
        self.main, self.worker = {}, {}

    def sample(self) -> None:
        import psutil

        for target, pids in ((self.main, [os.getpid()]), (self.worker, [c.pid for c in psutil.Process().children()])):
            for pid in pids:
                try:
                    now = memory_mb(pid)
                except OSError:
                    continue
                for key, value in now.items():
                    target[key] = max(target.get(key, 0.0), value)


def rate(batches, count: int, transform, peaks: Peaks) -> float:
    """Images/s over ``count`` batches (at most the epoch's, less one) after one warm-up batch (worker start-up
    excluded); memory sampled after each batch (outside the timed work)."""
    count = min(count, len(batches) - 1)
    it = iter(batches)
    transform(next(it))
    n, busy = 0, 0.0
    for _ in range(count):
        start = time.perf_counter()
        n += transform(next(it))
        busy += time.perf_counter() - start
        peaks.sample()
    return n / busy


def job_prepare(args) -> dict:
    """hfssl's preparation of the folder, fresh cache: seconds, cache bytes."""
    from hfssl.vision.data import ImageDataArgs, load_images

    cache = Path(args.cache)
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    data = load_images(ImageDataArgs(data=args.folder, image_size=args.image_size, eval_fraction=0,
                                     normalize="imagenet", cache_dir=str(cache), storage=args.storage))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cache_bytes": folder_bytes(cache), "images": len(data.train), "storage": data.storage}


def job_hfssl(args) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from hfssl.vision.data import ImageDataArgs, load_images
    from hfssl.vision.loader import PIXELS, collate_images
    from hfssl.vision.transforms import AugmentArgs, ImageViews, training_data

    data = load_images(ImageDataArgs(data=args.folder, image_size=args.image_size, eval_fraction=0,
                                     normalize="imagenet", cache_dir=args.cache))
    epoch_data, device_crop = training_data(data, AugmentArgs(crop_min_scale=0.08), seed=0)
    views = ImageViews(MEAN, STD, device_crop)

    def loader(epoch: int):
        return DataLoader(epoch_data(epoch).shuffle(seed=epoch), batch_size=args.batch_size, collate_fn=collate_images,
                          num_workers=args.workers, drop_last=True, generator=torch.Generator().manual_seed(0))

    peaks = Peaks()
    uint8 = rate(loader(0), args.batches, lambda batch: len(batch[PIXELS]), peaks)  # what goes to the device
    # and with the normalisation the training step does on the device, here on this CPU in the main process
    normalised = rate(loader(1), args.batches, lambda batch: len(views(batch[PIXELS])), peaks)
    return {"images_per_s": uint8, "normalised_images_per_s": normalised, "main": peaks.main, "worker": peaks.worker}


def job_plain(args) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomResizedCrop(args.image_size, scale=(0.08, 1.0), antialias=True),
                            v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(MEAN, STD)])
    start = time.perf_counter()
    dataset = ImageFolder(args.folder, transform=transform)
    scan = time.perf_counter() - start
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    peaks = Peaks()
    images_per_s = rate(loader, args.batches, lambda batch: len(batch[0]), peaks)
    return {"images_per_s": images_per_s, "scan_seconds": scan, "main": peaks.main, "worker": peaks.worker}


def subprocess_job(job: str, args, **extra) -> dict:
    flags = [f"--{k}={v}" for k, v in {**vars(args), **extra}.items()
             if not isinstance(v, (list, bool)) and v is not None and k != "job"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--job", job, *flags], capture_output=True, text=True, env=env,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", default="/tmp/image_loader")
    p.add_argument("--num_images", type=int, nargs="+", default=[5000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="runs of each loader (alternating); the median is shown")
    p.add_argument("--skip_decoded", action="store_true", help="do not time the decoded storage's preparation")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    for hidden in ("folder", "cache", "storage"):
        p.add_argument(f"--{hidden}", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workers_one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.job:
        import torch

        torch.set_num_threads(args.threads)
        args.workers = args.workers_one
        print(json.dumps({"prepare": job_prepare, "hfssl": job_hfssl, "plain": job_plain}[args.job](args)))
        return

    work = Path(args.work_dir)
    rows = []
    for n in args.num_images:
        folder = work / f"jpegs_{n}"
        made = make_folder(folder, n)
        jpeg = folder_bytes(folder)
        print(f"\n{n} JPEGs, {jpeg / 1e6:.1f} MB ({jpeg / n / 1e3:.1f} KB each){f', made in {made:.0f} s' if made else ''}")
        cache = work / f"cache_{n}"
        enc = subprocess_job("prepare", args, folder=folder, cache=cache, storage="encoded")
        print(f"  preparation, encoded storage: {enc['seconds']:.1f} s, cache {enc['cache_bytes'] / 1e6:.1f} MB "
              f"= {enc['cache_bytes'] / jpeg:.2f}x the folder")
        if not args.skip_decoded:
            dec = subprocess_job("prepare", args, folder=folder, cache=work / f"cache_{n}_decoded", storage="decoded")
            print(f"  preparation, decoded storage: {dec['seconds']:.1f} s, cache {dec['cache_bytes'] / 1e6:.1f} MB "
                  f"= {dec['cache_bytes'] / jpeg:.2f}x the folder")
            shutil.rmtree(work / f"cache_{n}_decoded", ignore_errors=True)
        for w in args.workers:
            runs = [(subprocess_job("hfssl", args, folder=folder, cache=cache, workers_one=w),
                     subprocess_job("plain", args, folder=folder, workers_one=w)) for _ in range(args.repeats)]
            ours = {k: median([r[0][k] for r in runs]) for k in ("images_per_s", "normalised_images_per_s")}
            plain = median([r[1]["images_per_s"] for r in runs])
            memory = {side: {part: {k: max(r[i][part].get(k, 0) for r in runs) for k in ("VmRSS", "RssAnon")}
                             for part in ("main", "worker")} for i, side in enumerate(("hfssl", "plain"))}
            rows.append((n, w, ours, plain, memory))
            print(f"  {w} worker(s), median of {args.repeats}: hfssl {ours['images_per_s']:.0f} images/s (uint8 to the "
                  f"device; {ours['normalised_images_per_s']:.0f} normalised here), plain {plain:.0f}; {memory}")
    print("\n| images | workers | hfssl images/s (uint8 batches) | hfssl, normalised on this CPU | plain images/s | ratio "
          "| ratio, normalised | peak RSS / private MB, hfssl main + worker | plain main + worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, w, ours, plain, memory in rows:
        mem = {side: " + ".join(f"{m[part]['VmRSS']:.0f} / {m[part]['RssAnon']:.0f}" for part in ("main", "worker"))
               for side, m in memory.items()}
        print(f"| {n} | {w} | {ours['images_per_s']:.0f} | {ours['normalised_images_per_s']:.0f} | {plain:.0f} | "
              f"{ours['images_per_s'] / plain:.2f}x | {ours['normalised_images_per_s'] / plain:.2f}x | {mem['hfssl']} | "
              f"{mem['plain']} |")


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2

if __name__ == "__main__":
    main()
