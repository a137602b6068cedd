"""Text (or text-pair) classification data for the ``Trainer``: checked columns and labels, tokenized.

Every row is checked before anything is trained (columns exist, texts non-blank, labels present and
known); the label names are sorted so ``config.id2label`` is stable between runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets

from hfssl.finetune.common import (
    MIN_SEQ_LENGTH,
    DataError,
    DataFilesArgs,
    check_known_labels,
    check_text_column,
    label_names,
    label_values,
    load_data_file,
    require_columns,
    subsample,
)


@dataclass
class TextClassificationArgs:
    """Which columns hold the text(s) and the label."""

    text_column: str = field(default="text", metadata={"help": "Column with the text to classify."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column, for sentence pairs."})
    label_column: str = field(default="label", metadata={"help": "Column with the class label (text or integer)."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated to this many tokens."})

    def __post_init__(self):
        if self.max_seq_length < MIN_SEQ_LENGTH:
            raise ValueError(f"--max_seq_length must be at least {MIN_SEQ_LENGTH}, got {self.max_seq_length}")
        for flag in ("text_column", "label_column"):
            if not getattr(self, flag):
                raise ValueError(f"--{flag} must name a column, got an empty string")
        if self.text_pair_column is not None and self.text_pair_column in (self.text_column, self.label_column, ""):
            raise ValueError(f"--text_pair_column {self.text_pair_column!r} must name a second text column, other "
                             "than --text_column and --label_column")
        if self.label_column == self.text_column:
            raise ValueError(f"--label_column and --text_column are both {self.text_column!r}; name two columns")


def _label_str(value) -> str:
    """A label as its name: 1, 1.0 (CSV) and "1" are all "1"."""
    return str(int(value)) if isinstance(value, float) else str(value)


def _load_classification_file(path: str, task: TextClassificationArgs) -> tuple[datasets.Dataset, list[str]]:
    ds = load_data_file(path)
    texts = [task.text_column] + ([task.text_pair_column] if task.text_pair_column else [])
    require_columns(ds, [*texts, task.label_column], path)
    for column in texts:
        check_text_column(ds, column, path)
    return ds, label_values(ds, task.label_column, path)


def load_classification_data(files: DataFilesArgs, task: TextClassificationArgs, seed: int):
    """Checked train / validation Datasets and the sorted label names (from the whole training file)."""
    train, train_labels = _load_classification_file(files.train_file, task)
    labels = label_names(train_labels)
    if len(labels) < 2:
        raise DataError(f"{files.train_file}: every row has the label {labels[0]!r} (column {task.label_column!r}); "
                        "classification needs at least two classes: add rows of another class")
    if files.validation_file:
        validation, values = _load_classification_file(files.validation_file, task)
        check_known_labels(values, labels, files.validation_file, task.label_column)
    else:
        split = train.train_test_split(test_size=files.validation_split, seed=seed)
        train, validation = split["train"], split["test"]
    splits = {"train": subsample(train, files.max_train_samples, seed),
              "validation": subsample(validation, files.max_eval_samples, seed)}
    return splits, labels


def encode_classification(ds: datasets.Dataset, tokenizer, task: TextClassificationArgs, label2id: dict,
                          max_length: int) -> datasets.Dataset:
    """Tokenize (truncating to ``max_length``) and turn label names into ids; padding happens per batch."""

    def encode(batch: dict) -> dict:
        pairs = batch[task.text_pair_column] if task.text_pair_column else None
        enc = tokenizer(batch[task.text_column], pairs, truncation=True, max_length=max_length)
        enc["labels"] = [label2id[_label_str(v)] for v in batch[task.label_column]]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenize")
