"""Offline speech made locally with espeak-ng (voices, variants, speeds, pitches) and sox (noise, reverb, tempo).

    python benchmarks/data/make_speech.py unlabelled --out DIR --minutes 30      # Austen sentences, FLAC 16 kHz
    python benchmarks/data/make_speech.py keywords --out DIR --clips_per_voice 1  # digits + commands, by voice
    python benchmarks/data/make_speech.py sentences --out DIR --count 200 --test_count 100  # transcribed

``unlabelled``: sentences of the embedded Austen novels (hfssl/data/austen), each spoken by a voice drawn from
``VOICES`` at a random speed and pitch, then through sox: 16 kHz mono FLAC, a random tempo, sometimes reverb,
pink noise mixed in at a random level; as many minutes as asked. ``keywords`` and ``sentences``: labelled sets
split by voice (``--held_out`` voices, by default ``HELD_OUT``, only in ``test``, the others only in ``train``):
``keywords`` writes ``train/<word>/*.flac`` and ``test/<word>/*.flac`` (a folder of class folders) plus
``train.csv`` / ``test.csv`` (path,label,voice); ``sentences`` writes ``clips/*.flac`` and ``train.csv`` /
``test.csv`` (path,transcript,voice): ``--count`` sentences by training voices, then ``--test_count`` other
sentences by held-out voices. Transcripts are lower-case letters, apostrophes and spaces of exactly what was
spoken: abbreviations are written out before speaking ("Mr." -> "Mister"), sentences with digits, initials or
capitalised words are left out, and a sentence whose espeak-ng phonemes differ from its transcript's (e.g.
"!--" read as "exclamation") is skipped. ``--voices`` / ``--words`` make smaller sets. Everything is seeded
(``--seed``): the same command makes the same files.

Nothing is installed silently: without espeak-ng or sox the script stops with one line naming the install
command (``make speech-data`` installs them with apt-get and runs this script).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hfssl.errors import UserError, run_cli  # noqa: E402

LANGUAGES = ("en", "en-us", "en-gb-x-rp")
VARIANTS = tuple(f"+m{i}" for i in range(1, 8)) + tuple(f"+f{i}" for i in range(1, 5))
VOICES = tuple(lang + variant for lang in LANGUAGES for variant in VARIANTS)  # 33 voices
HELD_OUT = tuple(lang + variant for lang in LANGUAGES for variant in ("+m7", "+f4"))  # 6 voices, test only
KEYWORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
INSTALL = "apt-get install -y espeak-ng sox"


def require_programs() -> None:
    missing = [p for p in ("espeak-ng", "sox") if shutil.which(p) is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} not found on PATH, needed by benchmarks/data/make_speech.py; "
                        f"install them with `{INSTALL}` (or `make speech-data`)")


ABBREVIATIONS = {"Mr": "Mister", "Mrs": "Missus", "Messrs": "Messieurs", "Dr": "Doctor", "St": "Saint"}
_ABBREVIATION = re.compile(r"\b(" + "|".join(ABBREVIATIONS) + r")\.")


@dataclass(frozen=True)
class Clip:
    """One clip to make: ``path`` (relative to the output folder), the text spoken, the label or transcript
    written to the manifest, the voice, and its split (``test`` for a held-out voice, else ``train``)."""

    path: str
    text: str
    target: str
    voice: str
    split: str


def austen_sentences(min_words: int = 4, max_words: int = 18) -> list[str]:
    """Sentences of the embedded novels with ``min_words``-``max_words`` words, in file order."""
    text = []
    for path in sorted(Path(str(resources.files("hfssl") / "data" / "austen")).glob("*.txt.gz")):
        text.append(gzip.decompress(path.read_bytes()).decode("utf-8"))
    return split_sentences(" ".join(text), min_words, max_words)


def split_sentences(text: str, min_words: int, max_words: int) -> list[str]:
    """Sentences of ``text`` (abbreviations such as "Mr." end no sentence), each written out as it is spoken
    (:func:`spoken_text`), kept when it has ``min_words``-``max_words`` words and nothing espeak-ng would read
    differently from its transcript: digits, ``_ [ ] & *``, chapter headings, capitalised words (read letter by
    letter), initials (a lone capital other than "I" or "O"), fragments (starting in lower case, as after
    an initial)."""
    flat = _ABBREVIATION.sub(r"\1", re.sub(r"\s+", " ", text))  # "Mr. Darcy" stays one sentence
    found = []
    for sentence in re.split(r"(?<=[.!?])\s+", flat):
        sentence = spoken_text(sentence.strip())
        if (min_words <= len(sentence.split()) <= max_words and not re.search(r"[0-9_\[\]&*]|CHAPTER|VOLUME", sentence)
                and not re.search(r"\b[A-Z]{2,}\b|\b[B-HJ-NP-Z]\b|--$|\b[A-Z]'|^[^A-Za-z]*[a-z]", sentence)):
            found.append(sentence)
    return found


def spoken_text(sentence: str) -> str:
    """The text given to espeak-ng: abbreviations written out ("Mr." -> "Mister"), so that what is spoken and
    the transcript (:func:`transcript`) have the same words."""
    return re.sub(r"\b(" + "|".join(ABBREVIATIONS) + r")\b\.?", lambda m: ABBREVIATIONS[m.group(1)], sentence)


def transcript(sentence: str) -> str:
    """What a CTC model is asked to write: lower-case letters, apostrophes and single spaces."""
    text = re.sub(r"[^a-z' ]", " ", spoken_text(sentence).lower().replace("-", " "))
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def check_split(voices: Sequence[str], held_out: Sequence[str]) -> None:
    """The held-out voices must be among ``voices``, and each split must keep at least one voice."""
    unknown = [v for v in held_out if v not in voices]
    if unknown:
        raise UserError(f"--held_out {' '.join(unknown)}: not among --voices ({' '.join(voices)}); a held-out voice "
                        "must be one of the voices spoken")
    if not held_out or len(set(held_out)) == len(set(voices)):
        raise UserError(f"--held_out {' '.join(held_out) or '(none)'} of --voices {' '.join(voices)}: both splits "
                        "need a voice; hold out some voices, not none or all")


def split_of(voice: str, held_out: Sequence[str]) -> str:
    return "test" if voice in held_out else "train"


def keyword_plan(words: Sequence[str], voices: Sequence[str], clips_per_voice: int,
                 held_out: Sequence[str] = HELD_OUT) -> list[Clip]:
    """Every word by every voice, ``clips_per_voice`` times: ``<split>/<word>/<voice>-<k>.flac``."""
    check_split(voices, held_out)
    return [Clip(f"{split_of(v, held_out)}/{w}/{v.replace('+', '_')}-{k}.flac", w, w, v, split_of(v, held_out))
            for w in words for v in voices for k in range(clips_per_voice)]


def sentence_plan(pool: Sequence[str], count: int, test_count: int, voices: Sequence[str], rng: random.Random,
                  held_out: Sequence[str] = HELD_OUT, accept=lambda text, voice: True) -> list[Clip]:
    """``count`` training sentences, each by a random training voice, then ``test_count`` other sentences by
    held-out voices (no sentence and no voice in both splits), in ``pool`` order; ``accept(text, voice)`` may
    refuse a sentence (the next one is taken)."""
    check_split(voices, held_out)
    train_voices, test_voices = [v for v in voices if v not in held_out], [v for v in voices if v in held_out]
    clips, seen, it = [], set(), iter(pool)
    for split, n, choices in (("train", count, train_voices), ("test", test_count, test_voices)):
        made = 0
        while made < n:
            sentence = next(it, None)
            if sentence is None:
                raise UserError(f"the sentence pool ran out after {len(clips)} sentences; ask for fewer (--count "
                                f"{count}, --test_count {test_count})")
            text, voice = transcript(sentence), rng.choice(choices)
            if text in seen or not accept(sentence, voice):
                continue
            seen.add(text)
            clips.append(Clip(f"clips/{len(clips):05d}.flac", sentence, text, voice, split))
            made += 1
    return clips


def write_manifests(out: Path, clips: Sequence[Clip], column: str) -> dict[str, int]:
    """``train.csv`` / ``test.csv`` (path, ``column``, voice) by each clip's split; returns the row counts."""
    counts = {}
    for split in ("train", "test"):
        rows = [(c.path, c.target, c.voice) for c in clips if c.split == split]
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", column, "voice"])
            writer.writerows(rows)
        counts[split] = len(rows)
    return counts


