"""Speech for pretraining: audio files or a ``save_to_disk`` dataset -> 16 kHz mono clips, bad files reported.

Sources (``AudioDataArgs.data``): a folder of ``.wav`` / ``.flac`` / ``.mp3`` / ``.ogg`` files (searched
recursively), a ``save_to_disk`` folder whose audio column (``--audio_column``) holds ``Audio`` values
(``{"bytes", "path"}``) or file paths, or nothing for the embedded speech sample (``hfssl/data/speech``).

Every file is decoded once when the data is prepared (a batched ``map`` that ``datasets`` caches, keyed by
the files' paths, sizes and modification times): a file that cannot be decoded, is empty, silent, or shorter
than what the model needs (``min_samples``: the feature encoder's receptive field and enough frames for a
masked span) is skipped, counted and named in the :class:`AudioReport`. The held-out set is split by file.

Two storage modes (``--storage``, ``auto`` by default):

- ``decoded``: the 16 kHz float32 samples are stored (cut into rows of at most ``SEGMENT_SECONDS``, so that a
  crop never reads a whole long recording); cheap to crop, 64 KB per second of audio.
- ``encoded``: the files' bytes are stored (FLAC / MP3 / OGG are 4-10x smaller than decoded float32) with
  their rate and length; each crop is decoded in the DataLoader's workers from just its window of the file.

``auto`` picks decoded when the source files total at most ``--decoded_limit_mb`` (decoded audio is at most
~4x an MP3 / FLAC source), else encoded. Training crops of at most ``--max_seconds`` are drawn in the loader
(:class:`AudioCrops`) from a seed of ``(seed, epoch, row)``: any worker count or a resume draws the same crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import numpy as np
import torch

from hfssl.audio.decode import (
    SAMPLING_RATE,
    AudioDecodeError,
    audio_info,
    check_clip,
    find_audio_files,
    read_audio,
)
from hfssl.errors import UserError

SEGMENT_SECONDS = 30.0  # decoded storage: rows of at most this (or --max_seconds if longer), never shorter
_MAX_NAMED = 20


@dataclass
class AudioDataArgs:
    """Where the speech comes from and how it is cut and stored."""

    data: str | None = field(default=None, metadata={"help": "A folder of audio files (wav, flac, mp3, ogg; "
                             "recursive) or a save_to_disk folder with an audio column. Default: the embedded "
                             "speech sample (hfssl/data/speech)."})
    eval_data: str | None = field(default=None, metadata={"help": "Separate held-out audio (same kinds as --data)."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column of a save_to_disk dataset."})
    eval_fraction: float = field(default=0.05, metadata={"help": "Held-out fraction of the files when there is "
                                 "no --eval_data."})
    max_seconds: float = field(default=5.0, metadata={"help": "Length of the random crops trained on (and of the "
                               "held-out clips); shorter clips are used whole."})
    storage: str = field(default="auto", metadata={"help": "'decoded' (16 kHz samples stored), 'encoded' (file "
                         "bytes stored, crops decoded in loader workers) or 'auto' (decoded up to "
                         "--decoded_limit_mb of source files)."})
    decoded_limit_mb: float = field(default=256.0, metadata={"help": "auto storage: decode once when the "
                                    "source files total at most this many MB."})
    max_train_clips: int | None = field(default=None, metadata={"help": "Use a random subset of the training rows."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for decoding the files."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder (default: HF cache)."})

    def __post_init__(self):
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise ValueError(f"--max_seconds must be a positive number of seconds, got {self.max_seconds}")
        if self.storage not in ("auto", "decoded", "encoded"):
            raise ValueError(f"--storage must be auto, decoded or encoded, not {self.storage!r}")
        if not self.decoded_limit_mb >= 0:
            raise ValueError(f"--decoded_limit_mb must be >= 0, got {self.decoded_limit_mb}")
        for name in ("max_train_clips", "num_proc"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 (or unset), got {getattr(self, name)}")

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * SAMPLING_RATE))


@dataclass
class AudioReport:
    """What was read; printed (and put in the model card) so that nothing disappears unnoticed."""

    source: str
    train: int = 0
    eval: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or row, reason)
    storage: str = "decoded"

    def __str__(self) -> str:
        text = (f"audio: {self.train} train rows ({self.train_seconds / 60:.1f} min) + {self.eval} held-out "
                f"({self.eval_seconds / 60:.1f} min) from {self.source} (stored {self.storage}), "
                f"{len(self.skipped)} file(s) skipped")
        if self.skipped:
            named = "; ".join(f"{where} ({why})" for where, why in self.skipped[:_MAX_NAMED])
            more = len(self.skipped) - _MAX_NAMED
            text += f": {named}" + (f"; and {more} more" if more > 0 else "")
        return text


@dataclass
class AudioData:
    """``train`` / ``eval`` rows: decoded (``audio`` float32 bytes) or encoded (``raw``, ``rate``, ``frames``),
    each with ``source`` and ``row``; see :func:`training_data` and :func:`eval_data`."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    report: AudioReport
    storage: str


