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
    with pytest.raises(ConfigError, match="--bogus"):
        parse(A, args=["--bogus", "1"])
    with pytest.raises(ConfigError, match="--steps.*invalid int value: 'x'"):
        parse(B, args=["--steps", "x"])


def test_yaml_values_of_the_wrong_type_are_refused_by_key(tmp_path):
    """YAML bypasses argparse's conversion: a float for an int, a list for a number, text for a bool."""
    cfg = tmp_path / "c.yaml"
    for text, key in (("steps: 3.5\n", "steps"), ("steps: [4]\n", "steps"), ("flag: maybe\n", "flag"),
                      ("lr: fast\n", "lr"), ("steps: true\n", "steps")):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=f"c.yaml: {key}: "):
            parse(A, B, args=["--config", str(cfg)])
    cfg.write_text("lr: 1\nname: null\nsteps: 3\n")  # an int for a float, null for an optional: fine
    a, b = parse(A, B, args=["--config", str(cfg)])
    assert (a.lr, a.name, b.steps) == (1, None, 3)


def test_post_init_errors_become_config_errors():
    @dataclass
    class Checked:
        n: int = field(default=1, metadata={"help": "a count"})

        def __post_init__(self):
            if self.n < 1:
                raise ValueError(f"--n must be at least 1, got {self.n}")

    with pytest.raises(ConfigError, match="--n must be at least 1, got 0"):
        parse(Checked, args=["--n", "0"])


def test_default_config_is_replaced_by_config_and_overridden_by_flags(tmp_path):
    """A recipe's defaults are one file: used without --config, replaced (not layered) by --config."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.3\nsteps: 5\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("steps: 7\n")
    a, b = parse(A, B, args=[], default_config=recipe)
    assert (a.lr, b.steps) == (0.3, 5)
    a, b = parse(A, B, args=["--config", str(mine)], default_config=recipe)
    assert (a.lr, b.steps) == (1e-3, 7)  # the recipe file's lr does not leak into a run given its own file
    a, b = parse(A, B, args=["--lr", "1"], default_config=recipe)
    assert (a.lr, b.steps) == (1.0, 5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("nope: 1\n")
    with pytest.raises(ConfigError, match="nope"):
        parse(A, args=[], default_config=bad)


@dataclass
class C:
    config_overrides: str = field(default="", metadata={"help": "a flag whose name starts with --config"})


def test_flag_starting_with_config_is_not_the_config_file():
    (c,) = parse(C, args=["--config_overrides", "a=1"])
    assert c.config_overrides == "a=1"


def test_every_recipe_config_parses_with_its_recipe(capsys):
    """Each file in recipes/configs/ names its recipe on line 1 and holds only keys that recipe knows."""
    import importlib.util
    import re
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "recipes"))  # what running a recipe as a script does (launchers import it)
    try:
        for cfg in sorted((root / "recipes/configs").glob("*.yaml")):
            first = cfg.read_text().splitlines()[0]
            m = re.search(r"recipes/(\w+)\.py", first)
            assert m and (root / m.group(0)).is_file(), f"{cfg.name}: first line must name its recipe: {first}"
            spec = importlib.util.spec_from_file_location(f"recipe_{m.group(1)}", root / m.group(0))
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up
            spec.loader.exec_module(module)
            with pytest.raises(SystemExit) as done:
                module.main(["--config", str(cfg), "--help"])
            assert done.value.code == 0, cfg.name
            assert "--output_dir" in capsys.readouterr().out
    finally:
        sys.path.remove(str(root / "recipes"))


def test_a_time_budget_flag_is_not_cut_short_by_the_default_configs_steps(tmp_path):
    """``--max_train_minutes`` on the command line with the recipe's default config: that config's ``max_steps``
    (set for a step-sized run) gives way, with a line saying so; a ``--max_steps`` flag or the user's own
    ``--config`` keeps its step limit (the run then ends at whichever comes first)."""
    from hfssl.train import TrainArgs

    default = tmp_path / "recipe_default.yaml"
    default.write_text("max_steps: 10000\nwarmup: 0.02\n")
    said = []
    (train,) = parse(TrainArgs, args=["--max_train_minutes", "30"], default_config=default, log=said.append)
    assert (train.max_steps, train.max_train_minutes, train.warmup) == (-1, 30.0, 0.02)
    assert said == ["--max_train_minutes given: the default config's max_steps 10000 no longer ends the run "
                    "(pass --max_steps too to keep a step limit)"]
    said.clear()
    (train,) = parse(TrainArgs, args=["--max_train_minutes=30", "--max_steps", "500"], default_config=default,
                     log=said.append)
    assert (train.max_steps, said) == (500, [])
    (train,) = parse(TrainArgs, args=["--config", str(default), "--max_train_minutes", "30"], default_config=default,
                     log=said.append)
    assert (train.max_steps, said) == (10000, [])
    (train,) = parse(TrainArgs, args=[], default_config=default, log=said.append)
    assert (train.max_steps, train.max_train_minutes, said) == (10000, None, [])