def phonemes(text: str, voice: str) -> str:
    """espeak-ng's phonemes of ``text`` with the marks that pauses move (stress, pauses, reduced vowels, linking
    r, word boundaries) taken out."""
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice, "--stdin"], input=text, check=True,
                         capture_output=True, text=True).stdout
    return re.sub(r"[\s'`,;_:#%=|-]", "", out.replace("r-", ""))  # r-: a linking r, there or not by pauses


def says_transcript(sentence: str, voice: str) -> bool:
    """espeak-ng reads ``sentence`` and its transcript as the same phonemes (no word read otherwise)."""
    return phonemes(sentence, voice) == phonemes(transcript(sentence), voice)


def speak(text: str, voice: str, out: Path, rng: random.Random, augment: bool = True) -> float:
    """``text`` spoken by ``voice`` -> ``out`` (FLAC, 16 kHz mono 16-bit); returns its seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, noise, words = Path(tmp) / "raw.wav", Path(tmp) / "noise.wav", Path(tmp) / "text.txt"
        words.write_text(text + "\n", encoding="utf-8")  # a file: text starting with "-" is no option
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.randint(130, 190)), "-p", str(rng.randint(25, 75)),
                        "-w", str(raw), "-f", str(words)], check=True, capture_output=True)
        effects = ["rate", "-v", "16000"]
        if augment:
            effects += ["tempo", f"{rng.uniform(0.9, 1.1):.3f}"]
            if rng.random() < 0.3:
                effects += ["reverb", str(rng.randint(10, 50))]
        clean = Path(tmp) / "clean.wav"
        subprocess.run(["sox", str(raw), "-c", "1", "-b", "16", str(clean), *effects], check=True, capture_output=True)
        seconds = float(subprocess.run(["soxi", "-D", str(clean)], check=True, capture_output=True, text=True).stdout)
        if augment and rng.random() < 0.5:  # pink noise, 30-45 dB below full scale
            subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", f"{seconds:.3f}",
                            "pinknoise", "vol", f"{10 ** (-rng.uniform(30, 45) / 20):.5f}"], check=True,
                           capture_output=True)
            subprocess.run(["sox", "-m", str(clean), str(noise), "-b", "16", str(out)], check=True, capture_output=True)
        else:
            subprocess.run(["sox", str(clean), str(out)], check=True, capture_output=True)
    return seconds


def make_clips(out: Path, clips: Sequence[Clip], rng: random.Random) -> float:
    total = 0.0
    for clip in clips:
        (out / clip.path).parent.mkdir(parents=True, exist_ok=True)
        total += speak(clip.text, clip.voice, out / clip.path, rng)
    return total


def unlabelled(out: Path, minutes: float, seed: int) -> None:
    rng, sentences = random.Random(seed), austen_sentences()
    rng.shuffle(sentences)
    total, n = 0.0, 0
    while total < minutes * 60:
        if n >= len(sentences):
            raise UserError(f"--minutes {minutes}: the Austen sentences ran out after {total / 60:.1f} minutes; ask "
                            "for fewer minutes")
        voice = rng.choice(VOICES)
        total += speak(sentences[n], voice, out / f"{n:06d}.flac", rng)
        n += 1
    print(f"{n} clips, {total / 60:.1f} minutes of speech in {out}")


def keywords(out: Path, words: Sequence[str], voices: Sequence[str], held_out: Sequence[str], clips_per_voice: int,
             seed: int) -> None:
    clips = keyword_plan(words, voices, clips_per_voice, held_out)
    seconds = make_clips(out, clips, random.Random(seed))
    counts = write_manifests(out, clips, "label")
    print(f"{len(clips)} keyword clips ({len(words)} words, {seconds / 60:.1f} min; {counts['train']} train, "
          f"{counts['test']} test) in {out}; test voices: {', '.join(held_out)}")


def sentences(out: Path, count: int, test_count: int, voices: Sequence[str], held_out: Sequence[str],
              seed: int) -> None:
    rng, pool = random.Random(seed), austen_sentences(3, 10)
    rng.shuffle(pool)
    refused = []

    def accept(sentence: str, voice: str) -> bool:
        if says_transcript(sentence, voice):
            return True
        refused.append(sentence)
        return False

    clips = sentence_plan(pool, count, test_count, voices, rng, held_out, accept)
    seconds = make_clips(out, clips, rng)
    counts = write_manifests(out, clips, "transcript")
    print(f"{len(clips)} transcribed sentences ({seconds / 60:.1f} min; {counts['train']} train, {counts['test']} "
          f"test) in {out}; test voices: {', '.join(held_out)}; {len(refused)} sentence(s) left out: espeak-ng's "
          f"phonemes of the sentence and of its transcript differ" + (f", e.g. {refused[0]!r}" if refused else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("unlabelled", "keywords", "sentences"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="Output folder (created; must be empty or absent).")
        p.add_argument("--seed", type=int, default=0)
        if name == "unlabelled":
            p.add_argument("--minutes", type=float, default=10.0, help="Minutes of speech to make.")
            continue
        p.add_argument("--voices", nargs="+", default=list(VOICES), help="espeak-ng voices (language+variant).")
        p.add_argument("--held_out", nargs="+", default=list(HELD_OUT), help="Voices spoken only in test.")
        if name == "keywords":
            p.add_argument("--words", nargs="+", default=list(KEYWORDS), help="The keywords (class names).")
            p.add_argument("--clips_per_voice", type=int, default=1, help="Clips of each word per voice.")
        else:
            p.add_argument("--count", type=int, default=200, help="Training sentences (training voices).")
            p.add_argument("--test_count", type=int, default=100, help="Test sentences (held-out voices).")
    args = parser.parse_args(argv)
    if args.what != "unlabelled":
        check_split(args.voices, args.held_out)
    require_programs()
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; choose a new folder or empty it")
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "unlabelled":
        unlabelled(out, args.minutes, args.seed)
    elif args.what == "keywords":
        keywords(out, args.words, args.voices, args.held_out, args.clips_per_voice, args.seed)
    else:
        sentences(out, args.count, args.test_count, args.voices, args.held_out, args.seed)


if __name__ == "__main__":
    run_cli(main)
