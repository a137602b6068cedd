"""The loader side of both storage modes: rows -> ``(B, 3, S, S)`` uint8 batches.

Decoded storage holds ``pixel_values`` bytes; encoded storage holds the files' bytes, decoded in the DataLoader
worker that fetches them (:class:`DecodeInWorkers`). A file whose header looked fine when the data was prepared can
still fail when it is decoded whole (a JPEG damaged in the middle): the worker names it in a warning, a grey image
stands in for it so that a run never dies of one bad file, and, when a run has set a log with
:func:`log_decode_failures`, the file is appended there (any worker, any process), so that the run can count and
name every such file at its end (:func:`read_decode_failures`) in its output and model card.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import default_collate

from hfssl.vision.encoded import ENCODED, ROW, SOURCE, decode_crops

PIXELS = "pixel_values"
PIXELS_2 = "pixel_values_2"  # a second crop of each image (contrastive views, encoded storage)

DECODE_FAILURES = "decode_failures.tsv"  # in a run's output folder (a new run there starts without it)
_failure_log: Path | None = None  # where decode transforms made from now on record the files they cannot decode


def log_decode_failures(output_dir: str | Path) -> Path:
    """Record, from now on, every file that fails to decode when read to ``output_dir/decode_failures.tsv`` (one
    ``source<TAB>reason`` line each, appended), until :func:`stop_decode_failure_log`. Transforms made afterwards
    carry the path into the loader's workers. A new run in that folder starts without the file
    (:data:`hfssl.checkpoint.RUN_FILES`); a resumed run keeps adding to it."""
    global _failure_log
    _failure_log = Path(output_dir) / DECODE_FAILURES
    return _failure_log


def stop_decode_failure_log() -> Path | None:
    """Stop recording; returns the log that was in use (None if none was)."""
    global _failure_log
    path, _failure_log = _failure_log, None
    return path


def read_decode_failures(path: str | Path | None) -> list[tuple[str, str]]:
    """The distinct files in a log of :func:`log_decode_failures`, in the order they first failed: (source, why)."""
    if path is None or not Path(path).is_file():
        return []
    seen: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        source, _, why = line.partition("\t")
        seen.setdefault(source, why)
    return list(seen.items())


def _record(path: Path | None, source: str, why: str) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (f"{source}\t{why}".replace("\n", " ") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write per line: workers never interleave
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class DecodeInWorkers:
    """A ``Dataset.with_transform`` function for encoded storage: each fetched row's ``image_bytes`` decoded
    (in the DataLoader worker that fetches it) -> ``pixel_values`` ``(3, S, S)`` uint8, the centre square resized
    to ``size`` (evaluation, kNN banks, statistics); :class:`hfssl.vision.transforms.EncodedCrops` draws random
    crops instead. Other columns pass through. A file that fails to decode here (a cut file whose header looked
    fine) is named in a warning and in the run's failure log (:func:`log_decode_failures`), and a grey image
    stands in for it."""

    views = 1

    def __init__(self, size: int):
        self.size = size
        self.failure_log = _failure_log

    def draws(self, width: int, height: int, row: int) -> list[tuple]:
        """(box (top, left, h, w) or None for the centre square, flip) for each view of one image."""
        return [(None, False)]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {k: v for k, v in batch.items() if k not in (ENCODED, ROW, SOURCE)}
        views = [[] for _ in range(self.views)]
        for data, row, source in zip(batch[ENCODED], batch[ROW], batch[SOURCE]):
            try:
                crops = decode_crops(data, self.size, lambda w, h, row=row: self.draws(w, h, row))
            except Exception as err:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, ...)
                why = f"{type(err).__name__}: {str(err)[:200]}"
                warnings.warn(f"{source} could not be decoded ({why}); a grey image stands in for it", stacklevel=2)
                _record(self.failure_log, source, why)
                crops = [np.full((3, self.size, self.size), 128, np.uint8)] * self.views
            for view, crop in zip(views, crops):
                view.append(torch.from_numpy(crop))
        out[PIXELS] = views[0]
        if self.views > 1:
            out[PIXELS_2] = views[1]
        return out


def as_pixels(ds: datasets.Dataset, size: int, keep: tuple[str, ...] = ("label",)) -> datasets.Dataset:
    """``ds`` with ``pixel_values`` (and the ``keep`` columns it has): decoded storage as it is; encoded storage
    decoded when rows are fetched (:class:`DecodeInWorkers`, centre squares), never all at once."""
    keep = [c for c in keep if c in ds.column_names]
    if PIXELS in ds.column_names:
        return ds.select_columns([PIXELS, *keep])
    return ds.select_columns([ENCODED, ROW, SOURCE, *keep]).with_transform(DecodeInWorkers(size))


def pixels_from_bytes(values: list) -> torch.Tensor:
    """Rows of ``pixel_values`` bytes (decoded storage) or ``(3, S, S)`` uint8 tensors (encoded storage, decoded
    by :class:`DecodeInWorkers`) -> ``(B, 3, S, S)`` uint8."""
    if isinstance(values[0], torch.Tensor):
        # default_collate stacks straight into shared memory inside a DataLoader worker; a torch.stack there is
        # copied into shared memory when sent, and the worker's private memory grew by a batch every batch
        return default_collate(values)
    side = math.isqrt(len(values[0]) // 3)
    if 3 * side * side != len(values[0]):
        raise ValueError(f"pixel_values of {len(values[0])} bytes is not a (3, S, S) image")
    return torch.frombuffer(bytearray(b"".join(values)), dtype=torch.uint8).view(len(values), 3, side, side)


def collate_images(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Loader collate: ``pixel_values`` (B, 3, S, S) uint8, ``label`` -> ``labels``, other columns stacked."""
    batch = {key: pixels_from_bytes([r[key] for r in rows]) for key in (PIXELS, PIXELS_2) if key in rows[0]}
    for key in rows[0]:
        if key not in batch:
            batch["labels" if key == "label" else key] = torch.tensor(np.asarray([r[key] for r in rows]))
    return batch
