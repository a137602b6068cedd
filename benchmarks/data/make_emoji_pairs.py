"""Image-caption pairs for recipes/clip.py made locally: every emoji of the Noto Color Emoji font with its names.

    python benchmarks/data/make_emoji_pairs.py --out DIR [--size 64] [--eval_fraction 0.1] [--seed 0]
    accelerate launch recipes/clip.py --data DIR/train.csv --eval_data DIR/eval.csv --image_size 64 --output_dir RUN

Each fully-qualified emoji of the ``emoji`` package (PyPI) is drawn by Pillow from the Noto Color Emoji font
(Debian package ``fonts-noto-color-emoji``; a bitmap font, drawn at size 109 with ``embedded_color=True`` into a
136 px square) onto white and reduced to ``--size`` px: ``DIR/images/<code points>.png``. Its captions are its
Unicode (CLDR) name and its aliases, underscores as spaces ("thumbs up medium skin tone", "+1", "thumbsup").

The split holds out emoji, not captions: a seeded ``--eval_fraction`` of emoji *families* (an emoji with all its
skin-tone variants) is held out, so no held-out picture or any of its tone variants is trained on. ``train.csv``
(image,caption) has one row per caption (name and each alias: a picture appears once per caption);
``eval.csv`` one row per held-out picture, captioned by its name (retrieval ranks pictures, so each appears once).
An emoji the font cannot draw as one picture (newer than the font: drawn as several glyphs or as the empty
"missing" glyph) is skipped, counted and named in ``DIR/skipped.tsv``.

Nothing is installed silently: without the font or the ``emoji`` package the script stops with one line naming
the install command (``make emoji-data`` installs the font with apt-get and runs this script).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hfssl.errors import UserError, run_cli  # noqa: E402

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE, CANVAS = 109, 136  # the font's one bitmap size, and the width of its glyphs at that size
INSTALL_FONT = "apt-get install -y fonts-noto-color-emoji"
SKIN_TONE = re.compile(r"_?(?:medium-light|medium-dark|light|medium|dark)_skin_tone")
BACKGROUND = (255, 255, 255)


def load_emoji_data() -> dict:
    """``emoji.EMOJI_DATA`` (emoji -> {"en": ":name:", "alias": [...], "status": ...}), or one line to install it."""
    try:
        import emoji
    except ImportError:
        raise UserError("the emoji package is not installed, needed by benchmarks/data/make_emoji_pairs.py for the "
                        "emoji names; install it with `pip install emoji` (or pip install -e '.[dev]')") from None
    return {e: v for e, v in emoji.EMOJI_DATA.items() if v.get("status") == emoji.STATUS["fully_qualified"]}


def words(name: str) -> str:
    """``:thumbs_up_medium_skin_tone:`` -> ``thumbs up medium skin tone``."""
    return " ".join(name.strip(":").replace("_", " ").split())


def captions(entry: dict) -> list[str]:
    """An emoji's name, then its aliases not equal to the name, each once, in order."""
    found = [words(entry["en"])] + [words(a) for a in entry.get("alias", [])]
    return [c for c in dict.fromkeys(found) if c]


def family(entry: dict) -> str:
    """The emoji's name without its skin tones: every tone variant of an emoji shares its family."""
    return words(SKIN_TONE.sub("", entry["en"]))


def file_name(emoji: str) -> str:
    """The picture's file: its code points in hex, joined by ``-`` (``1f44d-1f3fd.png``)."""
    return "-".join(f"{ord(c):x}" for c in emoji) + ".png"


def split_families(families: list[str], eval_fraction: float, seed: int) -> set[str]:
    """The held-out families: a seeded ``eval_fraction`` of the distinct ones (at least one when asked for any)."""
    distinct = sorted(set(families))
    count = 0 if eval_fraction <= 0 else max(1, round(eval_fraction * len(distinct)))
    picks = np.random.default_rng(seed).permutation(len(distinct))[:count]
    return {distinct[i] for i in picks}


