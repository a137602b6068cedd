"""Image-caption pairs -> ``datasets.Dataset`` rows of ``pixel_values`` (``(3, S, S)`` uint8 bytes) + ``caption``.

Sources (``PairDataArgs.data``):

- ``shapes`` (default): the procedural compositional set of :mod:`hfssl.multimodal.shapes`, made on the fly; the
  held-out pairs are pictures of colour-shape combinations no training picture shows.
- ``fashion_mnist``: the embedded Fashion-MNIST subset (read by :mod:`hfssl.vision.data`), each image captioned
  by a class-name prompt template drawn from the seed and its row ("a photo of a sneaker.").
- a path: a captions file (CSV or JSON lines with ``image`` and ``caption`` columns; image paths relative to the
  file), a folder holding one (``captions.csv``, ``captions.jsonl``, ``metadata.csv`` or ``metadata.jsonl``),
  or a ``save_to_disk`` folder with an image and a text column.

Every image is decoded once to ``image_size`` squares (bilinear, as ``ViTImageProcessor`` resizes), in memory:
meant for sets of up to some 100k small pictures. A row without an image or a caption, whose image file is missing
or cannot be decoded, or whose caption is empty, is skipped, counted and named (:attr:`Pairs.skipped`; the recipe
names the first few in its log line and the model card, and all in ``OUTPUT/skipped_pairs.tsv``). A column that no
row has (a wrong ``--image_column`` / ``--caption_column``), or a source with no usable row left, is a one-line
error naming the file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from hfssl.errors import UserError
from hfssl.multimodal.shapes import SHAPES, make_shapes
from hfssl.vision.data import ImageDataArgs, decode_image, load_images

FASHION_PROMPT_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                        "ankle boot"]
TEMPLATES = ["a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}."]
CAPTION_FILES = ("captions.csv", "captions.jsonl", "metadata.csv", "metadata.jsonl")
MAX_NAMED = 5  # skipped rows named in the log line and the model card (all of them: OUTPUT/skipped_pairs.tsv)
SKIPPED_FILE = "skipped_pairs.tsv"


@dataclass
class PairDataArgs:
    """Where the image-caption pairs come from and how they are prepared."""

    data: str = field(default="shapes", metadata={"help": "shapes (procedural, held-out colour-shape combinations), "
                      "fashion_mnist (embedded, captioned by prompt templates), or a path: captions CSV / JSON lines "
                      "file (image, caption), a folder holding one, or a save_to_disk folder."})
    eval_data: str | None = field(default=None, metadata={"help": "Separate held-out pairs (a path, as --data)."})
    image_column: str = field(default="image", metadata={"help": "Image column of a captions file / dataset."})
    caption_column: str = field(default="caption", metadata={"help": "Caption column of a captions file / dataset."})
    image_size: int | None = field(default=None, metadata={"help": "Side of the square images (default 32, or the "
                                   "--vision_model_name_or_path processor's)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Held-out fraction of a path without --eval_data."})
    shapes_train: int = field(default=10000, metadata={"help": "shapes: training pictures."})
    shapes_eval: int = field(default=1000, metadata={"help": "shapes: held-out pictures (held-out combinations)."})
    max_text_length: int = field(default=32, metadata={"help": "Captions are cut to this many tokens."})
    vocab_size: int = field(default=2000, metadata={"help": "Caption vocabulary of a new text tower."})
    zero_shot_templates: list[str] = field(default_factory=lambda: list(TEMPLATES), metadata={
        "help": "Prompt templates ({} = class name) whose text embeddings are averaged for zero-shot accuracy."})

    def __post_init__(self):
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("shapes_train", "shapes_eval", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_text_length < 3:
            raise ValueError(f"--max_text_length must be at least 3 ([CLS], a word, [SEP]), got {self.max_text_length}")
        if self.image_size is not None and self.image_size < 4:
            raise ValueError(f"--image_size {self.image_size} is too small, use 4 pixels or more")
        bad = [t for t in self.zero_shot_templates if "{}" not in t]
        if not self.zero_shot_templates or bad:
            raise ValueError(f"--zero_shot_templates: every template needs a {{}} for the class name, got {bad or 'none'}")


@dataclass
class Pairs:
    train: datasets.Dataset  # pixel_values, caption (+ label)
    eval: datasets.Dataset | None
    label_names: list[str] | None  # prompt names of the labels, for zero-shot accuracy
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    retrieval: bool = True  # False when captions are class prompts (many identical): ranking pairs means nothing
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file:line or row, why) of rows not used


def load_pairs(args: PairDataArgs, seed: int, image_size: int) -> Pairs:
    """The training and held-out pairs of ``args``, decoded to ``image_size`` squares, with pixel statistics."""
    skipped: list[tuple[str, str]] = []
    if args.data == "shapes":
        train = make_shapes(args.shapes_train, seed=seed, held_out=False, image_size=image_size)
        eval_ = make_shapes(args.shapes_eval, seed=seed, held_out=True, image_size=image_size)
        names, retrieval = list(SHAPES), True
        what = (f"procedural shapes: {len(train)} training pictures and {len(eval_)} held-out pictures of colour-shape "
                f"combinations never seen in training (seed {seed})")
    elif args.data == "fashion_mnist":
        images = load_images(ImageDataArgs(image_size=image_size, storage="decoded", normalize="dataset"), seed=seed)
        train, eval_ = (_prompted(d, seed + i, args.zero_shot_templates) for i, d in enumerate((images.train, images.eval)))
        names, retrieval = FASHION_PROMPT_NAMES, False
        what = f"the embedded Fashion-MNIST subset, captioned by prompt templates ({len(train)} train, {len(eval_)} held out)"
    else:
        train, skipped = read_pairs(args.data, args, image_size, "--data")
        if args.eval_data:
            eval_, bad = read_pairs(args.eval_data, args, image_size, "--eval_data")
            skipped += bad
        elif args.eval_fraction > 0 and len(train) >= 2:
            split = train.train_test_split(test_size=args.eval_fraction, seed=seed)
            train, eval_ = split["train"], split["test"]
        else:
            eval_ = None
        names, retrieval = None, True
        what = f"{args.data}: {len(train)} training pairs, {len(eval_) if eval_ is not None else 0} held out"
        what += f", {len(skipped)} rows skipped" + (f" ({named(skipped)}; all in {SKIPPED_FILE})" if skipped else "")
    mean, std = pixel_statistics(train)
    return Pairs(train, eval_, names, image_size, mean, std, what, retrieval, skipped)


def _prompted(images: datasets.Dataset, seed: int, templates: list[str]) -> datasets.Dataset:
    """Fashion-MNIST rows + a caption each: a template (drawn from ``seed`` and the row) around the class name."""
    picks = np.random.default_rng(seed).integers(len(templates), size=len(images))
    captions = [templates[t].format(FASHION_PROMPT_NAMES[y]) for t, y in zip(picks, images["label"])]
    return images.add_column("caption", captions)


def _caption_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    return next((path / n for n in CAPTION_FILES if (path / n).is_file()), None)


def _rows(file: Path, args: PairDataArgs, flag: str) -> list[tuple[str, dict]]:
    """(where, row) of a CSV or JSON-lines captions file; ``where`` is ``file:line``."""
    if file.suffix.lower() == ".csv":
        with file.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            _check_columns(reader.fieldnames or [], f"{flag} {file}", args)
            return [(f"{file}:{i + 2}", row) for i, row in enumerate(reader)]
    rows = []
    for i, line in enumerate(file.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as err:
                raise UserError(f"{file} line {i + 1} is not valid JSON ({err}); write one JSON object per line "
                                f"with {args.image_column!r} and {args.caption_column!r}") from None
            if not isinstance(row, dict):
                raise UserError(f"{file} line {i + 1} is not a JSON object; write one object per line with "
                                f"{args.image_column!r} and {args.caption_column!r}")
            rows.append((f"{file}:{i + 1}", row))
    if rows:  # a key no row has is a column the flags name wrongly; a key some rows lack makes those rows skipped
        _check_columns(sorted(set().union(*(r for _, r in rows))), f"{flag} {file}", args)
    return rows


def read_pairs(path: str, args: PairDataArgs, size: int, flag: str) -> tuple[datasets.Dataset, list[tuple[str, str]]]:
    """A captions file (or a folder holding one) or a ``save_to_disk`` folder -> (pixel_values + caption rows,
    skipped rows as (where, why)). A row without an image or a caption, whose image file is missing or cannot be
    decoded, or whose caption is empty is skipped and named; a source with no usable row left is an error."""
    where = Path(path).expanduser()
    if not where.exists():
        raise UserError(f"{flag} {path}: no such file or folder; give a captions CSV / JSON lines file, a folder "
                        "holding one, or a save_to_disk folder")
    if where.is_dir() and (where / "state.json").is_file():
        ds = datasets.load_from_disk(str(where))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        _check_columns(ds.column_names, f"{flag} {path}", args)
        if isinstance(ds.features[args.image_column], datasets.Image):
            ds = ds.cast_column(args.image_column, datasets.Image(decode=False))
        rows = [(f"{path} row {i}", r) for i, r in enumerate(ds.select_columns([args.image_column, args.caption_column]))]
        base, source = where, path
    else:
        file = _caption_file(where)
        if file is None:
            raise UserError(f"{flag} {path}: the folder holds no {', '.join(CAPTION_FILES)} and is not a save_to_disk "
                            "folder; add a captions file with image and caption columns")
        if file.suffix.lower() not in (".csv", ".jsonl", ".json"):
            raise UserError(f"{flag} {file}: not a .csv or .jsonl captions file; write CSV or JSON lines with "
                            f"{args.image_column!r} and {args.caption_column!r} columns")
        rows, base, source = _rows(file, args, flag), file.parent, str(file)
    pixels, captions, skipped = [], [], []
    for where_row, row in rows:
        why = _caption_problem(row, args)
        image, why = (None, why) if why else _decode(row, base, args, size)
        if why:
            skipped.append((where_row, why))
        else:
            pixels.append(image)
            captions.append(row[args.caption_column])
    if not pixels:
        detail = f"all {len(skipped)} rows were skipped ({named(skipped)})" if skipped else "it has no rows"
        raise UserError(f"{flag} {source} holds no usable pairs: {detail}; add rows with an image file and a caption "
                        "(or set --image_column / --caption_column)")
    return datasets.Dataset.from_dict({"pixel_values": pixels, "caption": captions},
                                      features=datasets.Features({"pixel_values": datasets.Value("binary"),
                                                                  "caption": datasets.Value("string")})), skipped


def named(skipped: list[tuple[str, str]], limit: int = MAX_NAMED) -> str:
    """The first ``limit`` skipped rows as ``where (why)``, and how many more."""
    text = "; ".join(f"{where} ({why})" for where, why in skipped[:limit])
    return text + (f"; and {len(skipped) - limit} more" if len(skipped) > limit else "")


def write_skipped(skipped: list[tuple[str, str]], path: Path) -> Path:
    """Every skipped row, ``where<TAB>why`` per line (the run's full list; the log names only the first few)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{w}\t{y}".replace("\n", " ") + "\n" for w, y in skipped)
    path.write_text("where\twhy\n" + lines, encoding="utf-8")
    return path


def _check_columns(columns, where: str, args: PairDataArgs) -> None:
    """A source without the image or the caption column at all: a flag to set, not rows to skip."""
    for column, name in ((args.image_column, "--image_column"), (args.caption_column, "--caption_column")):
        if column not in columns:
            raise UserError(f"{where}: no column {column!r} (columns: {list(columns)}); set {name}")


def _caption_problem(row: dict, args: PairDataArgs) -> str | None:
    """Why a row's caption cannot be used (None when it can)."""
    text = row.get(args.caption_column)
    if text is None:
        return f"no {args.caption_column!r}"
    if not isinstance(text, str):
        return f"the caption is a {type(text).__name__}, not text"
    return None if text.strip() else "empty caption"


def _decode(row: dict, base: Path, args: PairDataArgs, size: int) -> tuple[bytes | None, str | None]:
    """A row's image -> ((3, S, S) uint8 bytes, None), or (None, why it cannot be used)."""
    value = row.get(args.image_column)
    raw = value.get("bytes") if isinstance(value, dict) else None
    name = value.get("path") if isinstance(value, dict) else value
    if raw is None:
        if not isinstance(name, str) or not name.strip():
            return None, "no image named"
        file = (base / name).expanduser()
        if not file.is_file():
            return None, f"image {name} does not exist"
    try:
        with Image.open(io.BytesIO(raw) if raw is not None else file) as image:
            return decode_image(image, size).tobytes(), None
    except Exception as err:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, ...)
        return None, f"image {name} cannot be decoded: {type(err).__name__}: {' '.join(str(err).split())[:120]}"


