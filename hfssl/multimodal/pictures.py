"""Pictures of what an image-text model retrieves: a PNG grid saved (and logged) at every evaluation.

One row per text query (fixed held-out captions, so the grids of a run are comparable): the caption written
above, then the top-k held-out images it retrieves, best first; an image whose caption is the query's (its true
partner) is outlined in green, the others in grey.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

GAP = 4  # pixels between cells
TEXT_HEIGHT = 14  # the caption strip above each row (Pillow's built-in font: no system font needed)
OUTLINE = 3
CORRECT, OTHER = (40, 180, 60), (200, 200, 200)


def retrieval_grid(pixels: np.ndarray, queries: list[str], top: np.ndarray, correct: np.ndarray,
                   min_cell: int = 64) -> np.ndarray:
    """``pixels`` ``(N, 3, S, S)`` uint8 candidates, ``queries`` Q captions, ``top`` ``(Q, k)`` indices into
    ``pixels``, ``correct`` ``(Q, k)`` bool -> an ``(H, W, 3)`` uint8 picture, cells enlarged (nearest) to at
    least ``min_cell`` pixels."""
    n_rows, k = top.shape
    side = pixels.shape[-1]
    zoom = max(1, -(-min_cell // side))
    cell = side * zoom + 2 * OUTLINE
    width = GAP + k * (cell + GAP)
    row_height = TEXT_HEIGHT + cell + GAP
    canvas = Image.new("RGB", (width, GAP + n_rows * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, (query, picks, right) in enumerate(zip(queries, top, correct)):
        y = GAP + row * row_height
        draw.text((GAP, y), query[: width // 6], fill=(0, 0, 0))
        for col, (index, ok) in enumerate(zip(picks, right)):
            x, top_y = GAP + col * (cell + GAP), y + TEXT_HEIGHT
            draw.rectangle((x, top_y, x + cell - 1, top_y + cell - 1), fill=CORRECT if ok else OTHER)
            image = pixels[int(index)].transpose(1, 2, 0).repeat(zoom, axis=0).repeat(zoom, axis=1)  # (s, s, 3)
            canvas.paste(Image.fromarray(np.ascontiguousarray(image)), (x + OUTLINE, top_y + OUTLINE))
    return np.asarray(canvas)
