"""YAML defaults, command-line overrides, and unknown keys refused by name."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hfssl.config import ConfigError, parse


@dataclass
class A:
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    name: str | None = field(default=None, metadata={"help": "a name"})


@dataclass
class B:
    steps: int = field(default=10, metadata={"help": "steps"})
    flag: bool = field(default=True, metadata={"help": "a flag"})


def test_defaults_yaml_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("# accelerate launch recipe.py --config c.yaml\nlr: 0.5\nsteps: 7\nflag: false\n")
    a, b = parse(A, B, args=[])
    assert (a.lr, a.name, b.steps, b.flag) == (1e-3, None, 10, True)
    a, b = parse(A, B, args=["--config", str(cfg)])
    assert (a.lr, b.steps, b.flag) == (0.5, 7, False)
    a, b = parse(A, B, args=["--config", str(cfg), "--steps", "3", "--name", "x"])
    assert (a.lr, a.name, b.steps) == (0.5, "x", 3)
    a, b = parse(A, B, args=[f"--config={cfg}", "--lr", "2"])
    assert (a.lr, b.steps) == (2.0, 7)


def test_unknown_yaml_key_is_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: 0.1\nstepz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'stepz'"):
        parse(A, B, args=["--config", str(cfg)])


def test_missing_config_and_unknown_flag(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse(A, args=["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit):
        parse(A, args=["--bogus", "1"])


def test_recipe_defaults_sit_between_dataclass_and_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 7\n")
    a, b = parse(A, B, args=[], defaults={"lr": 0.3, "steps": 5})
    assert (a.lr, b.steps) == (0.3, 5)
    a, b = parse(A, B, args=["--config", str(cfg)], defaults={"lr": 0.3, "steps": 5})
    assert (a.lr, b.steps) == (0.3, 7)
    a, b = parse(A, B, args=["--lr", "1"], defaults={"lr": 0.3})
    assert a.lr == 1.0
    with pytest.raises(ConfigError, match="nope"):
        parse(A, args=[], defaults={"nope": 1})


def test_bert_tiny_yaml_writes_out_the_recipe_defaults():
    """recipes/configs/bert_tiny.yaml is documented as the recipe's defaults: both must give the same args."""
    import sys as _sys
    from pathlib import Path as _Path

    root = _Path(__file__).resolve().parents[1]
    _sys.path.insert(0, str(root / "recipes"))
    import bert_mlm

    from hfssl.hub import HubArgs
    from hfssl.methods.bert import BertModelArgs
    from hfssl.text.corpus import CorpusArgs
    from hfssl.text.masking import MaskingArgs
    from hfssl.text.nsp import NSPArgs
    from hfssl.text.tokenizer import TokenizerArgs
    from hfssl.train import TrainArgs

    types = (CorpusArgs, TokenizerArgs, NSPArgs, MaskingArgs, BertModelArgs, TrainArgs, HubArgs, bert_mlm.EvalSplitArgs)
    plain = parse(*types, args=[], defaults=bert_mlm.RECIPE_DEFAULTS)
    from_file = parse(*types, args=["--config", str(root / "recipes/configs/bert_tiny.yaml")])
    assert plain == from_file
