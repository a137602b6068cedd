"""What the speech fine-tuning recipes share: labelled clips from a folder of class folders or a CSV / JSON
lines file (path + label or transcript), decoded to 16 kHz mono with :mod:`hfssl.audio.decode`, the batch
collators, the CTC character vocabulary and WER / CER.

Fine-tuning skips nothing: a file that cannot be decoded, an empty label or transcript, or (CTC) a validation
transcript with characters the training transcripts never use is an error naming the file, row and column.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import jiwer
import numpy as np
import torch
from transformers import Wav2Vec2CTCTokenizer

from hfssl.audio.decode import SAMPLING_RATE, AudioDecodeError, find_audio_files, read_audio
from hfssl.finetune.common import DataError, load_data_file, require_columns

PAD, UNK, WORD = "[PAD]", "[UNK]", "|"


@dataclass
class AudioFilesArgs:
    """Labelled clips: ``--data`` (a folder of class folders, optionally under train/ and test/) or
    ``--train_file`` (+ ``--validation_file``) with a path column."""

    data: str | None = field(default=None, metadata={"help": "A folder of class folders (audio classification), "
                             "optionally split into train/ and test/ (or validation/)."})
    train_file: str | None = field(default=None, metadata={"help": "CSV / TSV / JSON lines with a path column and a "
                                   "label (classification) or transcript (CTC) column; paths relative to the file."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation rows, same format."})
    validation_split: float = field(default=0.0, metadata={"help": "Without validation data: hold out this "
                                    "fraction of the training rows (seeded)."})
    path_column: str = field(default="path", metadata={"help": "Column of audio file paths."})
    max_seconds: float = field(default=10.0, metadata={"help": "Clips are cut to their first N seconds."})

    def __post_init__(self):
        if bool(self.data) == bool(self.train_file):
            raise ValueError("give the labelled audio as --data FOLDER or as --train_file FILE (one of them)")
        if not 0 <= self.validation_split < 1:
            raise ValueError(f"--validation_split must be in [0, 1), got {self.validation_split}")
        if not self.max_seconds > 0:
            raise ValueError(f"--max_seconds must be positive, got {self.max_seconds}")


def folder_rows(root: Path) -> tuple[list[dict], list[dict] | None]:
    """(train rows, validation rows or None) of ``{"path", "label"}`` from class folders."""
    if not root.is_dir():
        raise DataError(f"--data {root}: not a folder; give a folder of class folders (e.g. data/yes/*.wav)")
    parts = {name: root / name for name in ("train", "test", "validation") if (root / name).is_dir()}

    def rows(folder: Path) -> list[dict]:
        return [{"path": str(p), "label": p.relative_to(folder).parts[0]} for p in find_audio_files(folder)
                if len(p.relative_to(folder).parts) > 1]

    train = rows(parts.get("train", root))
    held = parts.get("test") or parts.get("validation")
    if not train:
        raise DataError(f"--data {root}: no audio files in class folders (e.g. {root}/yes/a.wav); add them")
    return train, rows(held) if held else None


def file_rows(path: str, columns: list[str], path_column: str) -> list[dict]:
    """Rows of a data file with ``path_column`` resolved against the file's folder; values as strings."""
    ds = load_data_file(path)
    require_columns(ds, [path_column, *columns], path)
    base = Path(path).resolve().parent
    out = []
    for row, values in enumerate(ds):
        for column in (path_column, *columns):
            if values[column] is None or not str(values[column]).strip():
                raise DataError(f"{path}: row {row} (0-based) has an empty {column!r}; fill in or remove that row")
        clip = Path(str(values[path_column])).expanduser()
        out.append({"path": str(clip if clip.is_absolute() else base / clip), "row": f"{path}: row {row}",
                    **{c: str(values[c]) for c in columns}})
    return out


def decode_rows(rows: list[dict], max_seconds: float) -> list[np.ndarray]:
    """Each row's clip, 16 kHz mono, its first ``max_seconds``; a bad file is an error naming the row."""
    waves, limit = [], int(max_seconds * SAMPLING_RATE)
    for r in rows:
        where = r.get("row", r["path"])
        try:
            wave = read_audio(r["path"], r["path"])
        except AudioDecodeError as err:
            raise DataError(f"{where}: {err}; fix or remove that row") from err
        except OSError as err:
            raise DataError(f"{where}: cannot read {r['path']} ({err.strerror or err}); fix the path") from err
        if len(wave) < 400:
            raise DataError(f"{where}: {r['path']} is shorter than 25 ms; remove that row")
        waves.append(wave[:limit])
    return waves


def as_dataset(waves: list[np.ndarray], **columns) -> datasets.Dataset:
    """An in-memory dataset of ``input_values`` (float32) + the given columns."""
    features = {"input_values": datasets.Sequence(datasets.Value("float32"))}
    return datasets.Dataset.from_dict({"input_values": [w.tolist() for w in waves], **columns}).cast(
        datasets.Features({**features, **{k: datasets.Value("int64") if isinstance(v[0], int) else
                                          datasets.Sequence(datasets.Value("int64")) for k, v in columns.items()}}))


class AudioCollator:
    """Rows -> the feature extractor's padded, normalised ``input_values`` + ``attention_mask``, and ``labels``:
    class ids, or (CTC, ``pad_labels``) token ids padded with -100."""

    def __init__(self, extractor, pad_labels: bool = False):
        self.extractor, self.pad_labels = extractor, pad_labels

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.extractor([np.asarray(r["input_values"], np.float32) for r in rows], sampling_rate=SAMPLING_RATE,
                               padding=True, return_attention_mask=True, return_tensors="pt")
        if not self.pad_labels:
            batch["labels"] = torch.tensor([r["labels"] for r in rows])
            return batch
        longest = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), longest), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        batch["labels"] = labels
        return batch


def character_vocabulary(transcripts: list[str]) -> dict[str, int]:
    """[PAD] (the CTC blank) = 0, [UNK] = 1, then every character of the training transcripts (space -> |)."""
    chars = sorted({c for t in transcripts for c in t.replace(" ", WORD)})
    return {PAD: 0, UNK: 1, **{c: i + 2 for i, c in enumerate(chars)}}


def ctc_tokenizer(vocab: dict[str, int]) -> Wav2Vec2CTCTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD)


def check_transcripts(rows: list[dict], vocab: dict[str, int], column: str) -> None:
    """Every character of every validation transcript must be in the training vocabulary."""
    for r in rows:
        unknown = sorted({c for c in r[column].replace(" ", WORD) if c not in vocab})
        if unknown:
            raise DataError(f"{r['row']} has {column!r} characters the training transcripts never use "
                            f"({' '.join(repr(c) for c in unknown)}); normalise the transcripts (e.g. lower case, "
                            "no punctuation) or add training rows that use them")


def ctc_metrics(tokenizer):
    """A ``compute_metrics`` for ``Trainer``: word and character error rates of greedy CTC decoding (jiwer)."""

    def compute(eval_pred) -> dict:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        labels = np.where(eval_pred.label_ids == -100, tokenizer.pad_token_id, eval_pred.label_ids)
        hyps = tokenizer.batch_decode(np.argmax(logits, axis=-1))
        refs = tokenizer.batch_decode(labels, group_tokens=False)
        hyps = [h if h.strip() else "-" for h in hyps]  # jiwer refuses an empty hypothesis
        return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}

    return compute
