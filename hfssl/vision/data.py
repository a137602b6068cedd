"""Images -> a ``datasets.Dataset`` of fixed-size RGB uint8 pictures, decoded once.

Sources (``ImageDataArgs.data``): an image folder (``datasets`` imagefolder layout, class sub-folders
optional), a ``save_to_disk`` folder with an ``Image`` column, arrays (``.npz`` with ``x`` / ``y``, or
Fashion-MNIST IDX files), or nothing for the embedded Fashion-MNIST subset.

Every image is opened once, converted to RGB (grey, palette, CMYK, 16-bit and transparent images
included; transparency is composited onto white, as transformers' image processors do) and resized to
``image_size`` x ``image_size`` (bilinear, aspect ratio not kept: what ``ViTImageProcessor`` does),
by one batched ``map`` that ``datasets`` caches for file-backed sources. The result has a
``pixel_values`` column of raw bytes (a ``(3, S, S)`` uint8 array) and ``label`` when there are labels:
raw bytes read ten times faster than an ``Array3D`` column, so the loader is never the bottleneck.
A file that cannot be decoded is skipped, counted and named in the :class:`ImageReport`; in encoded storage a
file that only fails when decoded whole during training is counted and named at the end of the run
(:mod:`hfssl.vision.loader`).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageOps

from hfssl.files import looks_like
from hfssl.vision.arrays import arrays_to_pixels, idx_splits
from hfssl.vision.encoded import SMALL_IMAGE, encode_batch, to_rgb
from hfssl.vision.loader import (
    PIXELS,
    as_pixels,
    pixels_from_bytes,
    read_decode_failures,
    stop_decode_failure_log,
)

DEFAULT_IMAGE_SIZE = 32
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"]
EVAL_SPLITS = ("test", "validation", "valid", "eval")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_MAX_NAMED = 20  # skipped files listed by name in the report


@dataclass
class ImageDataArgs:
    """Where the images come from and how they are prepared."""

    data: str | None = field(default=None, metadata={"help": "Image folder, save_to_disk folder, .npz (x, y), IDX "
                             "file or folder of IDX files. Default: the embedded Fashion-MNIST subset."})
    eval_data: str | None = field(default=None, metadata={"help": "Separate evaluation images (same kinds as --data)."})
    image_column: str = field(default="image", metadata={"help": "Image column of a save_to_disk dataset."})
    label_column: str = field(default="label", metadata={"help": "Label column (absent: no labels)."})
    image_size: int | None = field(default=None, metadata={"help": "Side of the square images fed to the model "
                                   f"(default {DEFAULT_IMAGE_SIZE}, or the pretrained model's size)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Held-out fraction when the data has no test split."})
    max_train_images: int | None = field(default=None, metadata={"help": "Use a random subset of the training images."})
    normalize: str | None = field(default=None, metadata={"help": "Pixel mean/std: 'dataset' (from the training "
                                  "images) or 'imagenet'; unset: the --model_name_or_path processor's, else 'dataset'."})
    storage: str = field(default="auto", metadata={"help": "'decoded': every image decoded once to image_size x "
                         "image_size pixels (arrays, IDX, small images); 'encoded': the files' bytes kept, decoded and "
                         f"cropped from the original in the loader's workers; 'auto': decoded up to {SMALL_IMAGE} px."})
    max_side: int | None = field(default=None, metadata={"help": "Encoded storage: re-encode (JPEG, once) images "
                                 "whose longer side is above this (e.g. 256 or 512); unset: keep the files as they are."})
    jpeg_quality: int = field(default=90, metadata={"help": "JPEG quality of images re-encoded for --max_side."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for decoding images."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: HF cache)."})

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 4:
            raise ValueError(f"--image_size {self.image_size} is too small, use 4 pixels or more")
        for name in ("max_train_images", "num_proc"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 (or unset), got {getattr(self, name)}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction={self.eval_fraction} must be in [0, 1)")
        if self.storage not in ("auto", "decoded", "encoded"):
            raise ValueError(f"--storage must be auto, decoded or encoded, not {self.storage!r}")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"--max_side {self.max_side} is too small, use 8 pixels or more (or unset)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.normalize not in (None, "dataset", "imagenet"):
            raise ValueError(f"--normalize must be 'dataset' or 'imagenet' (or unset), not {self.normalize!r}")


def settle(args: ImageDataArgs, model_stats: bool = False) -> ImageDataArgs:
    """Resolve the automatic choices of ``args`` before a recipe takes the settings its checkpoints store, so
    they record what the run does: ``storage`` auto -> decoded / encoded (:func:`storage_for`), ``normalize``
    unset -> 'dataset' unless a model folder gives statistics (``model_stats``)."""
    args.storage = storage_for(args, args.image_size or DEFAULT_IMAGE_SIZE)
    if args.normalize is None and not model_stats:
        args.normalize = "dataset"
    return args


@dataclass
class ImageReport:
    """What was read; printed so that nothing disappears unnoticed."""

    source: str
    train: int = 0
    eval: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or row, reason)
    storage: str = "decoded"
    failed_when_read: list[tuple[str, str]] = field(default_factory=list)  # passed the header check, failed later

    def __str__(self) -> str:
        text = (f"images: {self.train} train + {self.eval} eval from {self.source} (stored {self.storage}), "
                f"{len(self.skipped)} skipped")
        if self.skipped:
            text += f" (could not be decoded: {_named(self.skipped)})"
        if self.failed_when_read:
            text += (f"; {len(self.failed_when_read)} failed to decode when read during the run, a grey image stood "
                     f"in for each: {_named(self.failed_when_read)}")
        return text


def close_decode_failures(report: ImageReport, metrics: dict, log=print) -> str | None:
    """At the end of a run (main process): stop the run's log of :func:`hfssl.vision.loader.log_decode_failures`,
    put the files that failed to decode when read into ``report`` (and so into the model card) and their count into
    ``metrics`` (``images_failed_to_decode``), and ``log`` one warning line naming them. Returns that line (None
    when no file failed)."""
    path = stop_decode_failure_log()
    report.failed_when_read = read_decode_failures(path)
    if not report.failed_when_read:
        return None
    metrics["images_failed_to_decode"] = len(report.failed_when_read)
    line = (f"warning: {len(report.failed_when_read)} image(s) failed to decode when read during the run and a grey "
            f"image stood in for each: {_named(report.failed_when_read)} (all listed in {path}); "
            "remove or replace those files")
    log(line)
    return line


def _named(files: list[tuple[str, str]]) -> str:
    named = "; ".join(f"{where} ({why})" for where, why in files[:_MAX_NAMED])
    more = len(files) - _MAX_NAMED
    return named + (f"; and {more} more" if more > 0 else "")


@dataclass
class ImageData:
    """Images ready for training: ``train`` / ``eval`` have ``pixel_values`` (decoded storage) or ``image_bytes``,
    ``row``, ``source`` (encoded storage), + ``label``. :func:`as_pixels` gives either as ``pixel_values``."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    label_names: list[str] | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    report: ImageReport
    storage: str = "decoded"


