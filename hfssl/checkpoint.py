"""Checkpoints that are always complete, resumes that continue the same run, and the output-folder guard.

A checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed to ``step-N`` only after every file,
``trainer_state.json`` last, is on disk: a crash mid-write leaves a ``.tmp-`` folder that resume ignores;
a full disk removes the temporary folder and says so, the previous checkpoint intact. We name checkpoints
ourselves because Accelerate's automatic naming restarts its counter after ``load_state`` and then prunes
the wrong folder.

``trainer_state.json`` also holds the run's *settings* (what defines its data and its shapes). A resume
whose settings differ is refused, naming each difference; a newest checkpoint that fails to load is set
aside as ``damaged-step-N`` (reported by path) and the previous complete one is used.

The output folder: a non-empty ``--output_dir`` is refused unless ``--resume`` (which needs a checkpoint)
or ``--overwrite_output_dir``, which starts a truly fresh run: hfssl's checkpoints, tokenizer, logs and
pictures are removed first; ``model/`` stays until the new run replaces it. A folder holding only what a
failed run wrote before its first checkpoint is cleared the same way (nothing in it had completed).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import shutil
from pathlib import Path

from accelerate import Accelerator

from hfssl.errors import Fault, UserError, one_line

CHECKPOINTS = "checkpoints"


class _TiedWeightsNote(logging.Filter):
    """Drop Accelerate's "Removed shared tensor {...} while saving. This should be OK, but check..." line.

    It fires on every checkpoint of a model with tied weights (BERT's MLM decoder is the word-embedding
    matrix): safetensors stores a shared tensor once and loading re-ties it. That this is lossless is what the
    bit-identical resume tests check, so the line only alarms users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNote())


# Settings a resume may change: how often to log / evaluate / save, where, how long, the learning rate,
# workers and caches. Every other field of the recipe's settings defines the data or the model's shapes.
FREE_TO_CHANGE = {"cache_dir", "num_proc", "preprocessing_num_proc", "num_pictures", "knn_k", "knn_bank_size",
                  "linear_probe", "probe_max_images", "base_learning_rate", "collapse_threshold", "finetune_dropout"}
# max_train_minutes: the schedule of a time-budgeted run is laid over its budget, so a resume must repeat it
TRAIN_DEFINING = ("seed", "per_device_train_batch_size", "gradient_accumulation_steps", "max_train_minutes")
# Settings added after checkpoints were first written, with the value that reproduces what runs did before them:
# a checkpoint without the key resumes when the run has that value (image storage before encoded storage existed).
BEFORE_ADDED = {"storage": "decoded", "max_side": None, "jpeg_quality": 90, "model_name_or_path": None,
                "tokenizer_train_mb": 1000.0,  # all the text of any corpus run before it (< 1 GB)
                "max_train_minutes": None}  # runs by steps


def run_settings(train_args, *defining) -> dict:
    """The settings a checkpoint stores and a resume must repeat: the data- and shape-defining fields of the
    recipe's argument dataclasses ``defining`` (never Hub arguments: no token is ever stored), plus the
    seed, batch size and accumulation of ``train_args`` (they fix the data position) and its time budget."""
    out = {k: getattr(train_args, k) for k in TRAIN_DEFINING}
    for args in defining:
        out.update({k: v for k, v in dataclasses.asdict(args).items() if k not in FREE_TO_CHANGE})
    return json.loads(json.dumps(out, default=str))  # exactly what trainer_state.json will hold


# what hfssl writes into an output folder (besides model/): removed by --overwrite_output_dir
RUN_FILES = ("checkpoints", "tokenizer", "metrics.jsonl", "report.png", "reconstructions", "hfssl",
             "decode_failures.tsv", "skipped_pairs.tsv", "retrievals", "pictures", "samples")
STATE = "trainer_state.json"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (``checkpoints/step-N`` with ``trainer_state.json``), newest first."""
    root = Path(output_dir) / CHECKPOINTS
    done = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE).is_file() and p.name[5:].isdigit()]
    return sorted(done, key=lambda p: int(p.name[5:]), reverse=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; temporary and damaged folders are never chosen."""
    found = complete_checkpoints(output_dir)
    return found[0] if found else None


def _leftovers_only(out: Path) -> bool:
    """True when ``out`` holds only what a run writes before its first checkpoint (nothing completed)."""
    names = {p.name for p in out.iterdir()}
    return names <= set(RUN_FILES) and not complete_checkpoints(out)


def prepare_output_dir(output_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Check the output folder before any work (every process; read only). See the module docstring."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file, choose a folder")
    if resume:
        if latest_checkpoint(out) is None:
            raise UserError(f"--resume: no complete checkpoint in {out / CHECKPOINTS}, nothing to continue; "
                            "run without --resume to start a new run (or check --output_dir)")
        return out
    if out.exists() and any(out.iterdir()) and not overwrite and not _leftovers_only(out):
        raise FileExistsError(
            f"--output_dir {out} exists and is not empty: pass --resume to continue it, "
            "--overwrite_output_dir to start a new run in it, or choose another --output_dir"
        )
    return out


