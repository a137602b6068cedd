"""recipes/clip.py end to end on tiny data it makes: a short run whose export AutoModel, AutoProcessor and the
zero-shot pipeline load unchanged, exact resume (slow), and bad inputs as one line naming the culprit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from bad_inputs import assert_user_error, run_in_process, run_recipe, snapshot
from PIL import Image

from hfssl.multimodal.shapes import shape_picture

TINY = ["--shapes_train", "256", "--shapes_eval", "64", "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "32", "--logging_steps", "5", "--seed", "3"]


def test_recipe_trains_evaluates_and_exports_a_zero_shot_pipeline_folder(tmp_path):
    from transformers import AutoModel, AutoProcessor, pipeline

    out = tmp_path / "run"
    proc = run_recipe("clip.py", *TINY, "--output_dir", out, "--max_steps", "20", "--eval_steps", "10",
                      "--save_steps", "0", "--learning_rate", "3e-3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_i2t_recall@1" in x]
    assert [x["step"] for x in evals] == [10, 20]
    for key in ("i2t_recall@5", "t2i_recall@10", "i2t_median_rank", "t2i_median_rank", "zero_shot_accuracy"):
        assert 0 <= evals[-1][f"eval_{key}"] <= 64, key
    assert evals[-1]["eval_pairs"] == 64
    train_losses = [x["loss"] for x in lines if "loss" in x]
    assert train_losses[-1] < train_losses[0]  # 20 steps of a tiny model on easy pictures: the loss falls

    folder = out / "model"
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
    model, processor = AutoModel.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "VisionTextDualEncoderModel"
    assert type(processor).__name__ == "VisionTextDualEncoderProcessor"
    classify = pipeline("zero-shot-image-classification", model=str(folder))
    image, labels = shape_picture("circle", "red"), ["circle", "square", "star"]
    result = classify(image, candidate_labels=labels, hypothesis_template="a small {}")
    scores = {r["label"]: r["score"] for r in result}
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    inputs = processor(text=[f"a small {x}" for x in labels], images=[image], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(-1)[0]
    for label, p in zip(labels, expected.tolist()):
        assert scores[label] == pytest.approx(p, abs=1e-5)


def test_resume_from_a_checkpoint_reaches_the_same_model(tmp_path):
    """6 steps with checkpoints at 3 and 6; drop step 6 and the model as if killed after step 3; --resume ends
    with exactly the weights of the uninterrupted run (the text tower's dropout included)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = [*TINY, "--output_dir", out, "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0"]
    proc = run_recipe("clip.py", *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    straight = load_file(out / "model/model.safetensors")
    shutil.rmtree(out / "checkpoints/step-6")
    shutil.rmtree(out / "model")
    proc = run_recipe("clip.py", *args, "--resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "step-3" in proc.stdout + proc.stderr
    resumed = load_file(out / "model/model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_bad_inputs_are_one_line_naming_the_culprit(tmp_path, capsys):
    from transformers import BertConfig, BertModel, ResNetConfig, ResNetModel

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "missing.csv").write_text("image,caption\na.png,red\nnot_there.png,blue\n")
    (tmp_path / "empty.jsonl").write_text('{"image": "a.png", "caption": "red"}\n{"image": "a.png", "caption": ""}\n')
    ResNetModel(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)).save_pretrained(tmp_path / "resnet")
    BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert_no_tokenizer")
    out = tmp_path / "run"
    cases = [
        (["--data", tmp_path / "missing.csv"], ("missing.csv line 3", "not_there.png")),
        (["--data", tmp_path / "empty.jsonl"], ("empty.jsonl line 2", "caption is empty")),
        (["--vision_model_name_or_path", tmp_path / "resnet"], ("--vision_model_name_or_path", "'resnet'")),
        (["--text_model_name_or_path", tmp_path / "bert_no_tokenizer"], ("--text_model_name_or_path", "no tokenizer")),
    ]
    for args, culprits in cases:
        before = snapshot(out)
        proc = run_in_process("clip.py", [*args, "--output_dir", out, "--overwrite_output_dir", "--max_steps", "1"],
                              capsys)
        assert_user_error(proc, *culprits)
        assert snapshot(out) == before
