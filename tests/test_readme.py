"""The README's "Fine-tune and share" snippet runs as written against an hfssl-style folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
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
