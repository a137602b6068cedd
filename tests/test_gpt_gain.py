"""benchmarks/gain/gpt_gain.py on GPT folders: model-type checks, the seed -> folder pairing, the scratch arm keyed
by config + tokenizer (shared with pretraining_gain.py), the results file refusing other models; and
recipes/finetune_text_classification.py on a GPT-2 folder: the last-token head (score.) is the new task head, not
a warning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks/gain"))

import gpt_gain  # noqa: E402
import pretraining_gain as gain  # noqa: E402


def fake_folder(path: Path, model_type="gpt2", pad=0, weights=b"w1", vocab="a b") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": model_type, "n_embd": 8}
    if pad is not None:
        config["pad_token_id"] = pad
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text(json.dumps({"vocab": vocab}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "README.md").write_text("card")
    return path


def test_model_type_and_pad_token(tmp_path):
    assert gpt_gain.model_type(fake_folder(tmp_path / "g")) == "gpt2"
    assert gpt_gain.model_type(fake_folder(tmp_path / "l", "llama")) == "llama"
    assert gpt_gain.model_type(fake_folder(tmp_path / "b", "bert", pad=None)) == "bert"  # BERT: [CLS] head
    with pytest.raises(SystemExit, match=r"^error: .*no pad_token_id"):
        gpt_gain.model_type(fake_folder(tmp_path / "nopad", pad=None))


def test_models_pair_with_seeds(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    assert gpt_gain.pair_models([a], [0, 1, 2]) == [a, a, a]
    assert gpt_gain.pair_models([a, b, c], [0, 1, 2]) == [a, b, c]
    with pytest.raises(SystemExit, match=r"^error: 2 --models for 3 --seeds"):
        gpt_gain.pair_models([a, b], [0, 1, 2])


def test_scratch_arm_keyed_by_config_and_tokenizer(tmp_path):
    s0 = fake_folder(tmp_path / "s0")
    s1 = fake_folder(tmp_path / "s1", weights=b"other pretraining, same tokenizer")
    s2 = fake_folder(tmp_path / "s2", vocab="another BPE (another seed's split)")
    tag = gpt_gain.scratch_tag("gpt2", s0)
    assert tag == f"scratch_gpt2_{gain.folder_digest(s0, weights=False)[:8]}"  # pretraining_gain.py's naming
    assert gpt_gain.scratch_tag("gpt2", s1) == tag != gpt_gain.scratch_tag("gpt2", s2)
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text(json.dumps({"text": split, "label": 0}) + "\n")
    argv = ["--learning_rate", "0.001"]
    assert gain.run_fingerprint(s0, files, argv, True) == gain.run_fingerprint(s1, files, argv, True)
    assert gain.run_fingerprint(s0, files, argv, False) != gain.run_fingerprint(s1, files, argv, False)
    assert gain.run_fingerprint(s0, files, argv, True) != gain.run_fingerprint(s2, files, argv, True)


def test_results_file_belongs_to_its_models_and_seeds(tmp_path):
    models = [fake_folder(tmp_path / "s0"), fake_folder(tmp_path / "s1", weights=b"w2")]
    path = tmp_path / "results_gpt.json"
    fresh = gpt_gain.earlier_results(path, models, [0, 1])
    path.write_text(json.dumps({**fresh, "bbc/pretrained": [0.001, [0.5, 0.6]]}))
    assert gpt_gain.earlier_results(path, models, [0, 1])["bbc/pretrained"] == [0.001, [0.5, 0.6]]
    with pytest.raises(SystemExit, match=r"^error: .*other models or seeds"):
        gpt_gain.earlier_results(path, models, [0, 2])
    (models[1] / "model.safetensors").write_bytes(b"retrained")
    with pytest.raises(SystemExit, match=r"^error: .*other models or seeds"):
        gpt_gain.earlier_results(path, models, [0, 1])


def test_tables_from_results():
    named = {"g": {"model_type": "gpt2", "seeds": [0, 1], "bbc/pretrained": [0.001, [0.9, 0.8]],
                   "bbc/scratch": [0.003, [0.7, 0.7]], "bbc/probe": {"pretrained": [0.8, 0.6], "random": [0.5, 0.5]}},
             "b": {"model_type": "bert", "seeds": [0, 1], "bbc/pretrained": [0.001, [0.95, 0.95]],
                   "bbc/scratch": [0.001, [0.9, 0.9]]}}
    table = gpt_gain.gain_table(named, ["bbc", "wordnet"])
    assert "| BBC topics | 85.0 ± 7.1 (lr 0.001) | 70.0 ± 0.0 (lr 0.003) | **+15.0** |" in table
    assert table.rstrip().endswith("| 95.0 ± 0.0 (lr 0.001) | 90.0 ± 0.0 (lr 0.001) | **+5.0** | -10.0 |")
    assert "WordNet" not in table  # no results: no row
    assert "| BBC topics | 70.0 ± 14.1 | 50.0 ± 0.0 | +20.0 |" in gpt_gain.probe_table(named, ["bbc"])


def test_finetune_recipe_names_the_gpt_head_as_the_task_head(tmp_path, capsys):
    """A GPT-2 folder fine-tuned by the recipe: score.weight is the new head, no warning about the body."""
    from finetune_text_classification import main as finetune_main
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfssl.text.bpe import train_bpe

    texts = ["the cat sat on the mat", "a dog ran in the park", "stocks fell in early trade"] * 10
    tok = train_bpe(texts, vocab_size=300, show_progress=False, model_max_length=64)
    folder = tmp_path / "gpt"
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(texts)))
    metrics = finetune_main(["--model_name_or_path", str(folder), "--train_file", str(data), "--validation_file",
                             str(data), "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
                             "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "true"])
    out = capsys.readouterr().out
    assert "new task-head weights: score.weight" in out
    assert "WARNING" not in out
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
