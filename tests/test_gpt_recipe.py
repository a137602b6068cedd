"""recipes/gpt_clm.py end to end on a small corpus made here: the exported folder with the Auto classes, the
text-generation pipeline and generate() (KV cache = no cache, greedy), a sequence classifier on a padded batch,
run_clm.py's data path and Trainer on the folder, exact resume, continuing from a folder, and bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_inputs import assert_user_error, run_in_process, snapshot

ROOT = Path(__file__).resolve().parents[1]
GPT = "gpt_clm.py"
SMALL = ["--vocab_size", "600", "--max_seq_length", "32", "--per_device_train_batch_size", "8",
         "--per_device_eval_batch_size", "32", "--logging_steps", "5", "--eval_steps", "0", "--save_steps", "0",
         "--eval_fraction", "0.2", "--seed", "3", "--sample_new_tokens", "8"]


def run(*args, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / GPT), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Eight chapters of Persuasion (from the package's embedded corpus), one .txt per chapter."""
    folder = tmp_path_factory.mktemp("corpus")
    text = gzip.open(ROOT / "hfssl/data/austen/persuasion.txt.gz", "rt", encoding="utf-8").read()
    for i, chapter in enumerate(text.split("\nChapter ")[1:9]):
        (folder / f"ch{i:02d}.txt").write_text(chapter.split("\n", 1)[1], encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "gpt"
    proc = run("--corpus", corpus, "--output_dir", out, "--max_steps", 20, *SMALL)
    assert f"saved the pretrained model to {out / 'model'}" in proc.stdout
    assert "no padding" in proc.stdout
    return out


def test_folder_generates_with_the_auto_classes_and_the_pipeline(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, pipeline

    folder = trained / "model"
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert isinstance(model, GPT2LMHeadModel) and not info["missing_keys"] and not info["mismatched_keys"]
    tok = AutoTokenizer.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert tok.model_max_length == config["n_positions"] == 1024  # run_clm.py's block size
    assert config["pad_token_id"] == config["eos_token_id"] == tok.eos_token_id == tok.pad_token_id
    ids = tok("She was", return_tensors="pt")
    with torch.no_grad():
        cached = model.generate(**ids, max_new_tokens=12, do_sample=False, use_cache=True)
        uncached = model.generate(**ids, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached) and cached.shape[1] > ids["input_ids"].shape[1]
    generated = pipeline("text-generation", model=str(folder))("She was", max_new_tokens=6, do_sample=False)
    assert generated[0]["generated_text"].startswith("She was")
    card = (folder / "README.md").read_text()
    assert "## Samples" in card and "It is a truth universally acknowledged" in card
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    final = [x for x in lines if "eval_bits_per_byte" in x][-1]
    assert final["step"] == 20 and 0 < final["eval_bits_per_byte"] < 8 and final["eval_perplexity"] < 600
    train = [x for x in lines if "loss" in x]
    assert train[-1]["loss"] < train[0]["loss"] and "tokens_per_s" in train[-1]


def test_sequence_classifier_loads_with_only_the_head_new_and_reads_the_last_real_token(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = trained / "model"
    model, info = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert set(info["missing_keys"]) == {"score.weight"} and not info["mismatched_keys"]
    tok = AutoTokenizer.from_pretrained(folder)
    texts = ["She was very happy with the letter.", "No."]
    model.eval()
    with torch.no_grad():
        batch = model(**tok(texts, padding=True, return_tensors="pt")).logits  # (2, 3), the second row padded
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])
    assert torch.allclose(batch, alone, atol=1e-5)


def test_run_clm_data_path_and_trainer_train_the_folder_unmodified(trained, tmp_path):
    """What transformers' examples/pytorch/language-modeling/run_clm.py does with --model_name_or_path FOLDER:
    Auto* from the folder, tokenizer(texts), group_texts into block_size = tokenizer.model_max_length chunks
    (capped by max_position_embeddings), default_data_collator, Trainer."""
    from itertools import chain

    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    folder = str(trained / "model")
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config)
    assert len(tokenizer) <= model.get_input_embeddings().weight.shape[0]  # no resize needed
    block_size = tokenizer.model_max_length
    assert block_size <= config.max_position_embeddings  # run_clm.py keeps it (no "very large" fallback)
    block_size = 64  # --block_size 64: a small corpus
    ids = tokenizer(["She was very happy with the letter. " * 40] * 4)["input_ids"]
    flat = list(chain(*ids))
    rows = [{"input_ids": flat[i:i + block_size], "labels": flat[i:i + block_size],
             "attention_mask": [1] * block_size} for i in range(0, len(flat) - block_size + 1, block_size)]
    args = TrainingArguments(output_dir=str(tmp_path / "clm"), max_steps=2, per_device_train_batch_size=2,
                             report_to="none", save_strategy="no", use_cpu=True, logging_steps=1)
    result = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                     data_collator=default_data_collator).train()
    assert result.global_step == 2 and result.training_loss > 0