def plan(data: dict, eval_fraction: float, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """emoji data -> (training rows, held-out rows) of (emoji, caption): every caption of a training emoji;
    the name alone of a held-out one. Emoji in sorted order; the split by family (see the module docstring)."""
    held = split_families([family(v) for v in data.values()], eval_fraction, seed)
    train, held_out = [], []
    for emoji in sorted(data):
        names = captions(data[emoji])
        if family(data[emoji]) in held:
            held_out.append((emoji, names[0]))
        else:
            train += [(emoji, c) for c in names]
    return train, held_out


class Renderer:
    """Draws one emoji into a ``CANVAS`` square and reduces it to ``size``; None when the font cannot draw it as
    one picture (several glyphs side by side, or the font's empty "missing" glyph)."""

    def __init__(self, font_path: Path, size: int):
        from PIL import ImageFont

        if not font_path.is_file():
            raise UserError(f"the Noto Color Emoji font is not at {font_path}, --font; install it with "
                            f"`{INSTALL_FONT}` (or `make emoji-data`), or give --font PATH")
        self.font, self.size = ImageFont.truetype(str(font_path), FONT_SIZE), size
        self.missing = self.draw("\U000f0000")  # a private-use code point: the font's missing glyph

    def draw(self, emoji: str):
        from PIL import Image, ImageDraw

        left, top, right, bottom = self.font.getbbox(emoji)
        if right - left > CANVAS or bottom - top > CANVAS:
            return None
        image = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
        ImageDraw.Draw(image).text(((CANVAS - right - left) / 2, (CANVAS - bottom - top) / 2), emoji, font=self.font,
                                   embedded_color=True)
        return image

    def __call__(self, emoji: str):
        from PIL import Image

        image = self.draw(emoji)
        if image is None or image.getbbox() is None or image.tobytes() == self.missing.tobytes():
            return None
        flat = Image.new("RGB", image.size, BACKGROUND)
        flat.paste(image, mask=image.getchannel("A"))
        return flat.resize((self.size, self.size), Image.Resampling.LANCZOS)


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows((f"images/{file_name(e)}", c) for e, c in rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="New folder for images/, train.csv, eval.csv.")
    parser.add_argument("--size", type=int, default=64, help="Side of the square pictures (drawn at 136 px).")
    parser.add_argument("--eval_fraction", type=float, default=0.1, help="Held-out fraction of emoji families.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out choice.")
    parser.add_argument("--font", type=Path, default=FONT, help="The NotoColorEmoji.ttf file.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N emoji (a quick look).")
    args = parser.parse_args(argv)
    if not 8 <= args.size <= CANVAS:
        raise UserError(f"--size {args.size}: give 8 to {CANVAS} pixels")
    if not 0 <= args.eval_fraction < 1:
        raise UserError(f"--eval_fraction {args.eval_fraction}: give a fraction in [0, 1)")
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"--out {args.out} is not empty; choose a new folder or empty it")
    data = load_emoji_data()
    render = Renderer(args.font, args.size)
    if args.limit:
        data = {e: data[e] for e in sorted(data)[: args.limit]}
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    skipped = []
    for emoji in sorted(data):
        picture = render(emoji)
        if picture is None:
            skipped.append((emoji, data[emoji]["en"]))
        else:
            picture.save(args.out / "images" / file_name(emoji))
    drawn = {e: v for e, v in data.items() if e not in {s for s, _ in skipped}}
    train, held_out = plan(drawn, args.eval_fraction, args.seed)
    write_rows(args.out / "train.csv", train)
    write_rows(args.out / "eval.csv", held_out)
    (args.out / "skipped.tsv").write_text("".join(f"{file_name(e)[:-4]}\t{n}\tnot drawn as one picture by the font\n"
                                                  for e, n in skipped), encoding="utf-8")
    pictures = len(drawn) - len(held_out)
    print(f"{len(drawn)} emoji drawn at {args.size} px into {args.out / 'images'}: {pictures} for training "
          f"({len(train)} caption rows in train.csv), {len(held_out)} held out (eval.csv, whole skin-tone families); "
          f"{len(skipped)} skipped, not drawn as one picture by {args.font.name}"
          + (f" (e.g. {', '.join(n for _, n in skipped[:5])}; all in skipped.tsv)" if skipped else ""))
    print(f"train: accelerate launch recipes/clip.py --data {args.out / 'train.csv'} --eval_data "
          f"{args.out / 'eval.csv'} --image_size {args.size} --output_dir runs/clip_emoji")


if __name__ == "__main__":
    run_cli(main)
