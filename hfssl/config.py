"""Configuration: flat ``*Args`` dataclasses parsed with ``HfArgumentParser``.

Precedence, lowest first: dataclass defaults < the recipe's config file (or ``--config file.yaml``) <
command-line flags.
An unknown key in the YAML file is an error that names the key and the file, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used as given."""


def _field_names(types: tuple[type, ...]) -> set[str]:
    return {f.name for t in types for f in dataclasses.fields(t)}


def load_yaml(path: str | Path, allowed: set[str]) -> dict[str, Any]:
    """Read a flat YAML mapping and refuse keys that no dataclass declares."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are: {', '.join(sorted(allowed))}"
        )
    return data


def parse(*types: type, args: list[str] | None = None, default_config: str | Path | None = None) -> tuple:
    """Parse ``args`` (default ``sys.argv[1:]``) into one instance of each dataclass in ``types``.

    Precedence, lowest first: dataclass defaults < the config file < command-line flags. The config file is
    ``--config FILE`` when given, else the recipe's ``default_config`` (its calibrated settings, written out
    in ``recipes/configs/``): a recipe's defaults live in exactly one file, and ``--config`` replaces that
    file rather than layering on it, so what a run used is always one file plus its flags.
    """
    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(types)
    parser.add_argument("--config", type=str, default=None,
                        help="YAML file of key: value settings" + (f" (default: {default_config})" if default_config else ""))
    # --config is read before the other flags, because its values become the parser's defaults
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=str, default=None)
    known, _ = pre.parse_known_args(args)
    config_path = known.config if known.config is not None else default_config
    if config_path is not None:
        parser.set_defaults(**load_yaml(config_path, _field_names(types)))
    namespace, extra = parser.parse_known_args(args)
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    values = vars(namespace)
    values.pop("config", None)
    out = []
    for t in types:
        names = {f.name for f in dataclasses.fields(t) if f.init}
        out.append(t(**{k: v for k, v in values.items() if k in names}))
    return tuple(out)
