"""benchmarks/data/make_speech.py: the held-out-voice split, the transcripts and the manifests without espeak-ng;
one tiny real synthesis (skipped, with the install command, where espeak-ng or sox is absent)."""

from __future__ import annotations

import csv
import random
import shutil
import sys
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "data"))

import make_speech as ms  # noqa: E402

from hfssl.errors import UserError  # noqa: E402

HAVE_PROGRAMS = all(shutil.which(p) for p in ("espeak-ng", "sox", "soxi"))
NEEDS_PROGRAMS = pytest.mark.skipif(not HAVE_PROGRAMS, reason="espeak-ng not installed: apt-get install -y espeak-ng sox")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_default_voices_exist_in_both_splits_and_held_out_voices_only_in_test():
    assert len(ms.VOICES) == 33 and set(ms.HELD_OUT) < set(ms.VOICES)
    clips = ms.keyword_plan(ms.KEYWORDS, ms.VOICES, 2)
    assert len(clips) == len(ms.KEYWORDS) * len(ms.VOICES) * 2 and len({c.path for c in clips}) == len(clips)
    train = {c.voice for c in clips if c.split == "train"}
    test = {c.voice for c in clips if c.split == "test"}
    assert test == set(ms.HELD_OUT) and not train & test and train | test == set(ms.VOICES)
    for c in clips:
        assert c.path.startswith(f"{c.split}/{c.target}/") and c.text == c.target


def test_split_settings_are_checked():
    with pytest.raises(UserError, match="not among --voices"):
        ms.keyword_plan(["yes"], ["en+m1", "en+m2"], 1, held_out=["en+m7"])
    with pytest.raises(UserError, match="both splits need a voice"):
        ms.keyword_plan(["yes"], ["en+m1", "en+m2"], 1, held_out=["en+m1", "en+m2"])
    with pytest.raises(UserError, match="both splits need a voice"):
        ms.sentence_plan(["a b c"], 1, 0, ["en+m1"], random.Random(0), held_out=[])


def test_sentence_plan_keeps_sentences_and_voices_apart_and_is_seeded():
    pool = [f"Sentence number {w} is here." for w in "abcdefghijklmnopqrstuvwxyz"] * 2  # repeats are skipped
    refused = {"Sentence number c is here."}
    plans = [ms.sentence_plan(pool, 10, 5, ms.VOICES, random.Random(3), accept=lambda t, v: t not in refused)
             for _ in range(2)]
    assert plans[0] == plans[1]
    clips = plans[0]
    train, test = [c for c in clips if c.split == "train"], [c for c in clips if c.split == "test"]
    assert len(train) == 10 and len(test) == 5
    assert all(c.voice in ms.HELD_OUT for c in test) and not any(c.voice in ms.HELD_OUT for c in train)
    assert not {c.target for c in train} & {c.target for c in test}
    assert "sentence number c is here" not in {c.target for c in clips}
    assert len({c.path for c in clips}) == 15
    with pytest.raises(UserError, match="pool ran out"):
        ms.sentence_plan(pool[:5], 4, 4, ms.VOICES, random.Random(0))


@pytest.mark.parametrize("spoken,expected", [
    ('"Mr. Darcy," said she--"is it so?"', "mister darcy said she is it so"),
    ("Mrs. Jennings's sister-in-law 'tis said!", "missus jennings's sister in law tis said"),
    ("Well;   and   YET  it was: done.", "well and yet it was done"),
])
def test_transcript(spoken, expected):
    assert ms.transcript(spoken) == expected
    assert set(ms.transcript(spoken)) <= set("abcdefghijklmnopqrstuvwxyz' ")


def test_sentences_keep_abbreviations_and_leave_out_what_reads_otherwise():
    text = ("Mr. Darcy bowed to her. Mrs. Bennet was not pleased at all. It was in 1811 that they came. "
            "Lord S. was there too. She said THAT to him twice. The day was fine and clear!")
    assert ms.split_sentences(text, 3, 12) == ["Mister Darcy bowed to her.", "Missus Bennet was not pleased at all.",
                                               "The day was fine and clear!"]
    assert not any(s.endswith(("Mr", "Mrs", "Mister", "Missus")) for s in ms.austen_sentences(3, 10)[:2000])


def test_manifests(tmp_path):
    clips = ms.keyword_plan(["yes", "no"], ["en+m1", "en+m2", "en+m7"], 1, held_out=["en+m7"])
    assert ms.write_manifests(tmp_path, clips, "label") == {"train": 4, "test": 2}
    train, test = read_csv(tmp_path / "train.csv"), read_csv(tmp_path / "test.csv")
    assert train[0] == {"path": "train/yes/en_m1-0.flac", "label": "yes", "voice": "en+m1"}
    assert {r["voice"] for r in test} == {"en+m7"} and {r["voice"] for r in train} == {"en+m1", "en+m2"}
    assert all(r["path"].startswith("test/") for r in test)


def test_a_missing_program_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setattr(ms.shutil, "which", lambda name: None if name == "espeak-ng" else "/usr/bin/" + name)
    with pytest.raises(UserError, match=r"espeak-ng not found.*apt-get install -y espeak-ng sox"):
        ms.require_programs()


@NEEDS_PROGRAMS
def test_real_synthesis_of_keywords_and_sentences(tmp_path):
    ms.main(["keywords", "--out", str(tmp_path / "kw"), "--words", "yes", "no", "--voices", "en+m1", "en-us+f4",
             "--held_out", "en-us+f4"])
    train, test = read_csv(tmp_path / "kw" / "train.csv"), read_csv(tmp_path / "kw" / "test.csv")
    assert {r["voice"] for r in train} == {"en+m1"} and {r["voice"] for r in test} == {"en-us+f4"}
    for r in train + test:
        wave, rate = sf.read(tmp_path / "kw" / r["path"])
        assert rate == 16_000 and wave.ndim == 1 and 0.2 < len(wave) / rate < 2.0 and abs(wave).max() > 0.05
    ms.main(["sentences", "--out", str(tmp_path / "s"), "--count", "1", "--test_count", "1"])
    rows = read_csv(tmp_path / "s" / "train.csv") + read_csv(tmp_path / "s" / "test.csv")
    assert len(rows) == 2
    for r in rows:  # what was spoken reads as the transcript
        assert sf.info(tmp_path / "s" / r["path"]).samplerate == 16_000
        assert ms.transcript(r["transcript"]) == r["transcript"]
        assert ms.phonemes(r["transcript"], r["voice"])
