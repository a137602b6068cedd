"""Configuration: flat ``*Args`` dataclasses parsed with ``HfArgumentParser``.

Precedence, lowest first: dataclass defaults < the recipe's config file (or ``--config file.yaml``) <
command-line flags.
An unknown key in the YAML file is an error that names the key and the file, so a typo never
silently falls back to a default.

A recipe that continues from a model folder names a second default, its ``continue_config``: given
``--model_name_or_path`` and no ``--config``, that file replaces the from-scratch default (whose preset and
schedule belong to a new model), and the run says which default values it replaced. Values the user set
(a flag, or their own ``--config``) are never replaced: the folder checks refuse those that contradict it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types as types_mod
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

from hfssl.errors import UserError
from hfssl.files import read_text_file

T = TypeVar("T")


class ConfigError(UserError):
    """A configuration file or flag that cannot be used as given."""


def _field_names(types: tuple[type, ...]) -> set[str]:
    return {f.name for t in types for f in dataclasses.fields(t)}


def _scalar_types(types: tuple[type, ...]) -> dict[str, tuple[type, bool]]:
    """field name -> (int, float or bool; whether None is allowed) for the fields declared that simply."""
    out = {}
    for t in types:
        hints = typing.get_type_hints(t)
        for f in dataclasses.fields(t):
            hint = hints.get(f.name)
            args = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types_mod.UnionType) else {hint}
            optional = type(None) in args
            args.discard(type(None))
            if len(args) == 1 and (kind := args.pop()) in (int, float, bool):
                out[f.name] = (kind, optional)
    return out


def check_types(values: dict[str, Any], types: tuple[type, ...], where: str) -> None:
    """Refuse a YAML value of the wrong type for an int / float / bool field (YAML skips argparse's
    conversion): ``max_steps: 3.5`` or ``per_device_train_batch_size: [4]`` fail naming the key."""
    for key, value in values.items():
        kind, optional = _scalar_types(types).get(key, (None, True))
        if kind is None or (value is None and optional):
            continue
        ok = {int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              bool: isinstance(value, bool)}[kind]
        if not ok:
            raise ConfigError(f"{where}: {key}: {value!r} is not {'an' if kind is int else 'a'} {kind.__name__}"
                              f"{' or null' if optional else ''}; write e.g. {key}: {_example(kind)}")


def _example(kind: type) -> str:
    return {int: "4", float: "0.1", bool: "true"}[kind]


def load_yaml(path: str | Path, allowed: set[str]) -> dict[str, Any]:
    """Read a flat YAML mapping and refuse keys that no dataclass declares."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_text_file(path, "config file"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}: not valid YAML{f' at line {mark.line + 1}' if mark else ''} "
                          f"({getattr(err, 'problem', None) or type(err).__name__}); write flat key: value lines") from None
    if data is None:
        raise ConfigError(f"{path} holds no settings (the file is empty); write key: value lines, or leave --config "
                          "out for the recipe's defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(sorted(allowed))}"
        )
    return data


def parse(*types: type, args: list[str] | None = None, default_config: str | Path | None = None,
          continue_config: str | Path | None = None, keep_from_default: tuple[str, ...] = (),
          log: Callable[[str], None] | None = None) -> tuple:
    """Parse ``args`` (default ``sys.argv[1:]``) into one instance of each dataclass in ``types``.

    Precedence, lowest first: dataclass defaults < the config file < command-line flags. The config file is
    ``--config FILE`` when given, else the recipe's ``default_config`` (its calibrated settings, written out
    in ``recipes/configs/``): a recipe's defaults live in exactly one file, and ``--config`` replaces that
    file rather than layering on it, so what a run used is always one file plus its flags.

    ``continue_config``: the default file when the flags name a ``--model_name_or_path`` and no ``--config``
    is given (continued pretraining: the from-scratch default's preset and schedule are not the user's
    choice and give way to the folder); ``keep_from_default`` keys still come from ``default_config`` (e.g. a
    method-specific recipe's ``method``). ``log`` (default: print on the first process of a machine) gets
    one line naming each default value so replaced.

    ``--max_train_minutes`` given as a flag with no ``--config`` and no ``--max_steps``: the default config's
    ``max_steps`` is dropped (with a line saying so), so the user's time budget ends the run, not the default's
    step count.
    """
    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(types)
    parser.add_argument("--config", type=str, default=None,
                        help="YAML file of key: value settings" + (f" (default: {default_config})" if default_config else ""))
    # --config is read before the other flags, because its values become the parser's defaults
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=str, default=None)
    pre.add_argument("--model_name_or_path", type=str, default=None)
    known, _ = pre.parse_known_args(args)
    config_path = known.config if known.config is not None else default_config
    values: dict[str, Any] = {}
    if config_path is not None:
        values = load_yaml(config_path, _field_names(types))
        check_types(values, types, str(config_path))
    flags = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    if known.config is None and continue_config is not None and known.model_name_or_path:
        scratch = values
        values = load_yaml(continue_config, _field_names(types))
        check_types(values, types, str(continue_config))
        values.update({k: scratch[k] for k in keep_from_default if k in scratch})
        replaced = replaced_defaults({k: v for k, v in scratch.items() if k not in flags}, values, types)
        if replaced:
            (log or _print_once)(
                f"--model_name_or_path without --config: defaults from {Path(continue_config).name} instead of "
                f"{Path(str(default_config)).name} (the folder defines the model); replaced: {', '.join(replaced)}")
    if known.config is None and "max_train_minutes" in flags and "max_steps" not in flags and \
            values.get("max_steps", -1) > 0:  # a time budget the user gives is not cut short by the default's steps
        (log or _print_once)(f"--max_train_minutes given: the default config's max_steps {values.pop('max_steps')} no "
                             "longer ends the run (pass --max_steps too to keep a step limit)")
    if values:
        parser.set_defaults(**values)

    def error(message: str):  # argparse prints usage + message; the contract is one line naming the flag
        raise ConfigError(f"{message}; see --help")

    parser.error = error
    namespace, extra = parser.parse_known_args(args)
    if extra:
        raise ConfigError(f"unrecognised arguments: {' '.join(extra)}; see --help for the valid flags")
    values = vars(namespace)
    values.pop("config", None)
    out = []
    for t in types:
        names = {f.name for f in dataclasses.fields(t) if f.init}
        try:
            out.append(t(**{k: v for k, v in values.items() if k in names}))
        except ValueError as err:  # __post_init__ range checks name the flag
            raise ConfigError(str(err)) from None
    return tuple(out)


def replaced_defaults(scratch: dict[str, Any], continued: dict[str, Any], types: tuple[type, ...]) -> list[str]:
    """``key old -> new`` for every value of the from-scratch default config that the continue config changes
    (a key it lacks falls back to the dataclass default; a model-shape key such as ``preset`` to the folder's)."""
    defaults = {f.name: f.default for t in types for f in dataclasses.fields(t)
                if f.default is not dataclasses.MISSING}
    out = []
    for key, old in scratch.items():
        new = continued.get(key, defaults.get(key))
        if new != old and key != "output_dir":
            out.append(f"{key} {old} -> {'the folder' + chr(39) + 's' if new is None else new}")
    return out


def _print_once(message: str) -> None:
    """Print on the first process of each machine (parsing runs before the Accelerator exists)."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(message, flush=True)