def embedded_speech() -> Path:
    """The speech sample shipped in the package (hfssl/data/speech, made by benchmarks/data/make_speech.py)."""
    return Path(str(resources.files("hfssl") / "data" / "speech"))


def _source_path(path: str | None, flag: str) -> Path:
    if path is None:
        return embedded_speech()
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"{flag} {path}: not found; give a folder of audio files or a save_to_disk folder")
    if not root.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder of audio files (wav, flac, mp3, ogg) or a "
                        "save_to_disk folder")
    return root


def _is_saved_dataset(root: Path) -> bool:
    return (root / "state.json").is_file() or (root / "dataset_dict.json").is_file()


def source_megabytes(root: Path) -> float:
    """Size of the source: the audio files, or a saved dataset's Arrow files."""
    files = root.rglob("*.arrow") if _is_saved_dataset(root) else find_audio_files(root)
    return sum(p.stat().st_size for p in files) / 2**20


def settle(args: AudioDataArgs) -> AudioDataArgs:
    """Resolve ``storage: auto`` before a recipe takes the settings its checkpoints store."""
    if args.storage == "auto":
        size = source_megabytes(_source_path(args.data, "--data"))
        args.storage = "decoded" if size <= args.decoded_limit_mb else "encoded"
    return args


def _folder_files(root: Path, flag: str) -> datasets.Dataset:
    files = find_audio_files(root)
    if not files:
        raise UserError(f"{flag} {root}: no audio files (.wav, .flac, .mp3, .ogg) in it or its subfolders; give "
                        "a folder of audio files or a save_to_disk folder")
    stamps = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return datasets.Dataset.from_generator(_list_files, gen_kwargs={"stamps": stamps})


def _list_files(stamps):
    for path, _, _ in stamps:  # the sizes and times only key the cache
        yield {"audio": path}


def _saved_files(root: Path, column: str, flag: str) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    saved = datasets.load_from_disk(str(root))
    splits = dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    train = splits.get("train") or next(iter(splits.values()))
    held = next((splits[s] for s in ("test", "validation", "valid", "eval") if s in splits), None)
    for ds in (train, held):
        if ds is not None and column not in ds.column_names:
            raise UserError(f"{flag} {root}: no audio column {column!r}; columns are {ds.column_names} "
                            "(set --audio_column)")
    fix = [ds.cast_column(column, datasets.Audio(decode=False)) if ds is not None and
           isinstance(ds.features[column], datasets.Audio) else ds for ds in (train, held)]
    rename = [ds.rename_column(column, "audio") if ds is not None and column != "audio" else ds for ds in fix]
    return (rename[0].select_columns(["audio"]),
            rename[1].select_columns(["audio"]) if rename[1] is not None else None)


def _value(value, index: int) -> tuple[str | bytes, str]:
    """An audio-column value -> (path or bytes, name for messages)."""
    if isinstance(value, str):
        return value, value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        name = value.get("path") or f"row {index}"
        return (value["bytes"] or value["path"]), name
    raise AudioDecodeError(f"row {index}: not an audio value ({type(value).__name__}); give file paths or Audio values")