def decode_image(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image -> ``(3, size, size)`` uint8, EXIF rotation applied, bilinear resize."""
    rgb = to_rgb(ImageOps.exif_transpose(image) or image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def _open(value) -> tuple[Image.Image, str | None]:
    """An Image-column value (``{"bytes", "path"}``, a path, a PIL image or an array) -> (image, path)."""
    if isinstance(value, Image.Image):
        return value, None
    if isinstance(value, np.ndarray):
        return Image.fromarray(value), None
    if isinstance(value, str):
        return Image.open(value), value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        raw = value.get("bytes")
        return Image.open(io.BytesIO(raw) if raw else value["path"]), value.get("path")
    raise TypeError(f"not an image: {type(value).__name__}")


def _decode_batch(batch: dict, indices: list[int], column: str, size: int) -> dict:
    """Batched ``map``: image column -> ``pixel_values`` bytes, and ``_error`` ("" or "where: why")."""
    pixels, errors = [], []
    for value, index in zip(batch[column], indices):
        path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
        try:  # a bad file must never kill a map worker: it is recorded and dropped afterwards
            image, path = _open(value)
            with image:
                pixels.append(decode_image(image, size).tobytes())
            errors.append("")
        except Exception as err:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, ...)
            pixels.append(b"")
            errors.append(f"{path or f'row {index}'}\t{type(err).__name__}: {str(err)[:200]}")
    return {PIXELS: pixels, "_error": errors}


def _map_images(raw: datasets.Dataset, args: ImageDataArgs, where: str, fn, fn_kwargs: dict, verb: str):
    """Run ``fn`` (a batched map returning an ``_error`` column) over the image column of ``raw`` (cached), keeping
    the label column; rows with an error are dropped and returned as (source, reason) -> (dataset, skipped)."""
    if args.image_column not in raw.column_names:
        raise ValueError(f"{where}: no image column {args.image_column!r}; columns are {raw.column_names} "
                         "(set --image_column)")
    if isinstance(raw.features[args.image_column], datasets.Image):
        raw = raw.cast_column(args.image_column, datasets.Image(decode=False))  # we decode, errors included
    keep = [args.label_column] if args.label_column in raw.column_names else []
    mapped = raw.map(fn, batched=True, batch_size=256, with_indices=True, num_proc=args.num_proc,
                     fn_kwargs={"column": args.image_column, **fn_kwargs},
                     remove_columns=[c for c in raw.column_names if c not in keep], desc=f"{verb} {where}")
    skipped = [tuple(e.split("\t", 1)) for e in mapped["_error"] if e]
    if skipped:
        mapped = mapped.filter(lambda e: [not x for x in e], input_columns="_error", batched=True,
                               batch_size=10_000, desc="dropping unreadable images")
    return mapped.remove_columns("_error"), skipped


def _decode_dataset(raw: datasets.Dataset, args: ImageDataArgs, size: int, where: str):
    """Decode an Image-column dataset once (cached) -> (dataset of pixel_values [+ label], skipped)."""
    return _map_images(raw, args, where, _decode_batch, {"size": size}, "decoding")


def _encode_dataset(raw: datasets.Dataset, args: ImageDataArgs, where: str):
    """Keep an Image-column dataset's encoded bytes (checked from their headers, re-encoded once to ``max_side``
    when asked; cached) -> (dataset of image_bytes, row, source [+ label], skipped)."""
    return _map_images(raw, args, where, encode_batch, {"max_side": args.max_side, "quality": args.jpeg_quality},
                       "reading")


def storage_for(args: ImageDataArgs, size: int) -> str:
    """The storage of image files: ``--storage``, or for ``auto`` decoded up to SMALL_IMAGE px, else encoded."""
    if args.storage != "auto":
        return args.storage
    return "decoded" if size <= SMALL_IMAGE else "encoded"


def _class_labels(ds: datasets.Dataset, column: str) -> tuple[datasets.Dataset, list[str] | None]:
    """Rename the label column to ``label``; strings become class ids. Returns (dataset, names)."""
    if column not in ds.column_names:
        return ds, None
    if column != "label":
        ds = ds.rename_column(column, "label")
    feature = ds.features["label"]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        ds = ds.class_encode_column("label")
        feature = ds.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return ds, list(feature.names)
    top = max(ds["label"], default=-1)
    return ds, [str(i) for i in range(top + 1)]


def _array_dataset(x: np.ndarray, y: np.ndarray | None, names: list[str] | None, size: int, where: str):
    """Arrays -> a Dataset of ``pixel_values`` bytes (+ ``label`` as a ClassLabel)."""
    pixels = arrays_to_pixels(x, size, where)
    columns = {PIXELS: [row.tobytes() for row in pixels]}
    features = {PIXELS: datasets.Value("binary")}
    if y is not None:
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(y) != len(pixels):
            raise ValueError(f"{where}: {len(pixels)} images but {len(y)} labels")
        names = names or [str(i) for i in range(int(y.max()) + 1)]
        columns["label"], features["label"] = y, datasets.ClassLabel(names=list(names))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features)), names if y is not None else None


def embedded_folder() -> Path:
    """The embedded Fashion-MNIST subset (IDX .gz files inside the installed package)."""
    folder = Path(str(resources.files("hfssl") / "data" / "fashion_mnist"))
    if not any(folder.glob("*images-idx3-ubyte*")):
        raise FileNotFoundError(f"embedded images missing from {folder}; reinstall hfssl (pip install -e .)")
    return folder


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file, read now (a member of a cut archive fails only when read); a damaged file or
    one holding pickled objects (never loaded) is an error naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        with open(path, "rb") as f:
            kind = looks_like(f.read(64))
        why = ("it is empty" if path.stat().st_size == 0 else "it holds pickled objects, which hfssl never loads"
               if "pickle" in kind or "pickled" in str(err) and not kind else "the zip archive is cut short or damaged"
               if kind.startswith("a zip") else f"it looks like {kind}" if kind
               else f"{type(err).__name__}: {' '.join(str(err).split())[:150]}")
        raise ValueError(f"{path}: not a readable .npz archive of arrays ({why}); the file is truncated, damaged "
                         "or of another format: re-create it with numpy.savez") from None


def _read(path: str | None, args: ImageDataArgs, size: int) -> tuple[dict, list[str] | None, list, str]:
    """One source -> ({split: Dataset}, label names, skipped files, storage). Arrays and IDX files are decoded."""
    p = embedded_folder() if path is None else Path(path).expanduser().absolute()
    if not p.exists():
        raise FileNotFoundError(f"image data not found: {p}")
    if p.suffix == ".npz":
        z = _read_npz(p)
        if "x" not in z:
            raise ValueError(f"{p}: expected an array 'x' of images (and optionally 'y', 'x_test', 'y_test', "
                             f"'label_names'); found {sorted(z)}")
        names = [str(n) for n in z["label_names"]] if "label_names" in z else None
        pairs = {"train": (z["x"], z.get("y")), **({"test": (z["x_test"], z.get("y_test"))} if "x_test" in z else {})}
        out = {s: _array_dataset(x, y, names, size, f"{p}[{s}]") for s, (x, y) in pairs.items()}
        return {s: ds for s, (ds, _) in out.items()}, out["train"][1], [], "decoded"
    if "idx3-ubyte" in p.name or (p.is_dir() and any(p.glob("*images-idx3-ubyte*"))):
        names = FASHION_MNIST_LABELS if path is None else None
        out = {s: _array_dataset(x, y, names, size, str(p)) for s, (x, y) in idx_splits(p).items()}
        return {s: ds for s, (ds, _) in out.items()}, next(iter(out.values()))[1], [], "decoded"
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
        try:
            raw = datasets.load_from_disk(str(p))
        except (OSError, ValueError, pa.ArrowException) as err:  # a damaged or cut .arrow / .json file
            raise ValueError(f"{p}: the save_to_disk folder cannot be read ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}); re-create it with save_to_disk or copy it again") from None
    elif p.is_dir():
        try:
            raw = datasets.load_dataset("imagefolder", data_dir=str(p), cache_dir=args.cache_dir)
        except Exception as err:  # noqa: BLE001 (datasets raises several kinds for an empty folder)
            raise ValueError(f"{p}: no images found ({type(err).__name__}: {err})") from None
    else:
        raise ValueError(f"{p}: unsupported image data; give an image folder, a save_to_disk folder, a .npz file "
                         "or Fashion-MNIST IDX files")
    raw = raw if isinstance(raw, datasets.DatasetDict) else datasets.DatasetDict({"train": raw})
    splits, skipped, names, storage = {}, [], None, storage_for(args, size)
    for split, ds in raw.items():
        if len(ds) == 0:
            continue
        if storage == "encoded":
            ready, bad = _encode_dataset(ds, args, f"{p} [{split}]")
        else:
            ready, bad = _decode_dataset(ds, args, size, f"{p} [{split}]")
        splits[split], names = _class_labels(ready, args.label_column)
        skipped += bad
    return splits, names, skipped, storage


def _pick(splits: dict, eval_split: bool) -> datasets.Dataset | None:
    """The training split (``train`` or the first) or the evaluation split (test / validation)."""
    if eval_split:
        return next((splits[s] for s in EVAL_SPLITS if s in splits), None)
    return splits.get("train", next((d for s, d in splits.items() if s not in EVAL_SPLITS), None))


def load_images(args: ImageDataArgs, seed: int = 0, model_stats: tuple | None = None) -> ImageData:
    """Read, decode (once, cached), split and describe the images of ``args``. Raises on empty data.
    ``model_stats`` (mean, std): a pretrained model's normalisation, used when ``args.normalize`` is unset."""
    size = args.image_size or DEFAULT_IMAGE_SIZE
    splits, names, skipped, storage = _read(args.data, args, size)
    source = args.data or "the embedded Fashion-MNIST subset"
    train, eval_ = _pick(splits, False), _pick(splits, True)
    if args.eval_data:
        eval_splits, eval_names, bad, eval_storage = _read(args.eval_data, args, size)
        if eval_storage != storage:
            raise ValueError(f"--eval_data {args.eval_data} would be stored {eval_storage} and --data {source} "
                             f"{storage}; give both as image folders (or both as arrays), or set --storage")
        eval_, skipped = _pick(eval_splits, True) or _pick(eval_splits, False), skipped + bad
        if names and eval_names and names != eval_names:
            raise ValueError(f"the labels of {args.eval_data} ({eval_names}) differ from those of {source} ({names})")
    if train is None or len(train) == 0:
        detail = f"; all {len(skipped)} files failed to decode, e.g. {skipped[0]}" if skipped else ""
        raise ValueError(f"no training images in {source}{detail}")
    if eval_ is None and args.eval_fraction > 0 and len(train) >= 2:
        parts = train.train_test_split(test_size=args.eval_fraction, seed=seed)
        train, eval_ = parts["train"], parts["test"]
    if args.max_train_images and args.max_train_images < len(train):
        train = train.shuffle(seed=seed).select(range(args.max_train_images))
    if args.normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif args.normalize is None and model_stats is not None:
        mean, std = tuple(model_stats[0]), tuple(model_stats[1])
    else:  # from decoded pixels; with encoded storage from (at most) 1,000 images decoded here, centre squares
        mean, std = channel_stats(as_pixels(subset(train, 1000, seed), size), max_images=1000)
    report = ImageReport(source, len(train), len(eval_) if eval_ is not None else 0, skipped, storage)
    return ImageData(train, eval_, names, size, mean, std, report, storage)


def channel_stats(ds: datasets.Dataset, max_images: int = 10_000) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0..1 scale) of the first ``max_images`` images."""
    total = torch.zeros(3, dtype=torch.float64)
    squares, count = torch.zeros_like(total), 0
    for start in range(0, min(len(ds), max_images), 1000):
        x = pixels_from_bytes(ds[start : min(start + 1000, max_images)][PIXELS]).double() / 255  # (B, 3, S, S)
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
        count += x[:, 0].numel()
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-6).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def subset(ds: datasets.Dataset, n: int, seed: int) -> datasets.Dataset:
    """At most ``n`` rows of ``ds``, a seeded random choice when it has more (e.g. a kNN bank, probe data)."""
    return ds if len(ds) <= n else ds.shuffle(seed=seed).select(range(n))
