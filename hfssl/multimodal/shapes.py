"""A procedural, compositional image-caption set: two shapes per picture, drawn with PIL, no files needed.

Every picture holds two objects, each a size x colour x shape, in a relative position:
"a small red circle above a large blue square". The split holds out whole colour-shape *combinations*: a
seeded Latin-square diagonal takes one shape from every colour (and so one colour from every shape), and
no training picture shows a held-out pair, while every held-out picture shows at least one. Every colour and
every shape is still seen in training, only never together: recall on the held-out pictures measures
composition, not memory. Everything is a function of the seed (same pictures for every process and resume).
"""

from __future__ import annotations

import math

import datasets
import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star")
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
           "purple": (160, 60, 220), "white": (245, 245, 245)}
SIZES = {"small": 0.2, "large": 0.4}  # side of the object's box, as a fraction of the picture
RELATIONS = ("above", "below", "left of", "right of")
BACKGROUND = (40, 40, 40)
SUPERSAMPLE = 4  # drawn at 4x and reduced: smooth edges at 32 px


def held_out_pairs(seed: int) -> set[tuple[str, str]]:
    """The (colour, shape) pairs no training picture shows: colour i with shape ``perm[(i + k) mod n]``."""
    rng = np.random.default_rng([seed, 1])
    perm, k = rng.permutation(len(SHAPES)), int(rng.integers(len(SHAPES)))
    return {(colour, SHAPES[perm[(i + k) % len(SHAPES)]]) for i, colour in enumerate(COLOURS)}


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a regular shape of circumradius ``r`` centred at (cx, cy)."""
    if shape == "star":
        return [(cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                 cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
    corners, turn = {"square": (4, math.pi / 4), "triangle": (3, 0.0), "diamond": (4, 0.0),
                     "hexagon": (6, math.pi / 6)}[shape]
    return [(cx + r * math.sin(turn + 2 * math.pi * i / corners), cy - r * math.cos(turn + 2 * math.pi * i / corners))
            for i in range(corners)]


def draw_object(draw: ImageDraw.ImageDraw, shape: str, colour: str, box: tuple[float, float, float, float]) -> None:
    """One shape filling the square ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=COLOURS[colour])
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=COLOURS[colour])


def render(objects: list[tuple[str, str, str]], relation: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Two ``(size_word, colour, shape)`` objects, the first ``relation`` the second, jittered inside their halves."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    vertical = relation in ("above", "below")
    first_half = 0 if relation in ("above", "left of") else 1
    for index, (size_word, colour, shape) in enumerate(objects):
        side = SIZES[size_word] * big
        half = first_half if index == 0 else 1 - first_half
        along = half * big / 2 + rng.uniform(0, big / 2 - side)  # inside its half along the relation's axis
        across = rng.uniform(0, big - side)
        x, y = (across, along) if vertical else (along, across)
        draw_object(draw, shape, colour, (x, y, x + side, y + side))
    return image.resize((size, size), Image.Resampling.BOX)


def caption(objects: list[tuple[str, str, str]], relation: str) -> str:
    (s1, c1, h1), (s2, c2, h2) = objects
    return f"a {s1} {c1} {h1} {relation} a {s2} {c2} {h2}"


def _draw_scene(rng: np.random.Generator, allowed: list[tuple[str, str]], needed: list[tuple[str, str]] | None):
    """Two objects from ``allowed`` pairs; with ``needed``, one of them (either place) from ``needed``."""
    pairs = [allowed[rng.integers(len(allowed))] for _ in range(2)]
    if needed:
        pairs[int(rng.integers(2))] = needed[rng.integers(len(needed))]
    sizes = [list(SIZES)[rng.integers(len(SIZES))] for _ in range(2)]
    return [(s, c, h) for s, (c, h) in zip(sizes, pairs)], RELATIONS[rng.integers(len(RELATIONS))]


def make_shapes(n: int, *, seed: int, held_out: bool, image_size: int = 32) -> datasets.Dataset:
    """``n`` pictures as a Dataset of ``pixel_values`` (``(3, S, S)`` uint8 bytes), ``caption`` and ``label`` (the
    first object's shape, for zero-shot accuracy). ``held_out``: every picture shows a held-out pair (the
    evaluation set); else none does (training). Deterministic in ``(seed, held_out)``."""
    hidden = held_out_pairs(seed)
    seen = [(c, h) for c in COLOURS for h in SHAPES if (c, h) not in hidden]
    rng = np.random.default_rng([seed, 2, int(held_out)])
    pixels, captions, labels = [], [], []
    for _ in range(n):
        objects, relation = _draw_scene(rng, seen, sorted(hidden) if held_out else None)
        image = render(objects, relation, image_size, rng)
        pixels.append(np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)).tobytes())
        captions.append(caption(objects, relation))
        labels.append(SHAPES.index(objects[0][2]))
    features = datasets.Features({"pixel_values": datasets.Value("binary"), "caption": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(SHAPES))})
    return datasets.Dataset.from_dict({"pixel_values": pixels, "caption": captions, "label": labels},
                                      features=features)


def shape_picture(shape: str, colour: str, size: int = 32) -> Image.Image:
    """One large object in the centre (for examples and tests of zero-shot classification)."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    side = SIZES["large"] * big
    draw_object(ImageDraw.Draw(image), shape, colour, ((big - side) / 2, (big - side) / 2, (big + side) / 2,
                                                        (big + side) / 2))
    return image.resize((size, size), Image.Resampling.BOX)