def start_fresh(output_dir: str | Path) -> list[str]:
    """Remove what an earlier run wrote into ``output_dir`` (main process, after :func:`prepare_output_dir`
    allowed a new run there); ``model/`` stays until the new run replaces it. Returns what was removed."""
    out = Path(output_dir)
    removed = []
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def check_settings(saved: dict | None, current: dict, where: Path) -> None:
    """Refuse a resume whose data- or shape-defining settings differ from the checkpoint's, naming each."""
    if saved is None:
        return  # a checkpoint from before settings were stored
    saved = {**{k: v for k, v in BEFORE_ADDED.items() if k in current}, **saved}
    keys = sorted(set(saved) | set(current))
    diff = [f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if saved.get("max_train_minutes") != current.get("max_train_minutes"):
        raise UserError(_budget_changed(saved.get("max_train_minutes"), current.get("max_train_minutes"), where))
    if diff:
        raise UserError(f"--resume: the checkpoint {where} was trained with other settings ({'; '.join(diff)}); "
                        "rerun with the checkpoint's values, or start a new run with another --output_dir")


def _budget_changed(saved: float | None, current: float | None, where: Path) -> str:
    """The message of a resume whose --max_train_minutes differs from the checkpoint's budget."""
    flag = "no --max_train_minutes" if current is None else f"--max_train_minutes {current:g}"
    trained = "by steps, without a time budget" if saved is None else f"with --max_train_minutes {saved:g}"
    again = "without --max_train_minutes" if saved is None else f"with --max_train_minutes {saved:g}"
    return (f"--resume with {flag}: the checkpoint {where} was trained {trained}, and its learning-rate schedule "
            f"is laid over that; resume {again} (the time already spent counts against the budget), or start a "
            "new run with another --output_dir")


def load_latest(accelerator: Accelerator, output_dir: str | Path, settings: dict) -> dict:
    """Load the newest checkpoint that loads; a damaged one is renamed ``damaged-step-N`` and reported.
    Returns its trainer state. Settings that differ from the checkpoint's are an error, not damage."""
    out = Path(output_dir)
    for ckpt in complete_checkpoints(out):
        try:
            state = json.loads((ckpt / STATE).read_text())
        except (OSError, ValueError) as err:
            _set_aside(accelerator, ckpt, f"unreadable {STATE}: {one_line(err)}")
            continue
        check_settings(state.get("settings"), settings, ckpt)
        try:
            accelerator.load_state(str(ckpt))
        except Exception as err:  # noqa: BLE001  a truncated or missing file: use the previous checkpoint
            _set_aside(accelerator, ckpt, f"{type(err).__name__}: {one_line(err)}")
            continue
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")
        return state
    raise Fault(f"--resume: no checkpoint in {out / CHECKPOINTS} could be loaded (the damaged ones are kept as "
                "damaged-step-N); start a new run with --overwrite_output_dir or another --output_dir")


def _set_aside(accelerator: Accelerator, ckpt: Path, reason: str) -> None:
    accelerator.print(f"warning: checkpoint {ckpt} is damaged ({reason}); kept as "
                      f"{ckpt.with_name('damaged-' + ckpt.name)}, trying the previous checkpoint")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        target = ckpt.with_name("damaged-" + ckpt.name)
        shutil.rmtree(target, ignore_errors=True)
        ckpt.rename(target)
    accelerator.wait_for_everyone()


def _write_failed(root: Path, final: Path, err: BaseException) -> Fault:
    """The error of a checkpoint write that failed (disk full, quota, I/O): what happened, what is kept."""
    free = shutil.disk_usage(root).free if root.exists() else 0
    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or free < 64 * 2**20
    previous = latest_checkpoint(root.parent)
    return Fault(f"writing checkpoint {final} failed ({'no space left on the device, ' if full else ''}"
                 f"{free / 2**20:.0f} MB free; {type(err).__name__}: {one_line(err)[:200]}); "
                 f"{f'the previous checkpoint {previous} is intact' if previous else 'no earlier checkpoint exists'}; "
                 "free space and rerun with --resume")


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, state: dict, keep: int) -> Path:
    """``save_state`` into ``checkpoints/.tmp-step-N`` then rename to ``step-N``; prune to the last ``keep``.
    A failed write removes the temporary folder and raises a :class:`Fault` that says what is kept."""
    if keep < 1:
        raise UserError(f"--save_total_limit must be at least 1, got {keep}")
    root = Path(output_dir) / CHECKPOINTS
    final, tmp = root / f"step-{state['step']}", root / f".tmp-step-{state['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / STATE).write_text(json.dumps(state, indent=1))  # written last: marks complete
    except Exception as err:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(root, final, err) from err
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        ckpts = complete_checkpoints(output_dir)  # newest first
        for old in ckpts[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