def pixel_statistics(data: datasets.Dataset, limit: int = 5000) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0..1 scale) of up to ``limit`` training pictures (the first ones)."""
    rows = data.select(range(min(limit, len(data))))["pixel_values"]
    pixels = np.stack([np.frombuffer(r, dtype=np.uint8) for r in rows]).reshape(len(rows), 3, -1) / 255.0
    mean, std = pixels.mean(axis=(0, 2)), pixels.std(axis=(0, 2))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


def tokenize_pairs(data: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Add ``input_ids`` (with ``[CLS]`` / ``[SEP]``, cut to ``max_length``); keep pixels, caption and label."""
    return data.map(lambda b: {"input_ids": tokenizer(b["caption"], truncation=True, max_length=max_length)["input_ids"]},
                    batched=True, desc="tokenizing captions")


class PairCollator:
    """Rows -> ``pixel_values`` ``(B, 3, S, S)`` normalised floats + padded ``input_ids``, ``attention_mask``,
    ``token_type_ids`` ``(B, T)``. No randomness: CLIP trains on the pictures as they are (a flip would swap
    "left of" and "right of")."""

    def __init__(self, mean, std, pad_id: int, image_size: int):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.pad_id, self.size = pad_id, image_size

    def pixels(self, rows: list[bytes]) -> torch.Tensor:
        raw = np.stack([np.frombuffer(r, dtype=np.uint8) for r in rows]).reshape(len(rows), 3, self.size, self.size)
        return (torch.from_numpy(raw).float() / 255 - self.mean) / self.std  # (B, 3, S, S)

    def texts(self, ids: list[list[int]]) -> dict:
        longest = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}

    def __call__(self, rows: list[dict]) -> dict:
        return {"pixel_values": self.pixels([r["pixel_values"] for r in rows]),
                **self.texts([r["input_ids"] for r in rows])}
