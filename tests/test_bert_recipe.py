"""recipes/bert_mlm.py end to end on a small slice of the embedded corpus: output folder, Auto classes,
two real processes, and the guard against overwriting a run."""

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

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "tiny", "--config_overrides", "hidden_size=64,num_attention_heads=2,intermediate_size=128",
         "--vocab_size", "1200", "--max_seq_length", "64", "--per_device_train_batch_size", "8",
         "--per_device_eval_batch_size", "16", "--logging_steps", "5", "--eval_steps", "0", "--save_steps", "0",
         "--learning_rate", "2e-3", "--eval_fraction", "0.1", "--seed", "3", "--nsp", "true"]  # BERT's MLM + NSP


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Twenty chapters of Persuasion (from the package's embedded corpus), one .txt per chapter."""
    folder = tmp_path_factory.mktemp("corpus")
    text = gzip.open(ROOT / "hfssl/data/austen/persuasion.txt.gz", "rt", encoding="utf-8").read()
    chapters = text.split("\nChapter ")[1:21]
    for i, chapter in enumerate(chapters):
        (folder / f"ch{i:02d}.txt").write_text(chapter.split("\n", 1)[1], encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "bert"
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/bert_mlm.py"), "--corpus", str(corpus),
                           "--output_dir", str(out), "--max_steps", "12", *SMALL, "--finetune_dropout", "0.1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"saved the pretrained model to {out / 'model'}" in proc.stdout
    # the [CLS] check ran on the held-out rows; its card note appears exactly when it warned
    (line,) = [x for x in proc.stdout.splitlines() if "[CLS] state of" in x]
    assert "held-out rows" in line and str(out / "model") in line
    assert line.startswith("warning:") == ("`[CLS]` state this model exports" in (out / "model/README.md").read_text())
    return out


def test_output_folder_loads_with_auto_classes(trained):
    from safetensors.torch import load_file
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertForPreTraining,
    )

    folder = trained / "model"
    assert (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").exists()
    assert (folder / "README.md").read_text().startswith("---")
    # pretrained without dropout (bert_tiny.yaml), exported with the asked fine-tuning dropout (--finetune_dropout)
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.1
    card = (folder / "README.md").read_text()
    assert "| hidden_dropout_prob | 0 |" in card and "| finetune_dropout | 0.1 |" in card
    assert "pretrained with MLM only" not in card  # trained with NSP (SMALL): [CLS] was trained
    saved = load_file(folder / "model.safetensors")
    expected_new = {AutoModelForMaskedLM: set(), BertForPreTraining: set(),
                    AutoModelForSequenceClassification: {"classifier.weight", "classifier.bias"},
                    AutoModelForQuestionAnswering: {"qa_outputs.weight", "qa_outputs.bias"}}
    for cls, new in expected_new.items():
        kwargs = {"num_labels": 3} if cls is AutoModelForSequenceClassification else {}
        model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
        assert set(info["missing_keys"]) == new, cls
        assert not info["mismatched_keys"]
        # every encoder tensor equals the pretrained one
        state = model.state_dict()
        for key, value in saved.items():
            if key.startswith("bert.encoder.") and key in state:
                assert torch.equal(state[key], value), key
    tok = AutoTokenizer.from_pretrained(folder)
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    enc = tok("she was happy.", "he was not.")
    assert enc["input_ids"][0] == tok.cls_token_id and enc["input_ids"].count(tok.sep_token_id) == 2
    assert set(enc["token_type_ids"]) == {0, 1}
    # the tokenizer fits the model (512 positions), not the pretraining length (64): transformers' run_qa.py
    # preprocessing with its defaults (max_length 384, doc_stride 128) works on the folder as it is
    assert tok.model_max_length == 512 == json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    context = " ".join(["she walked to the village and came back before dinner."] * 80)
    windows = tok(["where did she walk?"], [context], truncation="only_second", max_length=384, stride=128,
                  return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    assert len(windows["input_ids"]) > 1 and all(len(w) == 384 for w in windows["input_ids"])


def test_fill_mask_pipeline_and_metrics(trained):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(trained / "model"))
    answers = fill("she was very [MASK].")
    assert len(answers) == 5 and all(0.0 <= a["score"] <= 1.0 and "token_str" in a for a in answers)
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_mlm_accuracy" in x]
    assert evals and evals[-1]["step"] == 12 and 0 < evals[-1]["eval_examples"]
    train = [x for x in lines if "loss" in x]
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"]  # it moved off the initial ~ln(1200) = 7.1


def test_run_report_picture_in_the_output_and_the_model_card(trained):
    from PIL import Image

    from hfssl.report import load_series

    drawn = load_series(trained / "metrics.jsonl")  # what the picture plots: every logged series
    assert {"loss", "lr", "tokens_per_s", "eval_mlm_accuracy"} <= set(drawn)
    for picture in (trained / "report.png", trained / "model" / "report.png"):
        with Image.open(picture) as image:
            assert image.format == "PNG" and image.size[0] >= 800
    assert (trained / "report.png").read_bytes() == (trained / "model" / "report.png").read_bytes()
    assert "![training report](report.png)" in (trained / "model" / "README.md").read_text()


def test_refuses_to_overwrite_a_run(trained, corpus):
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/bert_mlm.py"), "--corpus", str(corpus),
                           "--output_dir", str(trained), "--max_steps", "2", *SMALL],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "--resume" in proc.stderr and "--overwrite_output_dir" in proc.stderr


def torchrun(n: int, corpus: Path, out: Path, *extra: str) -> str:
    """The recipe under torchrun with ``n`` CPU processes (gloo); returns stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
           str(29500 + n + os.getpid() % 1000), str(ROOT / "recipes/bert_mlm.py"), "--corpus", str(corpus),
           "--output_dir", str(out), *SMALL, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow  # two real processes: with the end-to-end runs
def test_two_processes_shard_the_data(corpus, tmp_path):
    """Two real processes: each runs half the optimizer steps of one process over one epoch."""
    epoch = ["--max_steps", "-1", "--num_epochs", "1", "--per_device_train_batch_size", "16"]
    one = torchrun(1, corpus, tmp_path / "one", *epoch)
    # same tokenizer, hence the same instances (WordPiece training is not bit-reproducible between runs)
    two = torchrun(2, corpus, tmp_path / "two", *epoch, "--tokenizer_name_or_path", str(tmp_path / "one/tokenizer"))
    steps_one = int(one.split("[process 0/1] finished ")[1].split()[0])
    steps_two = {int(two.split(f"[process {i}/2] finished ")[1].split()[0]) for i in range(2)}
    assert len(steps_two) == 1, "both processes must take the same number of optimizer steps"
    # each process gets every other batch; the training loader drops incomplete batches (drop_last), so
    # with an odd batch count the last one is left out rather than repeated
    assert steps_two.pop() == steps_one // 2
    last = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in last if "loss" in x)
    assert last[-1]["eval_mlm_loss"] < 7.2  # below the uniform-guess loss ln(1200) = 7.09 + margin


@pytest.mark.slow  # two real processes over three epochs
def test_epochs_drawn_ahead_train_exactly_as_epochs_drawn_at_their_start(corpus, tmp_path):
    """Two processes, three epochs: drawing the next epoch in the background (the default; the others read the
    first process's cache) ends with the same weights as drawing each epoch when it starts; no epoch is left on
    disk but epoch 0 and the last (each run with a cache of its own)."""
    from safetensors.torch import load_file

    epochs = ["--max_steps", "-1", "--num_epochs", "3", "--per_device_train_batch_size", "16", "--save_steps", "0"]
    weights = {}
    for ahead in ("true", "false"):
        reuse = ["--tokenizer_name_or_path", str(tmp_path / "true/tokenizer")] if ahead == "false" else []
        out = torchrun(2, corpus, tmp_path / ahead, *epochs, "--draw_ahead", ahead,
                       "--cache_dir", str(tmp_path / f"cache_{ahead}"), *reuse)
        assert "[process 1/2] finished" in out
        weights[ahead] = load_file(tmp_path / ahead / "model/model.safetensors")
        drawn = {p.name.split("_")[0].removesuffix(".arrow")
                 for p in (tmp_path / f"cache_{ahead}").rglob("nsp-instances-*.arrow")}
        assert len(drawn) == 3, drawn  # training split: epochs 0 and 2 (1 deleted, no 3 drawn); held-out: 0
    for key in weights["true"]:
        assert torch.equal(weights["true"][key], weights["false"][key]), key


@pytest.mark.slow  # two real processes: with the end-to-end runs
def test_evaluation_is_exact_across_process_counts(corpus, tmp_path):
    """Same weights (learning rate 0), 1 vs 2 processes: identical held-out metrics and example count,
    because the evaluation set is masked before sharding and gather_for_metrics drops padding repeats."""
    metrics = []
    for n in (1, 2):
        # the second run reuses the first run's tokenizer: WordPiece training is not bit-reproducible
        reuse = ["--tokenizer_name_or_path", str(tmp_path / "p1/tokenizer")] if n == 2 else []
        torchrun(n, corpus, tmp_path / f"p{n}", "--max_steps", "2", "--learning_rate", "0",
                 "--per_device_eval_batch_size", "7", *reuse)
        lines = [json.loads(x) for x in (tmp_path / f"p{n}/metrics.jsonl").read_text().splitlines()]
        metrics.append(next(x for x in lines if "eval_mlm_loss" in x))
    for key in ("eval_examples", "eval_mlm_loss", "eval_mlm_accuracy", "eval_nsp_loss", "eval_nsp_accuracy"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-6, abs=1e-9), key


@pytest.mark.slow  # 30-40 s: with the slow tests (the fast suite keeps other exact-resume checks)
def test_resume_from_a_checkpoint_reaches_the_same_model(corpus, tmp_path):
    """Run 6 steps with checkpoints at 3 and 6; drop step 6 and the model as if killed after step 3;
    --resume then ends with exactly the weights of the uninterrupted run (tied embeddings included)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = ["--corpus", str(corpus), "--output_dir", str(out), *SMALL, "--max_steps", "6", "--save_steps", "3",
            "--hidden_dropout_prob", "0.1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/bert_mlm.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    straight = load_file(out / "model/model.safetensors")

    shutil.rmtree(out / "checkpoints/step-6")
    shutil.rmtree(out / "model")
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/bert_mlm.py"), *args, "--resume"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stdout and "step-3" in proc.stdout
    resumed = load_file(out / "model/model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # a resume with another model size or sequence length is refused before any data work, naming both
    from bad_inputs import assert_user_error, snapshot

    before = snapshot(out)
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/bert_mlm.py"), *args, "--resume", "--preset", "mini",
                           "--max_seq_length", "48"], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert_user_error(proc, "step-6", "preset 'tiny' -> 'mini'", "max_seq_length 64 -> 48")
    assert "corpus:" not in proc.stdout and snapshot(out) == before  # refused before the corpus was read