def test_a_local_copy_of_run_clm_trains_the_folder(trained, corpus, tmp_path):
    """Set HFSSL_RUN_CLM=/path/to/transformers/examples/pytorch/language-modeling/run_clm.py to run the real one."""
    script = os.environ.get("HFSSL_RUN_CLM")
    if not script:
        pytest.skip("HFSSL_RUN_CLM is unset: set it to a local copy of transformers' "
                    "examples/pytorch/language-modeling/run_clm.py to run it on the exported folder")
    train_file = tmp_path / "train.txt"
    train_file.write_text("\n".join(p.read_text() for p in sorted(corpus.glob("*.txt"))[:2]))
    proc = subprocess.run([sys.executable, script, "--model_name_or_path", trained / "model", "--train_file",
                           train_file, "--do_train", "--output_dir", tmp_path / "clm", "--max_steps", "2",
                           "--block_size", "64", "--per_device_train_batch_size", "2", "--report_to", "none",
                           "--use_cpu"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "clm" / "model.safetensors").is_file()


@pytest.mark.slow  # ~35 s (two runs): with the slow tests, as the BERT recipe's resume test
def test_resume_from_a_checkpoint_reaches_the_same_model(corpus, tmp_path):
    """Run 8 steps with checkpoints at 4 and 8 (dropout on: the RNG state must come back too); drop step 8 and
    the model as if killed after step 4; --resume then ends with exactly the weights of the uninterrupted run."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = ["--corpus", corpus, "--output_dir", out, *SMALL, "--max_steps", 8, "--save_steps", 4,
            "--dropout", 0.1, "--sample_prompts", "She"]
    run(*args)
    straight = load_file(out / "model/model.safetensors")
    shutil.rmtree(out / "checkpoints/step-8")
    shutil.rmtree(out / "model")
    proc = run(*args, "--resume")
    assert "resumed from" in proc.stdout and "step-4" in proc.stdout
    resumed = load_file(out / "model/model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_continue_from_a_folder(trained, corpus, tmp_path):
    out = tmp_path / "more"
    proc = run("--corpus", corpus, "--output_dir", out, "--model_name_or_path", trained / "model", *SMALL,
               "--max_steps", 2, "--vocab_size", 300)  # the folder's tokenizer wins over a vocabulary setting
    assert "initialised (not in the folder): none" in proc.stdout
    assert json.loads((out / "model/config.json").read_text())["vocab_size"] == 600
    # one flag, no --config: gpt_continue.yaml's defaults replace the from-scratch ones, each replaced one named
    line = next(x for x in proc.stdout.splitlines() if x.startswith("--model_name_or_path without --config"))
    assert "gpt_continue.yaml instead of gpt_tiny.yaml" in line and "learning_rate 0.001 -> 0.0001" in line
    assert "dropout 0.0 -> the folder's" in line and "vocab_size" not in line  # vocab_size was a flag here


@pytest.mark.slow  # ~15 s; the fast suite trains the Llama variant in tests/test_gpt.py
def test_llama_variant_end_to_end(corpus, tmp_path):
    llama = tmp_path / "llama"
    run("--corpus", corpus, "--output_dir", llama, "--architecture", "llama", *SMALL, "--max_steps", 2)
    config = json.loads((llama / "model/config.json").read_text())
    assert config["model_type"] == "llama" and config["pad_token_id"] == config["eos_token_id"]


def small_folder(path: Path, positions: int) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=positions, vocab_size=300)).save_pretrained(path)
    return path


@pytest.mark.parametrize("case", ["preset with a folder", "seq beyond the folder's positions",
                                  "seq beyond n_positions", "tokenizer without eos", "prompt beyond the context",
                                  "corpus shorter than a row"])
def test_bad_inputs_are_one_line_errors(case, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--corpus", corpus, "--output_dir", out, "--max_steps", 1, *SMALL]
    if case == "preset with a folder":
        args, culprits = [*common, "--model_name_or_path", small_folder(tmp_path / "f", 64), "--preset", "mini"], \
            ["--preset mini", "--model_name_or_path"]
    elif case == "seq beyond the folder's positions":
        args, culprits = [*common, "--model_name_or_path", small_folder(tmp_path / "f", 16)], \
            ["--max_seq_length 32", "16 positions", "--model_name_or_path"]
    elif case == "seq beyond n_positions":
        args, culprits = [*common, "--n_positions", 24], ["--max_seq_length 32", "24 positions", "--n_positions"]
    elif case == "tokenizer without eos":
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        backend = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
        args, culprits = [*common, "--tokenizer_name_or_path", tmp_path / "tok"], ["eos", "--tokenizer_name_or_path"]
    elif case == "prompt beyond the context":
        args, culprits = [*common, "--n_positions", 40, "--sample_prompts", "word " * 60], \
            ["--sample_prompts", "40 positions"]
    else:
        tiny = tmp_path / "tiny"
        tiny.mkdir()
        (tiny / "a.txt").write_text("A short text. " * 3)
        args, culprits = [*common, "--corpus", tiny, "--eval_fraction", 0], ["--max_seq_length 32", "--corpus"]
    before = snapshot(tmp_path)
    proc = run_in_process(GPT, args, capsys)
    assert_user_error(proc, *culprits)
    if case.startswith(("preset", "seq")):
        assert "corpus:" not in proc.stdout and snapshot(tmp_path) == before  # before any data work


@pytest.mark.slow  # two real processes (torchrun, gloo)
def test_two_processes_train_and_evaluate_as_one(corpus, tmp_path):
    """With the learning rate at 0 the model stays at its initialisation, so the held-out metrics of two processes
    (each evaluating half the rows, gathered exactly) equal those of one."""
    def torchrun(n: int, out: Path) -> dict:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
               str(29600 + n + os.getpid() % 1000), str(ROOT / "recipes" / GPT), "--corpus", str(corpus),
               "--output_dir", str(out), *SMALL, "--max_steps", "3", "--learning_rate", "0", "--sample_prompts", "She"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert all(f"[process {i}/{n}] finished 3 optimizer steps" in proc.stdout for i in range(n))
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval_loss" in x][-1]

    one = torchrun(1, tmp_path / "one")
    two = torchrun(2, tmp_path / "two")
    for key in ("eval_loss", "eval_bits_per_byte", "eval_predicted"):
        assert one[key] == pytest.approx(two[key], rel=1e-9), key
