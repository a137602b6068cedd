"""benchmarks/data/make_emoji_pairs.py: captions and the held-out split on made-up emoji data (no font and no
emoji package needed), the install lines when either is missing, and rendering when the font is there."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from hfssl.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_emoji_pairs", ROOT / "benchmarks" / "data" / "make_emoji_pairs.py")
mep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mep)

TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
FAKE = {  # shaped like emoji.EMOJI_DATA
    "a": {"en": ":grinning_face:", "alias": [":grinning:"], "status": 2},
    "b": {"en": ":thumbs_up:", "alias": [":+1:", ":thumbsup:", ":thumbs_up:"], "status": 2},
    **{f"b{i}": {"en": f":thumbs_up_{t}_skin_tone:", "status": 2} for i, t in enumerate(TONES)},
    **{f"k{i}": {"en": f":kiss_{t}_skin_tone_dark_skin_tone:", "status": 2} for i, t in enumerate(TONES)},
    **{f"z{i:02d}": {"en": f":thing_number_{i}:", "status": 2} for i in range(30)},
}


def test_captions_are_the_name_then_new_aliases_in_words():
    assert mep.captions(FAKE["b"]) == ["thumbs up", "+1", "thumbsup"]  # the alias equal to the name once
    assert mep.captions(FAKE["b3"]) == ["thumbs up medium-dark skin tone"]
    assert mep.family(FAKE["b3"]) == "thumbs up" and mep.family(FAKE["k1"]) == "kiss"
    assert mep.file_name("\U0001f44d\U0001f3fd") == "1f44d-1f3fd.png"


def test_split_holds_out_whole_emoji_families_and_every_caption_of_training_emoji():
    train, held = mep.plan(FAKE, eval_fraction=0.25, seed=3)
    families = {mep.family(v) for v in FAKE.values()}
    held_families = {mep.family(FAKE[e]) for e, _ in held}
    train_families = {mep.family(FAKE[e]) for e, _ in train}
    assert held_families and not held_families & train_families and held_families | train_families == families
    assert len(held_families) == round(0.25 * len(families))
    for emoji, value in FAKE.items():  # a family is wholly on one side; held-out rows: the name, once
        if mep.family(value) in held_families:
            assert [c for e, c in held if e == emoji] == [mep.words(value["en"])]
        else:
            assert [c for e, c in train if e == emoji] == mep.captions(value)
    assert mep.plan(FAKE, 0.25, 3) == (train, held) and mep.plan(FAKE, 0.25, 4) != (train, held)
    assert mep.plan(FAKE, 0.0, 3)[1] == []


def test_missing_emoji_package_and_font_are_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "emoji", None)  # `import emoji` raises ImportError
    with pytest.raises(UserError, match=r"emoji package is not installed.*`pip install emoji`"):
        mep.load_emoji_data()
    with pytest.raises(UserError, match=r"Noto Color Emoji font is not at .*nofont.ttf, --font.*"
                                        r"`apt-get install -y fonts-noto-color-emoji`"):
        mep.Renderer(tmp_path / "nofont.ttf", 64)


def test_rendering_with_the_font(tmp_path, monkeypatch):
    if not mep.FONT.is_file():
        pytest.skip(f"the Noto Color Emoji font is not at {mep.FONT} (apt-get install -y fonts-noto-color-emoji)")
    data = {"\U0001f600": {"en": ":grinning_face:", "alias": [":grinning:"], "status": 2},
            "\U0001f44d\U0001f3fd": {"en": ":thumbs_up_medium_skin_tone:", "status": 2},
            "\U0001f600\U0001f44d": {"en": ":two_glyphs:", "status": 2}}  # not one picture: skipped, named
    monkeypatch.setattr(mep, "load_emoji_data", lambda: data)
    mep.main(["--out", str(tmp_path / "out"), "--size", "32", "--eval_fraction", "0.5", "--seed", "0"])
    out = tmp_path / "out"
    rows = [r for name in ("train.csv", "eval.csv") for r in csv.DictReader((out / name).open(encoding="utf-8"))]
    assert sorted(r["caption"] for r in rows) in (["grinning", "grinning face", "thumbs up medium skin tone"],
                                                  ["grinning face", "thumbs up medium skin tone"])
    assert sorted(p.name for p in (out / "images").iterdir()) == ["1f44d-1f3fd.png", "1f600.png"]
    from PIL import Image

    with Image.open(out / "images" / "1f600.png") as picture:
        assert picture.size == (32, 32) and picture.mode == "RGB"
        assert len(set(picture.getdata())) > 10  # a coloured face, not a blank or one-colour square
    assert (out / "skipped.tsv").read_text().startswith("1f600-1f44d\t:two_glyphs:")
