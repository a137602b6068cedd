"""What every fine-tuning recipe shares: model and data-file arguments, ``TrainingArguments`` defaults,
data-file loading and column checks, loading a checkpoint with a new head, saving and reporting.

Task specifics live beside it: :mod:`hfssl.finetune.text_classification`, :mod:`hfssl.finetune.qa`;
metrics in :mod:`hfssl.finetune.metrics` (offline ``evaluate.Metric`` classes). Bad data is an error that
names the file, the row and the column; nothing is skipped silently. The recipes run under
:func:`hfssl.errors.run_cli`: a :class:`DataError` (a :class:`~hfssl.errors.UserError`) or a bad flag ends
the run with exit code 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import TrainingArguments

from hfssl.errors import UserError, one_line
from hfssl.files import check_model_folder, check_utf8

_LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_KINDS = ".csv, .tsv, .json, .jsonl or .parquet"
MIN_SEQ_LENGTH = 8  # --max_seq_length floor of the text recipes: [CLS], [SEP]s and a few tokens of text


class DataError(UserError):
    """Input data that cannot be used as given; the message names the file, row and column."""


@dataclass
class ModelArgs:
    """Which checkpoint to start from (every fine-tuning recipe)."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Folder written by save_pretrained: an hfssl OUTPUT/model or any compatible checkpoint."})
    from_scratch: bool = field(default=False, metadata={
        "help": "Same architecture (the folder's config), randomly initialised: the baseline pretraining must beat."})

    def require_path(self, example: str) -> str:
        """The model folder, or an error that says what to pass (``example``: e.g. a recipe's output).

        A name that can only be a local path (absolute, relative with ``./`` or ``~``, or more than one
        ``/``) must exist; ``name`` or ``org/name`` may be a Hub id and is left to ``from_pretrained``."""
        path = self.model_name_or_path
        if not path:
            raise UserError(f"--model_name_or_path is required; give a model folder (e.g. {example})")
        local = path.startswith(("/", ".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path
        if local and not Path(path).expanduser().exists():
            raise UserError(f"--model_name_or_path {path}: folder not found; give a model folder (e.g. {example})")
        if Path(path).expanduser().is_dir():  # its files, before any data work (weights: headers only)
            check_model_folder(Path(path).expanduser(), weights=not self.from_scratch)
        return path


@dataclass
class DataFilesArgs:
    """Training and validation files, and deterministic subsampling."""

    train_file: str | None = field(default=None, metadata={"help": "Training data: .csv, .tsv, .jsonl, .json or .parquet (required)."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same format as the training data."})
    validation_split: float = field(default=0.0, metadata={
        "help": "Without --validation_file: hold out this fraction of the training file (seeded) for evaluation."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use N training rows, drawn with the seed."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use N validation rows, drawn with the seed."})

    def __post_init__(self):
        if not self.train_file:
            raise ValueError(f"--train_file is required; give a {_KINDS} file")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"--validation_split must be in [0, 1), got {self.validation_split}")
        if self.validation_file and self.validation_split:
            raise ValueError("--validation_file and --validation_split are both given; give one of them")
        if not self.validation_file and not self.validation_split:
            raise ValueError("evaluation needs --validation_file or --validation_split (e.g. 0.1); give one of them")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 (or unset: all rows), got {getattr(self, name)}")
        for flag, path in (("--train_file", self.train_file), ("--validation_file", self.validation_file)):
            if path and not Path(path).is_file():
                what = "is a folder" if Path(path).is_dir() else "not found"
                raise FileNotFoundError(f"{flag} {path}: {what}; give the path of a {_KINDS} file")


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with fine-tuning defaults: BERT's recipe, evaluation every epoch, no reporting."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the fine-tuned model and metrics go (required)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Write into a non-empty --output_dir."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    save_strategy: str = field(default="no", metadata={
        "help": "Checkpoints during training: no, steps or epoch (the final model is always saved to output_dir)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per device for training."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size per device for evaluation."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warmup: a fraction of all steps if below 1, else a step count."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    report_to: str | None = field(default="none", metadata={"help": "Loggers: none, tensorboard, wandb, ..."})

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir is required; give the folder to write the fine-tuned model to")
        check_training_numbers(self)
        super().__post_init__()


def check_training_numbers(args: TrainingArguments) -> None:
    """Range checks of the ``TrainingArguments`` numbers a user sets, each naming its flag (``Trainer``
    would fail later with a traceback, or silently train nothing)."""
    at_least = {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1,
                "learning_rate": 0, "weight_decay": 0, "warmup_steps": 0, "max_grad_norm": 0,
                "dataloader_num_workers": 0, "seed": 0, "label_smoothing_factor": 0}
    for name, low in at_least.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise ValueError(f"--{name} must be at least {low}, got {value}")
    for name in ("logging_steps", "eval_steps", "save_steps", "adam_epsilon"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be above 0, got {value}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if args.label_smoothing_factor > 1:
        raise ValueError(f"--label_smoothing_factor must be at most 1, got {args.label_smoothing_factor}")
    if args.seed >= 2**32:
        raise ValueError(f"--seed must be below 2**32, got {args.seed}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"--max_steps must be at least 1 (or -1: train --num_train_epochs), got {args.max_steps}")
    if args.max_steps == -1 and args.num_train_epochs <= 0:
        raise ValueError(f"--num_train_epochs must be above 0 (or set --max_steps), got {args.num_train_epochs}")


def check_output_dir(args: FinetuneTrainingArguments) -> None:
    """Refuse to write into a non-empty output folder unless asked to (or resuming from it)."""
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        raise UserError(f"--output_dir {out} exists and is not empty; pass --overwrite_output_dir to write into "
                        "it, --resume_from_checkpoint to continue a run, or choose another folder")


def load_pretrained(auto_cls, path: str, what: str, **kwargs):
    """``auto_cls.from_pretrained(path, **kwargs)`` (a tokenizer, config or image processor); a folder that
    is missing or holds no ``what`` is a :class:`~hfssl.errors.UserError` naming ``--model_name_or_path``."""
    try:
        return auto_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"--model_name_or_path {path}: cannot load its {what} ({type(err).__name__}: "
                        f"{one_line(err)[:300]}); give a folder written by save_pretrained") from err


def load_data_file(path: str | Path) -> datasets.Dataset:
    """One data file as a Dataset, through ``datasets.load_dataset`` (Arrow, cached)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}; check the path")
    kind = _LOADERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_LOADERS)}")
    kwargs = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes); give a file with data rows")
    if kind != "parquet":  # pyarrow's JSON reader keeps invalid UTF-8 unnoticed, pandas names no file
        check_utf8(path, "data file", "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    try:
        ds = datasets.load_dataset(kind, data_files={"data": str(path)}, split="data", **kwargs)
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError, StopIteration) as err:  # name the file
        cause = (err.__cause__ or err.__context__ or err) if isinstance(err, datasets.exceptions.DatasetGenerationError) else err
        if "corresponds to no data" in str(cause) or isinstance(cause, StopIteration):
            raise DataError(f"{path} holds no rows (only a header, or blank); give a file with data rows") from err
        raise DataError(f"{path}: cannot be read as {kind} ({type(cause).__name__}: {one_line(cause)[:300]}); "
                        "fix the file (or re-create a truncated one)") from err
    if len(ds) == 0:
        raise DataError(f"{path} holds no rows; give a file with data rows")
    return ds


def require_columns(ds: datasets.Dataset, columns: list[str], path) -> None:
    """Each of ``columns`` must exist in ``ds``; the error lists the columns that do."""
    for column in columns:
        if column not in ds.column_names:
            raise DataError(f"{path}: no column {column!r}; available columns: {', '.join(ds.column_names)}; "
                            f"choose with --text_column / --text_pair_column / --label_column")


def column_values(ds: datasets.Dataset, name: str) -> pa.ChunkedArray:
    return ds.with_format("arrow")[name] if ds._indices is not None else ds.data.table.column(name)


def check_text_column(ds: datasets.Dataset, column: str, path) -> None:
    """Every row of ``column`` must hold non-blank text."""
    col = column_values(ds, column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(f"{path}: column {column!r} must hold text, but its values are {col.type}; choose "
                        "another column or fix the file")
    bad = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)  # (N,) missing or blank
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        row = pc.index(bad, True).as_py()
        raise DataError(f"{path}: row {row} (0-based) has an empty or missing {column!r} ({n_bad} such row(s) "
                        "in all); fill in or remove those rows")


def label_values(ds: datasets.Dataset, column: str, path) -> list[str]:
    """The labels of ``column`` as strings; integral floats (a CSV quirk) become ints; nulls are errors."""
    col = column_values(ds, column)
    nulls = pc.is_null(col, nan_is_null=True) if pa.types.is_floating(col.type) else pc.is_null(col)
    if pc.any(nulls).as_py():
        raise DataError(f"{path}: row {pc.index(nulls, True).as_py()} (0-based) has no {column!r} label; fill in "
                        "or remove that row")
    if pa.types.is_floating(col.type):
        if not pc.all(pc.equal(pc.floor(col), col)).as_py():
            raise DataError(f"{path}: column {column!r} holds fractional numbers ({col.type}): regression is not "
                            "supported; use integer or string class labels")
        col = pc.cast(col, pa.int64())
    if not (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type) or pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type)):
        raise DataError(f"{path}: column {column!r} must hold class labels (text or integers), got {col.type}; "
                        "choose another --label_column")
    return [str(v) for v in col.to_pylist()]


def label_names(values: list[str]) -> list[str]:
    """Sorted distinct labels: numerically when they are all integers, else as text."""
    distinct = set(values)
    if all(v.lstrip("-").isdigit() for v in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def check_known_labels(values: list[str], known: list[str], path, column: str) -> None:
    """Every validation label must be one the model is trained on."""
    known_set = set(known)
    for row, value in enumerate(values):
        if value not in known_set:
            raise DataError(f"{path}: row {row} (0-based) has {column!r} = {value!r}, which the training data never "
                            f"uses (training labels: {', '.join(known)}); fix the row or add training examples")


def subsample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """``n`` rows drawn without replacement with ``seed``, kept in file order (all rows when ``n`` is None)."""
    if n is None or n >= len(ds):
        return ds
    rows = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return ds.select(rows.tolist())


def effective_max_length(requested: int, tokenizer, config) -> int:
    """``requested`` capped by the tokenizer's and the position embeddings' limits (with a note)."""
    limits = [tokenizer.model_max_length, getattr(config, "max_position_embeddings", None) or requested]
    length = min(requested, *limits)
    if length < requested:
        print(f"max_seq_length {requested} exceeds what the model supports; using {length}")
    return length


def load_model(auto_cls, path: str, config, from_scratch: bool = False):
    """``auto_cls`` (e.g. AutoModelForSequenceClassification) from ``path``: pretrained weights, or random.

    Returns ``(model, info)``; ``info["missing_keys"]`` are the newly initialised weights (all of them
    ``from_scratch``), ``info["unexpected_keys"]`` the checkpoint tensors left unused (pretraining heads).
    """
    if from_scratch:
        model = auto_cls.from_config(config)
        model.config._name_or_path = ""  # no base model: the card must not claim one
        return model, {"missing_keys": sorted(model.state_dict()), "unexpected_keys": [], "mismatched_keys": []}
    try:
        model, info = auto_cls.from_pretrained(path, config=config, output_loading_info=True)
    except OSError as err:  # no weights file in the folder
        raise UserError(f"--model_name_or_path {path}: cannot load its weights ({one_line(err)[:300]}); give a "
                        "folder written by save_pretrained, or pass --from_scratch") from err
    return model, info


def describe_loading(info: dict, from_scratch: bool, head_prefixes: tuple[str, ...]) -> str:
    """One line on what was loaded: warns when weights outside the task head had to be initialised."""
    if from_scratch:
        return "from scratch: every weight randomly initialised (--from_scratch)"
    new = sorted(info["missing_keys"])
    unused = sorted(info["unexpected_keys"])
    text = f"loaded the pretrained encoder; new task-head weights: {', '.join(new) or 'none'}"
    if unused:
        groups = sorted({".".join(k.split(".")[:2]) for k in unused})
        text += f"; {len(unused)} checkpoint tensor(s) not used by this task ({', '.join(groups)})"
    body = [k for k in new if not k.startswith(head_prefixes)]
    if body:
        text += f"\nWARNING: not in the checkpoint, randomly initialised: {', '.join(body)}"
    return text


def finish(trainer, train_result) -> dict:
    """Save the model + tokenizer, evaluate, print and write train/eval/all_results.json; returns eval metrics."""
    trainer.save_model()  # model, config (with labels), tokenizer -> output_dir
    train_metrics = train_result.metrics
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        try:  # Trainer's own card (base model, hyperparameters, results); never lose a finished model over it
            trainer.create_model_card(finetuned_from=trainer.model.config._name_or_path or None, tags=["hfssl"])
        except Exception as err:  # noqa: BLE001
            print(f"warning: no model card written ({type(err).__name__}: {err})")
        print(f"saved the fine-tuned model to {trainer.args.output_dir}; metrics in all_results.json")
    return metrics


def train_and_finish(trainer) -> dict:
    """``trainer.train`` (resuming when ``--resume_from_checkpoint`` is set), then :func:`finish`."""
    return finish(trainer, trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint))

