"""Render a different-domain transfer set offline: capital letters A-Z in the fonts that ship with matplotlib.

Grey 28x28 images like Fashion-MNIST (a white glyph on black), 26 balanced classes, written as a ``.npz``
(``x``, ``y``, ``x_test``, ``y_test``, ``label_names``) that ``hfssl.vision.data.load_images`` reads
(``--data glyphs.npz``). Nothing is downloaded and no system package is needed: the fonts are the TrueType
files inside matplotlib (``matplotlib.get_data_path()/fonts/ttf``: DejaVu Sans / Sans Mono / Serif in
their regular, bold and oblique/italic styles, STIXGeneral in four styles, Computer Modern cmr / cmb /
cmti / cmmi / cmss / cmtt; symbol fonts are left out), drawn with Pillow.

Each image: one font, a random stroke thickening, the glyph's ink box scaled to a random height, a random
small rotation and translation, a little pixel noise. ``--split fonts`` (the default) holds out whole font
files for the test set (the test letters are drawn in styles never seen in the training split: the
harder, more honest test); ``--split mixed`` draws both splits from every font. The same ``--seed`` gives
the same bytes.

    python benchmarks/gain/make_glyphs.py --out /tmp/glyphs.npz                      # 400 / 100 per class
    python benchmarks/gain/make_glyphs.py --out /tmp/g.npz --train_per_class 20 --test_per_class 5 --seed 1
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font
from PIL import Image, ImageDraw, ImageFont

LETTERS = list(string.ascii_uppercase)
SKIP = {"LastResortHE-Regular.ttf", "cmex10.ttf", "cmsy10.ttf"}  # placeholder boxes, delimiters, calligraphic symbols
TEST_FONTS = ("DejaVuSans-BoldOblique.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSerif-Bold.ttf",
              "STIXGeneralItalic.ttf", "cmss10.ttf")  # held out by --split fonts: one style of each family
SIDE, CANVAS, FONT_PX = 28, 112, 96  # output side; drawing canvas (4x) and font size of the first render


def font_files() -> list[Path]:
    """matplotlib's TrueType fonts that have every capital letter, sorted by file name."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    keep = []
    for path in sorted(folder.glob("*.ttf")):
        if path.name not in SKIP and all(ord(c) in FT2Font(str(path)).get_charmap() for c in LETTERS):
            keep.append(path)
    return keep


def render(font: ImageFont.FreeTypeFont, letter: str, rng: np.random.Generator) -> np.ndarray:
    """One ``(28, 28)`` uint8 glyph with random stroke, height, rotation, translation and noise."""
    stroke = int(rng.integers(0, 5))  # extra stroke of 0-4 px at 96 px: from the font's own weight to heavy
    glyph = Image.new("L", (2 * FONT_PX, 2 * FONT_PX), 0)
    ImageDraw.Draw(glyph).text((FONT_PX, FONT_PX), letter, font=font, fill=255, anchor="mm",
                               stroke_width=stroke, stroke_fill=255)
    glyph = glyph.crop(glyph.getbbox())  # the ink box
    height = CANVAS * rng.uniform(0.55, 0.8)  # MNIST-like: the glyph fills about 15-22 of the 28 pixels
    scale = min(height / glyph.height, 0.9 * CANVAS / glyph.width) * rng.uniform(0.9, 1.1, 2)  # x, y: +-10 % aspect
    w, h = max(1, round(glyph.width * scale[0])), max(1, round(glyph.height * scale[1]))
    glyph = glyph.resize((w, h), Image.BICUBIC)
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    shift = rng.uniform(-0.08, 0.08, 2) * CANVAS  # up to ~2 px at 28 px
    canvas.paste(glyph, (int(round((CANVAS - w) / 2 + shift[0])), int(round((CANVAS - h) / 2 + shift[1]))))
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    small = np.asarray(canvas.resize((SIDE, SIDE), Image.BOX), dtype=np.float32)
    return np.clip(small + rng.normal(0, 4, small.shape), 0, 255).astype(np.uint8)


def make(train_per_class: int, test_per_class: int, seed: int = 0, split: str = "fonts") -> dict[str, np.ndarray]:
    """The arrays of the ``.npz``: balanced classes, fonts cycled within each class, shuffled order."""
    fonts = font_files()
    if split == "fonts":
        test_names = [f for f in TEST_FONTS if any(p.name == f for p in fonts)]
        groups = {"train": [p for p in fonts if p.name not in test_names], "test": [p for p in fonts if p.name in test_names]}
    elif split == "mixed":
        groups = {"train": fonts, "test": fonts}
    else:
        raise ValueError(f"--split must be 'fonts' or 'mixed', not {split!r}")
    if not groups["train"] or not groups["test"]:
        raise RuntimeError(f"no usable fonts for the {split!r} split among {[p.name for p in fonts]}")
    rng = np.random.default_rng(seed)
    loaded = {p: ImageFont.truetype(str(p), FONT_PX) for p in fonts}
    out = {}
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        order = [p for p in groups[name]]
        x, y = [], []
        for label, letter in enumerate(LETTERS):
            start = int(rng.integers(len(order)))  # cycle the fonts from a random one: every font ~ equally often
            for i in range(per_class):
                x.append(render(loaded[order[(start + i) % len(order)]], letter, rng))
                y.append(label)
        perm = rng.permutation(len(y))
        out[name] = (np.stack(x)[perm], np.asarray(y, dtype=np.int64)[perm])
    return {"x": out["train"][0], "y": out["train"][1], "x_test": out["test"][0], "y_test": out["test"][1],
            "label_names": np.array(LETTERS), "train_fonts": np.array([p.name for p in groups["train"]]),
            "test_fonts": np.array([p.name for p in groups["test"]])}


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/glyphs.npz"))
    p.add_argument("--train_per_class", type=int, default=400)
    p.add_argument("--test_per_class", type=int, default=100)
    p.add_argument("--split", choices=("fonts", "mixed"), default="fonts",
                   help="fonts: the test set's fonts are never in the training split; mixed: all fonts in both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", type=Path, help="also write a PNG contact sheet (one row per letter) here")
    args = p.parse_args(argv)
    arrays = make(args.train_per_class, args.test_per_class, args.seed, args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays['y'])} training / {len(arrays['y_test'])} test images of {SIDE}x{SIDE}, "
          f"26 letters; {args.split} split, training fonts {', '.join(arrays['train_fonts'])}; "
          f"test fonts {', '.join(arrays['test_fonts'])}")
    if args.preview:
        cols = 16
        rows = [np.concatenate([arrays["x"][arrays["y"] == c][:cols], arrays["x_test"][arrays["y_test"] == c][:4]])
                for c in range(len(LETTERS))]
        sheet = np.concatenate([np.concatenate(list(r), axis=1) for r in rows if len(r) == rows[0].shape[0]])
        Image.fromarray(sheet).save(args.preview)
    return args.out


if __name__ == "__main__":
    main()
