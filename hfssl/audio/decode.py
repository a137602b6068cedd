"""Audio files -> 16 kHz mono float32, through libsndfile (``soundfile``) and libsoxr (``soxr``).

Any sample rate and channel count: channels are averaged (stereo -> mono mean), the rate is converted with
soxr's high-quality resampler. WAV, FLAC, OGG (Vorbis / Opus) and MP3 decode through the libsndfile that the
``soundfile`` wheel bundles (1.1 or newer reads MP3); ``datasets``' ``Audio`` feature is not used for decoding
because datasets 5 decodes through torchcodec, which needs FFmpeg's shared libraries. A file libsndfile cannot
read (an AAC ``.m4a``, a damaged header) raises :class:`AudioDecodeError` naming the file and the reason.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLING_RATE = 16_000
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus")
SILENT_PEAK = 1e-4  # a clip whose loudest sample is below this (-80 dBFS) is silent


class AudioDecodeError(ValueError):
    """A file or row that libsndfile cannot decode; the message names it and why."""


def _open(source: str | Path | bytes):
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)


def audio_info(source: str | Path | bytes, where: str = "") -> tuple[int, int]:
    """(sample rate, frames) from the header only."""
    try:
        info = sf.info(_open(source))
    except Exception as err:  # noqa: BLE001 (LibsndfileError, RuntimeError, TypeError ...)
        raise AudioDecodeError(_where(source, where) + _reason(err)) from err
    return int(info.samplerate), int(info.frames)


def to_mono_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    """``(N,)`` or ``(N, C)`` float samples at ``rate`` -> ``(M,)`` float32 at 16 kHz (channel mean, soxr HQ)."""
    mono = wave.mean(axis=1) if wave.ndim == 2 else wave
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != SAMPLING_RATE:
        mono = soxr.resample(mono, rate, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)
    return mono


def read_audio(source: str | Path | bytes, where: str = "", start: int = 0, frames: int = -1) -> np.ndarray:
    """Decode ``source`` (a path or the file's bytes) to 16 kHz mono float32 ``(M,)``; ``start`` / ``frames``
    select a window in the file's own samples (only that part is decoded)."""
    try:
        wave, rate = sf.read(_open(source), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001
        raise AudioDecodeError(_where(source, where) + _reason(err)) from err
    return to_mono_16k(wave, rate)


def _where(source, where: str) -> str:
    name = where or ("" if isinstance(source, (bytes, bytearray)) else str(source))
    return f"{name}: " if name else ""


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    if "Format not recognised" in text or "unknown format" in text.lower():
        return f"not a format libsndfile decodes ({text}); convert it to WAV, FLAC, OGG or MP3"
    return f"{type(err).__name__}: {text}"


def find_audio_files(folder: Path) -> list[Path]:
    """Audio files below ``folder`` (recursively, hidden ones left out), in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def check_clip(wave: np.ndarray, min_samples: int) -> str:
    """Why a decoded clip cannot be used ('' when it can): empty, silent, or shorter than ``min_samples``."""
    if len(wave) == 0:
        return "empty (no samples)"
    if not np.isfinite(wave).all():
        return "holds NaN or infinite samples"
    if float(np.abs(wave).max()) < SILENT_PEAK:
        return "silent (peak below -80 dBFS)"
    if len(wave) < min_samples:
        return (f"too short ({len(wave) / SAMPLING_RATE:.3f} s; the model needs at least "
                f"{min_samples / SAMPLING_RATE:.3f} s)")
    return ""