def _prepare_batch(batch, indices, storage: str, min_samples: int, segment: int):
    """Batched ``map``: decode each file (checks: readable, not empty / silent / too short) -> rows of the
    chosen storage, plus ``_error`` rows ("where<TAB>why") for the files skipped."""
    out = {"audio": [], "raw": [], "rate": [], "frames": [], "source": [], "seconds": [], "_error": []}

    def add(audio=b"", raw=b"", rate=0, frames=0, source="", seconds=0.0, error=""):
        for key, value in zip(out, (audio, raw, rate, frames, source, seconds, error)):
            out[key].append(value)

    for value, index in zip(batch["audio"], indices):
        name = value if isinstance(value, str) else (value or {}).get("path") or f"row {index}"
        try:
            data, name = _value(value, index)
            raw = data if isinstance(data, bytes) else Path(data).read_bytes()
            wave = read_audio(raw, "")
            why = check_clip(wave, min_samples)
            rate, frames = audio_info(raw, "")
        except AudioDecodeError as err:
            add(source=name, error=f"{name}\t{err}")
            continue
        except OSError as err:
            add(source=name, error=f"{name}\tcannot be read ({type(err).__name__}: {err.strerror or err})")
            continue
        if why:
            add(source=name, error=f"{name}\t{why}")
        elif storage == "encoded":
            add(raw=raw, rate=rate, frames=frames, source=name, seconds=len(wave) / SAMPLING_RATE)
        else:
            starts = list(range(0, max(len(wave) - segment, 0) + 1, segment))[: max(len(wave) // segment, 1)]
            ends = starts[1:] + [len(wave)]  # the remainder joins the last row: no row shorter than a segment
            for start, end in zip(starts, ends):
                add(audio=wave[start:end].tobytes(), source=name, seconds=(end - start) / SAMPLING_RATE)
    return out


def _prepare(files: datasets.Dataset, args: AudioDataArgs, min_samples: int, where: str):
    segment = int(max(SEGMENT_SECONDS, args.max_seconds) * SAMPLING_RATE)
    drop = ["raw", "rate", "frames"] if args.storage == "decoded" else ["audio"]
    mapped = files.map(_prepare_batch, batched=True, batch_size=64, with_indices=True, num_proc=args.num_proc,
                       remove_columns=files.column_names, desc=f"decoding {where}",
                       fn_kwargs={"storage": args.storage, "min_samples": min_samples, "segment": segment})
    skipped = [tuple(e.split("\t", 1)) for e in mapped["_error"] if e]
    if skipped:
        mapped = mapped.filter(lambda e: [not x for x in e], input_columns="_error", batched=True,
                               batch_size=10_000, desc="dropping skipped files")
    mapped = mapped.remove_columns(["_error", *drop])
    return mapped.add_column("row", list(range(len(mapped)))), skipped


def _read(path: str | None, args: AudioDataArgs, flag: str):
    root = _source_path(path, flag)
    if _is_saved_dataset(root):
        return (*_saved_files(root, args.audio_column, flag), str(root))
    return _folder_files(root, flag), None, str(root)


def load_audio(args: AudioDataArgs, min_samples: int, seed: int = 0) -> AudioData:
    """Prepare the training and held-out rows (cached); ``min_samples``: the shortest usable clip at 16 kHz."""
    settle(args)
    files, held, where = _read(args.data, args, "--data")
    if args.eval_data:
        held = _read(args.eval_data, args, "--eval_data")[0]
    elif held is None and args.eval_fraction > 0 and len(files) >= 2:
        parts = files.train_test_split(test_size=args.eval_fraction, seed=seed)  # by file: no clip in both sets
        files, held = parts["train"], parts["test"]
    report = AudioReport(source=where if args.data else f"the embedded speech sample ({where})", storage=args.storage)
    train, skipped = _prepare(files, args, min_samples, "training audio")
    report.skipped += skipped
    eval_ = None
    if held is not None:
        eval_, skipped = _prepare(held, args, min_samples, "held-out audio")
        report.skipped += skipped
        eval_ = eval_ if len(eval_) else None
    if len(train) == 0:
        raise UserError(f"--data {where}: no usable audio ({len(report.skipped)} file(s) skipped: "
                        f"{'; '.join(f'{w} ({y})' for w, y in report.skipped[:5])}); give decodable speech files "
                        f"of at least {min_samples / SAMPLING_RATE:.2f} s")
    if args.max_train_clips is not None and args.max_train_clips < len(train):
        train = train.shuffle(seed=seed).select(range(args.max_train_clips)).flatten_indices()
        train = train.remove_columns("row").add_column("row", list(range(len(train))))
    report.train, report.train_seconds = len(train), float(sum(train["seconds"]))
    if eval_ is not None:
        report.eval, report.eval_seconds = len(eval_), float(sum(eval_["seconds"]))
    return AudioData(train, eval_, report, args.storage)


def crop_seed(seed: int, epoch: int, row: int) -> int:
    """The seed of one row's crop in one epoch: a function of where it is, never of a loader's state."""
    return int(np.random.SeedSequence([seed, epoch, row]).generate_state(2, np.uint64)[0] & (2**63 - 1))


class AudioCrops:
    """A ``Dataset.with_transform`` function (run in the DataLoader's workers): each row -> ``input_values``, a
    crop of at most ``max_samples`` 16 kHz samples, at a random offset drawn from :func:`crop_seed` (training)
    or at the start (``epoch=None``: the held-out clips, the same every time). Encoded rows decode only the
    crop's window of the file. ``row`` passes through."""

    def __init__(self, max_samples: int, seed: int, epoch: int | None):
        self.max_samples, self.seed, self.epoch = max_samples, seed, epoch

    def offset(self, length: int, row: int) -> int:
        if self.epoch is None or length <= self.max_samples:
            return 0
        rng = np.random.default_rng(crop_seed(self.seed, self.epoch, row))
        return int(rng.integers(0, length - self.max_samples + 1))

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        waves = []
        for i, row in enumerate(batch["row"]):
            if "audio" in batch:  # decoded
                wave = np.frombuffer(batch["audio"][i], dtype=np.float32)
                start = self.offset(len(wave), row)
                waves.append(wave[start: start + self.max_samples].copy())
            else:  # encoded: the window in the file's own samples, a little wider for the resampler's edges
                rate, frames = batch["rate"][i], batch["frames"][i]
                length = int(frames * SAMPLING_RATE / rate)
                start = self.offset(length, row)
                first = int(start * rate / SAMPLING_RATE)
                count = int(math.ceil(self.max_samples * rate / SAMPLING_RATE)) + 1
                waves.append(read_audio(batch["raw"][i], batch["source"][i], first, count)[: self.max_samples])
        return {"input_values": waves, "row": list(batch["row"])}


def training_data(data: AudioData, max_samples: int, seed: int):
    """What ``fit`` trains on: a function ``epoch -> Dataset`` of cropped rows (crops drawn per epoch)."""
    def epoch_data(epoch: int) -> datasets.Dataset:
        return data.train.with_transform(AudioCrops(max_samples, seed, epoch))

    return epoch_data


def eval_data(data: AudioData, max_samples: int) -> datasets.Dataset | None:
    """The held-out rows, each its first ``max_samples`` samples (the same clips at every evaluation)."""
    return None if data.eval is None else data.eval.with_transform(AudioCrops(max_samples, 0, None))


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip (``Wav2Vec2FeatureExtractor``'s ``do_normalize``)."""
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


def collate_audio(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Loader collate: each clip normalised over its own samples, right-padded with zeros: ``input_values``
    ``(B, L)`` float32, ``attention_mask`` ``(B, L)`` (1 = real sample), ``row`` ``(B,)`` when present. (The
    loop's ``tokens_per_s`` then counts audio samples.)"""
    waves = [normalize(np.asarray(r["input_values"], dtype=np.float32)) for r in rows]
    longest = max(len(w) for w in waves)
    values = np.zeros((len(waves), longest), np.float32)
    mask = np.zeros((len(waves), longest), np.int64)
    for i, wave in enumerate(waves):
        values[i, : len(wave)], mask[i, : len(wave)] = wave, 1
    batch = {"input_values": torch.from_numpy(values), "attention_mask": torch.from_numpy(mask)}
    if "row" in rows[0]:
        batch["row"] = torch.tensor([r["row"] for r in rows])
    return batch
