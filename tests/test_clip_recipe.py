"""recipes/clip.py end to end on tiny data it makes: a short run whose export AutoModel, AutoProcessor and the
zero-shot pipeline load unchanged, with a retrieval picture at each evaluation; exact resume (slow); bad rows
skipped, counted and named; bad inputs (a source with nothing usable, towers whose processor and model disagree) as
one line naming the culprit."""

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
    assert sorted(p.name for p in (out / "retrievals").iterdir()) == ["step-10.png", "step-20.png"]
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


def test_bad_rows_are_skipped_counted_and_named_and_the_run_goes_on(tmp_path):
    """Issue #32 asks for rows without an image or a caption, unreadable images and empty captions to be
    skipped, counted and named (not to stop the run): the log line names the first ones by file:line, the model
    card gives the count, OUTPUT/skipped_pairs.tsv lists every one."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 0, 0),
               (255, 255, 255)]
    rows = []
    for i, colour in enumerate(colours):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,colour number {i}")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    rows[2:2] = ["gone.png,a missing picture", "1.png,", "cut.png,an unreadable picture"]  # lines 4, 5, 6
    (tmp_path / "captions.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    proc = run_recipe("clip.py", "--data", tmp_path, "--image_size", "8", "--eval_fraction", "0.25",
                      "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--max_steps", "2",
                      "--eval_steps", "2", "--save_steps", "0", "--output_dir", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    file = tmp_path / "captions.csv"
    line = next(x for x in proc.stdout.splitlines() if "rows skipped" in x)
    assert "6 training pairs, 2 held out, 3 rows skipped" in line
    for n, why in ((4, "gone.png does not exist"), (5, "empty caption"), (6, "cut.png cannot be decoded")):
        assert f"{file}:{n} (" in line and why in line
    listed = (out / "skipped_pairs.tsv").read_text().splitlines()[1:]
    assert [x.split("\t")[0] for x in listed] == [f"{file}:{n}" for n in (4, 5, 6)]
    assert "3 rows skipped" in (out / "model" / "README.md").read_text()
    assert (out / "retrievals" / "step-2.png").is_file()


def test_bad_inputs_are_one_line_naming_the_culprit(tmp_path, capsys):
    from transformers import BertConfig, BertModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel

    from hfssl.multimodal.vocab import caption_tokenizer

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "unusable.csv").write_text("image,caption\nnot_there.png,blue\na.png,\n")
    (tmp_path / "other_columns.jsonl").write_text('{"image": "a.png", "text": "red"}\n')
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                       patch_size=4)).save_pretrained(tmp_path / "vit_16px_processor")
    (tmp_path / "vit_16px_processor" / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 16, "width": 16}}))
    tokenizer = caption_tokenizer(["a red circle above a blue square"])
    for name, vocab, positions in (("bert_small_vocab", 10, 64), ("bert_16_positions", len(tokenizer), 16)):
        BertModel(BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=positions)).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    ResNetModel(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)).save_pretrained(tmp_path / "resnet")
    BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert_no_tokenizer")
    out = tmp_path / "run"
    cases = [
        (["--data", tmp_path / "unusable.csv"], ("unusable.csv holds no usable pairs", "unusable.csv:2",
                                                  "not_there.png", "unusable.csv:3 (empty caption)")),
        (["--data", tmp_path / "other_columns.jsonl"], ("other_columns.jsonl", "no column 'caption'", "--caption_column")),
        (["--vision_model_name_or_path", tmp_path / "vit_16px_processor"], ("vit_16px_processor", "preprocessor_config.json",
                                                                            "16 px", "config.json's image_size", "is 8")),
        (["--text_model_name_or_path", tmp_path / "bert_small_vocab"], ("bert_small_vocab", f"{len(tokenizer)} tokens",
                                                                        "vocab_size", "is 10")),
        (["--text_model_name_or_path", tmp_path / "bert_16_positions"], ("--max_text_length 32", "16 positions",
                                                                         "bert_16_positions")),
        (["--max_text_length", "65"], ("--max_text_length 65", "64 positions", "new text tower")),
        (["--vision_model_name_or_path", tmp_path / "resnet"], ("--vision_model_name_or_path", "'resnet'")),
        (["--text_model_name_or_path", tmp_path / "bert_no_tokenizer"], ("--text_model_name_or_path", "no tokenizer")),
    ]
    for args, culprits in cases:
        before = snapshot(out)
        proc = run_in_process("clip.py", [*args, "--output_dir", out, "--overwrite_output_dir", "--max_steps", "1"],
                              capsys)
        assert_user_error(proc, *culprits)
        assert snapshot(out) == before
