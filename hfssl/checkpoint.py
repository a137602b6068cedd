"""Checkpoints that are always complete, and the output-folder guard.

A checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed to ``step-N`` only after every file,
``trainer_state.json`` last, is on disk: a crash mid-write leaves a ``.tmp-`` folder that resume ignores.
We name checkpoints ourselves because Accelerate's automatic naming restarts its counter after
``load_state`` and then prunes the wrong folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from accelerate import Accelerator

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


def prepare_output_dir(output_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Refuse to write into a non-empty output_dir unless resuming or told to overwrite."""
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise FileExistsError(
            f"output_dir {out} exists and is not empty: pass --resume to continue it, "
            "--overwrite_output_dir to write into it, or choose another --output_dir"
        )
    return out


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (``checkpoints/step-N``); temporary folders are never chosen."""
    root = Path(output_dir) / CHECKPOINTS
    done = [p for p in root.glob("step-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, state: dict, keep: int) -> Path:
    """``save_state`` into ``checkpoints/.tmp-step-N`` then rename to ``step-N``; prune to the last ``keep``."""
    root = Path(output_dir) / CHECKPOINTS
    final, tmp = root / f"step-{state['step']}", root / f".tmp-step-{state['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))  # written last: marks complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        ckpts = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
        for old in ckpts[: max(len(ckpts) - keep, 0)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
