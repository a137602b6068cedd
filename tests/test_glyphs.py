"""benchmarks/gain/make_glyphs.py: the offline letter set renders with matplotlib's own fonts, balanced, seeded, and
loads through hfssl's image reader."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks/gain"))

import make_glyphs  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("glyphs") / "glyphs.npz"
    make_glyphs.main(["--out", str(out), "--train_per_class", "3", "--test_per_class", "2", "--seed", "7"])
    return out


def test_fonts_are_matplotlibs_own_and_have_every_letter():
    fonts = make_glyphs.font_files()
    names = {p.name for p in fonts}
    assert len(fonts) >= 15 and set(make_glyphs.TEST_FONTS) <= names
    assert {"DejaVuSans.ttf", "cmr10.ttf", "STIXGeneral.ttf"} <= names and not names & make_glyphs.SKIP


def test_tiny_set_has_balanced_grey_letters_and_held_out_fonts(tiny):
    with np.load(tiny) as z:
        assert z["x"].shape == (26 * 3, 28, 28) and z["x_test"].shape == (26 * 2, 28, 28)
        assert z["x"].dtype == np.uint8 and list(z["label_names"]) == [chr(ord("A") + i) for i in range(26)]
        assert np.bincount(z["y"], minlength=26).tolist() == [3] * 26
        assert np.bincount(z["y_test"], minlength=26).tolist() == [2] * 26
        assert not set(z["train_fonts"]) & set(z["test_fonts"])  # the default split holds whole fonts out
        assert set(z["test_fonts"]) == set(make_glyphs.TEST_FONTS)
        ink = z["x"].reshape(len(z["x"]), -1)
        assert (ink.max(1) > 200).all() and (np.median(ink, 1) < 40).all()  # a white glyph on black, every image
        assert np.abs(z["x"][:, :2].astype(int)).mean() < 30  # with a dark border, like Fashion-MNIST


def test_same_seed_same_images_other_seed_other_images():
    a, b = make_glyphs.make(2, 1, seed=3), make_glyphs.make(2, 1, seed=3)
    c = make_glyphs.make(2, 1, seed=4)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x"], c["x"])
    mixed = make_glyphs.make(1, 1, seed=3, split="mixed")
    assert set(mixed["train_fonts"]) == set(mixed["test_fonts"])


def test_loads_with_load_images(tiny):
    from hfssl.vision.data import ImageDataArgs, load_images

    data = load_images(ImageDataArgs(data=str(tiny)))
    assert len(data.train) == 78 and len(data.eval) == 52 and data.label_names[0] == "A"
    assert sorted(set(data.eval["label"])) == list(range(26))
