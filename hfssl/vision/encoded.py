"""Image bytes and PIL images: any mode to RGB, and the encoded storage mode of large images.

Small images (<= 64 px, arrays, IDX) are decoded once to ``pixel_values`` (:mod:`hfssl.vision.data`). Larger
images keep their encoded bytes (JPEG, PNG, WebP ...), as they are or re-encoded once to a maximum side
(``--max_side``), in an ``image_bytes`` column; they are decoded in DataLoader worker processes, where the random
resized crop is taken from the original image (:class:`hfssl.vision.transforms.EncodedCrops`). Preparing them reads
each file and its header only (size, format, a JPEG's end marker, a PNG's checksums), never decodes the whole
data set before step 1.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps

from hfssl.vision.arrays import to_uint8

ENCODED = "image_bytes"  # the encoded file, as read (or re-encoded once to --max_side)
ROW = "row"  # the image's position in its source: with the seed and the epoch it fixes its random crop
SOURCE = "source"  # the file (or "row N") an image came from, to name it when it fails to decode later
SMALL_IMAGE = 64  # images up to this side are stored decoded by default


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency goes onto white. 16-bit images are scaled by their bit depth (65535
    is white, never the image's own maximum); 32-bit integer and float images as
    :func:`hfssl.vision.arrays.full_scale` says. (Pillow itself reads 16-bit RGB PNGs as 8-bit RGB, keeping
    the high byte: the same scale.)"""
    if image.mode.startswith("I;16"):
        image = Image.fromarray(to_uint8(np.asarray(image), 65535.0), "L")
    elif image.mode in ("I", "F"):
        image = Image.fromarray(to_uint8(np.asarray(image)), "L")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")  # no copy of an RGB image


def open_rgb(data: bytes) -> Image.Image:
    """Encoded bytes -> an RGB PIL image, EXIF rotation applied (the whole file is decoded)."""
    with Image.open(io.BytesIO(data)) as image:
        return to_rgb(ImageOps.exif_transpose(image) or image)


def check_encoded(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of encoded bytes, from the header; raises on a file that is not an image or is cut
    short (a JPEG without its end marker, a PNG whose chunks fail their checksums). Decodes no pixels."""
    with Image.open(io.BytesIO(data)) as image:
        size, kind = image.size, image.format
        if kind == "JPEG":
            if b"\xff\xd9" not in data[-1024:]:
                raise OSError("truncated JPEG (no end-of-image marker)")
        else:
            image.verify()
    return size


def shrink(data: bytes, max_side: int | None, quality: int = 90) -> bytes:
    """The bytes as they are when the longer side is at most ``max_side`` (or no limit); else the image
    resized (Lanczos, aspect ratio kept) so that its longer side is ``max_side``, re-encoded as JPEG."""
    if max_side is None:
        return data
    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= max_side:
            return data
    rgb = open_rgb(data)
    scale = max_side / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    out = io.BytesIO()
    rgb.resize(size, Image.Resampling.LANCZOS).save(out, "JPEG", quality=quality)
    return out.getvalue()


def read_value(value) -> tuple[bytes, str | None]:
    """An Image-column value (``{"bytes", "path"}``, a path, a PIL image or an array) -> (encoded bytes, path)."""
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"], value.get("path")
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    if path:
        with open(path, "rb") as f:
            return f.read(), path
    if isinstance(value, (Image.Image, np.ndarray)):
        image = value if isinstance(value, Image.Image) else Image.fromarray(value)
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue(), None
    raise TypeError(f"not an image: {type(value).__name__}")


def encode_batch(batch: dict, indices: list[int], column: str, max_side: int | None, quality: int) -> dict:
    """Batched ``map``: image column -> ``image_bytes``, ``row``, ``source`` and ``_error`` ("" or "where\\twhy")."""
    out = {ENCODED: [], ROW: [], SOURCE: [], "_error": []}
    for value, index in zip(batch[column], indices):
        path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
        try:  # a bad file must never kill a map worker: it is recorded and dropped afterwards
            data, path = read_value(value)
            check_encoded(data)
            out[ENCODED].append(shrink(data, max_side, quality))
            out["_error"].append("")
        except Exception as err:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, ...)
            out[ENCODED].append(b"")
            out["_error"].append(f"{path or f'row {index}'}\t{type(err).__name__}: {str(err)[:200]}")
        out[ROW].append(index)
        out[SOURCE].append(path or f"row {index}")
    return out


def decode_crops(data: bytes, size: int, draws) -> list[np.ndarray]:
    """Encoded bytes -> one ``(3, size, size)`` uint8 crop per ``draws(width, height)`` entry ``(box, flip)``
    (:func:`resized_crop_pil`; box None: the centre square), on the upright (EXIF-rotated) image. A JPEG whose
    crops are all at least twice ``size`` is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
    ``Image.draft``): a 4000 x 3000 photograph is not decoded whole to give a 224-px crop."""
    with Image.open(io.BytesIO(data)) as image:
        if image.getexif().get(0x0112, 1) not in (0, 1):  # rotated: crops are drawn on the upright image
            image = ImageOps.exif_transpose(image)
        width, height = image.size
        picks = [(box or centre_square(width, height), flip) for box, flip in draws(width, height)]
        reduce = min(min(h, w) for (_, _, h, w), _ in picks) / size
        if reduce >= 2 and image.format == "JPEG" and image.mode in ("RGB", "L"):
            image.draft(image.mode, (math.ceil(width / reduce), math.ceil(height / reduce)))
        scale = image.size[0] / width  # 1, or the DCT scale draft chose
        rgb = to_rgb(image)
        return [resized_crop_pil(rgb, tuple(v * scale for v in box), size, flip) for box, flip in picks]


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """(top, left, side, side) of the centre square of the shorter side."""
    side = min(width, height)
    return (height - side) // 2, (width - side) // 2, side, side


def resized_crop_pil(image: Image.Image, box: tuple[float, float, float, float], size: int, flip: bool) -> np.ndarray:
    """``box`` (top, left, height, width) of ``image`` resized to ``size`` x ``size`` (PIL bilinear, antialiased
    when shrinking, like torchvision's ``RandomResizedCrop`` on PIL images). Returns ``(3, size, size)`` uint8;
    an image smaller than the crop is upscaled."""
    top, left, h, w = box
    out = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))
