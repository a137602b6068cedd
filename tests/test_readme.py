"""The README stays a short, true user guide.

Its "Fine-tune and share" snippet runs as written against an hfssl-style folder; every recipe and config
it names exists; its links (and those of docs/results.md and CONTRIBUTING.md) reach existing files and
headings; the commands in docs/results.md name existing scripts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "docs/results.md", ROOT / "CONTRIBUTING.md"]
MAX_README_LINES = 260


def readme_snippet() -> str:
    text = README.read_text()
    section = text.split("## Fine-tune and share", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_finetune_snippet_runs(tmp_path, monkeypatch):
    from transformers import BertConfig, BertForPreTraining, pipeline, set_seed

    from hfssl.hub import save_model_folder
    from hfssl.text.tokenizer import train_wordpiece

    rows = [json.loads(x) for x in (ROOT / "tests/data/cls_train.jsonl").read_text().splitlines()]
    names = sorted({r["label"] for r in rows})
    data = [{"text": r["text"], "label": names.index(r["label"])} for r in rows]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data[:10]))
    tok = train_wordpiece([r["text"] for r in rows], vocab_size=300, min_frequency=1, show_progress=False)
    set_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    folder = save_model_folder(BertForPreTraining(config), tmp_path / "model", tokenizer=tok)

    code = readme_snippet().replace('"runs/bert_mlm-20261128-120000/model"', repr(str(folder)))
    assert "num_labels=5" in code and "runs/cls" in code
    code = code.replace("num_labels=5", f"num_labels={len(names)}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = pipeline("text-classification", model=str(tmp_path / "runs/cls"))(data[0]["text"])
    assert out[0]["label"] in {f"LABEL_{i}" for i in range(len(names))} and 0 <= out[0]["score"] <= 1


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; measurements go to docs/results.md"


def test_readme_recipes_and_configs_exist():
    text = README.read_text()
    paths = set(re.findall(r"recipes/[\w/.-]*\w\.(?:py|yaml)", text))
    configs = set(re.findall(r"`(\w+\.yaml)`", text))  # bare names in the recipe table
    assert "recipes/bert_mlm.py" in paths and "bert_tiny.yaml" in configs
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    missing += sorted(f"recipes/configs/{c}" for c in configs if not (ROOT / "recipes/configs" / c).is_file())
    assert not missing, f"README.md names files that do not exist: {missing}"


def test_results_commands_name_existing_scripts():
    text = (ROOT / "docs/results.md").read_text()
    paths = set(re.findall(r"(?:benchmarks|recipes)/[\w/.-]*\w\.(?:py|sh|yaml)", text))
    assert "benchmarks/gain/pretraining_gain.py" in paths
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"docs/results.md names files that do not exist: {missing}"


def _without_code(text: str) -> list[str]:
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return out


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (duplicates not numbered)."""
    anchors = set()
    for line in _without_code(path.read_text()):
        if m := re.match(r"#{1,6} (.+)", line):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_reach_files_and_headings(doc):
    assert doc.is_file(), doc
    broken = []
    for line in _without_code(doc.read_text()):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists() or (anchor and anchor not in github_anchors(dest)):
                broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_describe_the_software_not_the_work(doc):
    text = doc.read_text().lower()
    phrases = ["goal of the issue", "this session", "earlier session", "no gpu was lent", "no gpu was available",
               "a second run", "recipe_defaults"]
    assert not [p for p in phrases if p in text]
