"""User errors and the one-line contract of every recipe.

A user error (a bad flag, file, row or setting) ends a recipe with exit code 2 and ONE line on stderr:
``error: <what>, <which file/row/flag>, <what to do>``. The full traceback is printed instead when
``--debug`` is on the command line or ``HFSSL_DEBUG=1`` is set. Anything else (a bug, a fault of the
machine) keeps Python's traceback: it must never be mistaken for bad input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import datasets


class UserError(ValueError):
    """Input that cannot be used as given; the message names the culprit and says what to do."""


class Fault(RuntimeError):
    """A fault of the machine (disk full, damaged file) that hfssl recognised: the message says what was
    kept and how to go on, so it is shown as one line like a user error."""


USER_ERRORS = (ValueError, Fault, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _user_error(err: BaseException) -> BaseException | None:
    """``err`` itself, or the user error a library wrapped it in (datasets' DatasetGenerationError wraps
    the exception a generator raised), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, datasets.exceptions.DatasetGenerationError):
            err = err.__cause__ or err.__context__
            continue
        if isinstance(err, USER_ERRORS):
            return err
        return None
    return None


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (argparse and pyarrow messages may span several)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[6:].lstrip() if text.startswith("error:") else text


def run_cli(main: Callable, argv: list[str] | None = None):
    """Run a recipe's ``main(argv)`` under the one-line error contract; returns what ``main`` returns."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("HFSSL_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        return main(args)
    except Exception as err:
        found = _user_error(err)
        if found is None or debug:
            raise
        _close_progress_bars()  # so the error is the last line, not followed by a bar's final refresh
        print(f"error: {one_line(found)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _close_progress_bars() -> None:
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
