"""Image arrays -> the pixels hfssl stores: IDX files (MNIST / Fashion-MNIST), any-dtype arrays to uint8 RGB.

Split out of :mod:`hfssl.vision.data`, which turns every source (folders, ``save_to_disk``, arrays) into one
``datasets.Dataset``; this module only knows numpy arrays and the IDX format.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def full_scale(arr: np.ndarray) -> float:
    """The value that means white for ``arr``: its bit depth for integer images (uint16: 65535, whatever the
    image holds, so a dark 16-bit scan stays dark), the first of 1, 255, 65535 that holds float values."""
    if arr.dtype == np.bool_:
        return 1.0
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize <= 2:
        return float(np.iinfo(arr.dtype).max)  # uint8 255, uint16 65535, int16 32767
    top = float(arr.max(initial=0.0))
    ladder = (255.0, 65535.0, 4294967295.0) if np.issubdtype(arr.dtype, np.integer) else (1.0, 255.0, 65535.0)
    scale = next((s for s in ladder if top <= s), None)
    if scale is None:
        raise ValueError(f"pixel values reach {top:g}, beyond any image bit depth; scale them to 0..1, 0..255 or "
                         "0..65535")
    return scale


def to_uint8(arr: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Any numbers -> uint8, ``scale`` (default :func:`full_scale`: the bit depth) mapping to 255."""
    if arr.dtype == np.uint8 and scale in (None, 255):
        return arr
    scale = full_scale(arr) if scale is None else scale
    return np.clip(arr.astype(np.float64) * (255.0 / scale), 0, 255).round().astype(np.uint8)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST / Fashion-MNIST format, optionally .gz) -> uint8 array of its declared shape."""
    path = Path(path)
    fix = "re-download it (or remove it from the folder)"
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:  # noqa: SIM115
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # a cut or damaged .gz
        raise ValueError(f"{path}: cannot be read ({type(err).__name__}: {err}); the file is truncated or "
                         f"damaged: {fix}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        what = "is empty" if not data else f"is not a uint8 IDX file (bad magic number {data[:4].hex()})"
        raise ValueError(f"{path} {what}; {fix}")
    dims = data[3]
    if len(data) < 4 + 4 * dims:
        raise ValueError(f"{path}: cut short inside its header (truncated); {fix}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=dims, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != math.prod(shape):
        raise ValueError(f"{path}: header says {shape} ({math.prod(shape)} bytes) but the file has {body.size} "
                         f"(truncated?); {fix}")
    return body.reshape(shape)


def arrays_to_pixels(x: np.ndarray, size: int, where: str) -> np.ndarray:
    """Images as an array ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` -> ``(N, 3, size, size)`` uint8."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        x = x.transpose(0, 2, 3, 1)  # channels first -> last
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise ValueError(f"{where}: images array has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                         "(N, C, H, W) with C in 1, 3, 4 and N > 0")
    x = to_uint8(x)
    if x.shape[-1] == 4:  # RGBA onto white
        alpha = x[..., 3:].astype(np.float32) / 255.0
        x = (x[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    if x.shape[1:3] != (size, size):
        x = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in x])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def idx_splits(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """IDX image files in ``folder`` (or one file) -> {split: (images, labels or None)}."""
    files = [folder] if folder.is_file() else sorted(folder.glob("*images-idx3-ubyte*"))
    splits = {}
    for f in files:
        labels = f.with_name(f.name.replace("images-idx3", "labels-idx1"))
        split = "test" if f.name.startswith(("t10k", "test")) else "train"
        splits[split] = (read_idx(f), read_idx(labels) if labels.is_file() else None)
    return splits
