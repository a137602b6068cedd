"""Offline speech made locally with espeak-ng (voices, variants, speeds, pitches) and sox (noise, reverb, tempo).

    python benchmarks/data/make_speech.py unlabelled --out DIR --minutes 30      # Austen sentences, FLAC 16 kHz
    python benchmarks/data/make_speech.py keywords --out DIR --clips_per_voice 1  # digits + commands, by voice
    python benchmarks/data/make_speech.py sentences --out DIR --count 200         # short transcribed sentences

``unlabelled``: sentences of the embedded Austen novels (hfssl/data/austen), each spoken by a voice drawn from
``VOICES`` at a random speed and pitch, then through sox: 16 kHz mono FLAC, a random tempo, sometimes reverb,
pink noise mixed in at a random level; as many minutes as asked. ``keywords`` and ``sentences``: labelled sets
split by voice (``HELD_OUT`` voices only in ``test``): ``keywords`` writes ``train/<word>/*.flac`` and
``test/<word>/*.flac`` (a folder of class folders) plus ``train.csv`` / ``test.csv`` (path,label);
``sentences`` writes ``clips/*.flac`` and ``train.csv`` / ``test.csv`` (path,transcript; lower-case letters,
apostrophes and spaces). Everything is seeded (``--seed``): the same command makes the same files.

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


def austen_sentences(min_words: int = 4, max_words: int = 18) -> list[str]:
    """Sentences of the embedded novels with ``min_words``-``max_words`` words, in file order."""
    text = []
    for path in sorted(Path(str(resources.files("hfssl") / "data" / "austen")).glob("*.txt.gz")):
        text.append(gzip.decompress(path.read_bytes()).decode("utf-8"))
    flat = re.sub(r"\s+", " ", " ".join(text))
    found = []
    for sentence in re.split(r"(?<=[.!?])\s+", flat):
        words = sentence.split()
        if min_words <= len(words) <= max_words and not re.search(r"[0-9_\[\]]|CHAPTER|VOLUME", sentence):
            found.append(sentence.strip())
    return found


def transcript(sentence: str) -> str:
    """What a CTC model is asked to write: lower-case letters, apostrophes and single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", sentence.lower().replace("-", " "))).strip()


def speak(text: str, voice: str, out: Path, rng: random.Random, augment: bool = True) -> float:
    """``text`` spoken by ``voice`` -> ``out`` (FLAC, 16 kHz mono 16-bit); returns its seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, noise = Path(tmp) / "raw.wav", Path(tmp) / "noise.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.randint(130, 190)), "-p", str(rng.randint(25, 75)),
                        "-w", str(raw), text], check=True, capture_output=True)
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


def _split_rows(out: Path, rows: list[tuple[str, str, str]], column: str) -> None:
    for split in ("train", "test"):
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", column])
            writer.writerows((path, value) for path, value, voice in rows
                             if (voice in HELD_OUT) == (split == "test"))


def keywords(out: Path, clips_per_voice: int, seed: int) -> None:
    rng, rows = random.Random(seed), []
    for word in KEYWORDS:
        for voice in VOICES:
            split = "test" if voice in HELD_OUT else "train"
            for k in range(clips_per_voice):
                path = out / split / word / f"{voice.replace('+', '_')}-{k}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                speak(word, voice, path, rng)
                rows.append((str(path.relative_to(out)), word, voice))
    _split_rows(out, rows, "label")
    print(f"{len(rows)} keyword clips ({len(KEYWORDS)} words) in {out}; test voices: {', '.join(HELD_OUT)}")


def sentences(out: Path, count: int, seed: int) -> None:
    rng, pool = random.Random(seed), austen_sentences(3, 10)
    rng.shuffle(pool)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, sentence in enumerate(pool[:count]):
        voice = rng.choice(VOICES)
        path = out / "clips" / f"{i:05d}.flac"
        speak(sentence, voice, path, rng)
        rows.append((str(path.relative_to(out)), transcript(sentence), voice))
    _split_rows(out, rows, "transcript")
    print(f"{len(rows)} transcribed sentences in {out}; test voices: {', '.join(HELD_OUT)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("unlabelled", "keywords", "sentences"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="Output folder (created; must be empty or absent).")
        p.add_argument("--seed", type=int, default=0)
        if name == "unlabelled":
            p.add_argument("--minutes", type=float, default=10.0, help="Minutes of speech to make.")
        elif name == "keywords":
            p.add_argument("--clips_per_voice", type=int, default=1, help="Clips of each word per voice.")
        else:
            p.add_argument("--count", type=int, default=200, help="Sentences to make.")
    args = parser.parse_args(argv)
    require_programs()
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; choose a new folder or empty it")
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "unlabelled":
        unlabelled(out, args.minutes, args.seed)
    elif args.what == "keywords":
        keywords(out, args.clips_per_voice, args.seed)
    else:
        sentences(out, args.count, args.seed)


if __name__ == "__main__":
    run_cli(main)
