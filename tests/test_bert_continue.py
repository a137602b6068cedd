"""Continued pretraining (recipes/bert_mlm.py --model_name_or_path): folders laid out like the Hub's
bert-base-uncased (weights, config.json, vocab.txt, tokenizer files), built here at a small size, as
BertForPreTraining, BertForMaskedLM or an encoder-only BertModel. Nothing is re-initialised that the folder
holds, missing heads are listed, a two-phase run (128 -> 512 style) works, and bad folders are one line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from bad_inputs import ROOT, assert_user_error, run_in_process, run_recipe, snapshot
from safetensors.torch import load_file

SMALL = ["--per_device_train_batch_size", "8", "--eval_fraction", "0.2", "--logging_steps", "1", "--save_steps", "0",
         "--eval_steps", "0", "--max_seq_length", "48"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    text = gzip.open(ROOT / "hfssl/data/austen/persuasion.txt.gz", "rt", encoding="utf-8").read()
    for i, chapter in enumerate(text.split("\nChapter ")[1:11]):
        (folder / f"ch{i:02d}.txt").write_text(chapter.split("\n", 1)[1], encoding="utf-8")
    return folder


def hub_like_folder(folder: Path, kind: str, corpus: Path) -> Path:
    """A small BERT saved the way the Hub's bert-base-uncased is laid out: model.safetensors, config.json,
    vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel, set_seed

    from hfssl.text.tokenizer import save_tokenizer, train_wordpiece

    texts = [line for p in sorted(corpus.glob("*.txt")) for line in p.read_text().splitlines() if line.strip()]
    tokenizer = train_wordpiece(texts, vocab_size=600, min_frequency=1, model_max_length=128, show_progress=False)
    set_seed(3)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    model = {"pretraining": BertForPreTraining, "masked_lm": BertForMaskedLM, "encoder": BertModel}[kind](config)
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder


@pytest.mark.parametrize("kind, new_heads", [
    ("pretraining", set()),
    pytest.param("masked_lm", {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.seq_relationship.weight",
                   "cls.seq_relationship.bias"}, marks=pytest.mark.slow),
    ("encoder", {"cls.predictions.bias", "cls.predictions.decoder.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                 "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                 "cls.seq_relationship.weight", "cls.seq_relationship.bias"}),
])
def test_continue_from_a_folder_keeps_every_weight_it_holds(kind, new_heads, corpus, tmp_path):
    """Learning rate 0 for one step: the exported model must equal the folder tensor for tensor (nothing it
    holds re-initialised, so the loss at step 0 is the folder model's own); only its missing heads are new."""
    folder = hub_like_folder(tmp_path / "bert-base-like", kind, corpus)
    out = tmp_path / "run"
    proc = run_recipe("bert_mlm.py", "--config", ROOT / "recipes/configs/bert_continue.yaml", "--model_name_or_path",
                      folder, "--corpus", corpus, "--output_dir", out, "--max_steps", "1", "--learning_rate", "0",
                      *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = proc.stdout.split("initialised (not in the folder): ")[1].split(";")[0]
    got = set() if listed == "none" else set(listed.split(", "))
    assert got == new_heads
    given, saved = load_file(folder / "model.safetensors"), load_file(out / "model/model.safetensors")
    prefix = "bert." if kind == "encoder" else ""
    for key, value in given.items():
        assert torch.equal(saved[prefix + key], value), key
    # the folder's tokenizer is the one used and exported (no new vocabulary), sized for the model
    assert (out / "model/vocab.txt").read_text() == (folder / "vocab.txt").read_text()
    assert json.loads((out / "model/tokenizer_config.json").read_text())["model_max_length"] == 128
    assert "Fine-tuning note" in (out / "model/README.md").read_text()  # MLM only (bert_continue.yaml)
    eval_loss = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval_mlm_loss" in x]
    assert eval_loss and eval_loss[-1]["eval_mlm_loss"] > 0


def test_one_flag_continues_and_user_settings_that_contradict_the_folder_are_errors(corpus, tmp_path, capsys):
    """``--model_name_or_path`` without ``--config`` (the way run_mlm.py is used): the default config's preset and
    schedule give way to bert_continue.yaml's, and the run names each default it replaced. A preset the user set (a
    flag, or in their own --config) is still an error."""
    import yaml

    folder = hub_like_folder(tmp_path / "bert", "pretraining", corpus)
    out = tmp_path / "run"
    proc = run_in_process("bert_mlm.py", ["--model_name_or_path", folder, "--corpus", corpus, "--output_dir", out,
                                          "--max_steps", "1", *SMALL], capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("--model_name_or_path without --config"))
    scratch = yaml.safe_load((ROOT / "recipes/configs/bert_tiny.yaml").read_text())
    cont = yaml.safe_load((ROOT / "recipes/configs/bert_continue.yaml").read_text())
    assert "bert_continue.yaml instead of bert_tiny.yaml" in line
    assert f"preset {scratch['preset']} -> the folder's" in line and "sinusoidal_positions 0.02 -> 0.0" in line
    assert f"learning_rate {scratch['learning_rate']} -> {cont['learning_rate']}" in line
    assert "max_seq_length" not in line and "max_steps" not in line  # set by flags: not the default's to replace
    config = json.loads((out / "model/config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)  # the folder's model, not tiny's
    assert f"learning_rate | {cont['learning_rate']}" in (out / "model/README.md").read_text()

    mine = tmp_path / "mine.yaml"
    mine.write_text((ROOT / "recipes/configs/bert_tiny.yaml").read_text())  # the user's own copy: preset: tiny
    for i, args in enumerate((["--config", mine], ["--preset", "tiny"])):
        bad = tmp_path / f"bad{i}"
        proc = run_in_process("bert_mlm.py", [*args, "--model_name_or_path", folder, "--corpus", corpus,
                                              "--output_dir", bad, "--max_steps", "1"], capsys)
        assert_user_error(proc, "--preset tiny conflicts with --model_name_or_path", str(folder))
        assert not bad.exists()


@pytest.mark.slow
def test_two_phases_short_then_long_sequences(corpus, tmp_path):
    """BERT's schedule: phase 1 at a short length from scratch, phase 2 longer, from phase 1's folder."""
    phase1, phase2 = tmp_path / "p1", tmp_path / "p2"
    first = run_recipe("bert_mlm.py", "--corpus", corpus, "--output_dir", phase1, "--max_steps", "3",
                       "--vocab_size", "600", *SMALL, "--max_seq_length", "32")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_recipe("bert_mlm.py", "--config", ROOT / "recipes/configs/bert_continue.yaml", "--model_name_or_path",
                        phase1 / "model", "--corpus", corpus, "--output_dir", phase2, "--max_steps", "3", *SMALL,
                        "--max_seq_length", "128")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "initialised (not in the folder): none" in second.stdout
    a, b = load_file(phase1 / "model/model.safetensors"), load_file(phase2 / "model/model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # same model, trained further
    lengths = [json.loads(x) for x in (phase2 / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lengths if "loss" in x)


def test_bad_folders_and_conflicts_are_one_line(corpus, tmp_path, capsys):
    from transformers import ViTConfig, ViTModel

    vit = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=16, patch_size=8)).save_pretrained(vit)
    bert = hub_like_folder(tmp_path / "bert", "pretraining", corpus)
    before = snapshot(bert)
    cont = ["--config", ROOT / "recipes/configs/bert_continue.yaml", "--corpus", corpus, "--max_steps", "1"]
    cases = [
        (["--model_name_or_path", vit], ["'vit'", str(vit)]),
        (["--model_name_or_path", bert, "--preset", "mini"], ["--preset mini", str(bert)]),
        (["--model_name_or_path", bert, "--max_seq_length", "256"], ["--max_seq_length 256", "128 positions"]),
        (["--model_name_or_path", tmp_path / "nowhere"], ["no config.json", "nowhere"]),
    ]
    for i, (args, culprits) in enumerate(cases):
        out = tmp_path / f"run{i}"
        assert_user_error(run_in_process("bert_mlm.py", [*cont, "--output_dir", out, *args], capsys), *culprits)
        assert not out.exists()
    # a tokenizer whose vocabulary does not match the embeddings: named with both sizes (found after reading it)
    other = tmp_path / "other_tok"
    from hfssl.text.tokenizer import save_tokenizer, train_wordpiece

    save_tokenizer(train_wordpiece(["a b c d e f g h"] * 50, vocab_size=40, min_frequency=1, model_max_length=128,
                                   show_progress=False), other)
    proc = run_in_process("bert_mlm.py", [*cont, "--output_dir", tmp_path / "tok", "--model_name_or_path", bert,
                                          "--tokenizer_name_or_path", other], capsys)
    assert_user_error(proc, "600 embeddings")
    assert snapshot(bert) == before
