"""Bad flags, config files and folders of the pretraining recipes (bert_mlm, mae, contrastive), one table row
each: exit code 2, ONE ``error:`` line naming the culprit, no traceback, nothing created or changed.

Rows run the recipe's ``main`` under :func:`hfssl.errors.run_cli` in this process (the call the script's
``__main__`` block makes); one row per recipe runs the real script. All rows fail before any data work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import ROOT, assert_user_error, run_in_process, run_recipe, snapshot

BERT, MAE, SSL = "bert_mlm.py", "mae.py", "contrastive.py"


def yaml(tmp: Path, text: str) -> Path:
    path = tmp / "my.yaml"
    path.write_text(text)
    return path


# (recipe, args given (tmp folder) -> list, culprits the one line must name)
ROWS = {
    "batch size 0": (BERT, lambda t: ["--per_device_train_batch_size", 0], ["--per_device_train_batch_size", "0"]),
    "batch size -3": (SSL, lambda t: ["--per_device_train_batch_size", -3], ["--per_device_train_batch_size"]),
    "batch size [4] in YAML": (BERT, lambda t: ["--config", yaml(t, "per_device_train_batch_size: [4]\n")],
                               ["my.yaml", "per_device_train_batch_size", "[4]"]),
    "max_steps 3.5 in YAML": (MAE, lambda t: ["--config", yaml(t, "max_steps: 3.5\n")], ["my.yaml", "max_steps"]),
    "unknown YAML key": (SSL, lambda t: ["--config", yaml(t, "temprature: 0.1\n")], ["my.yaml", "temprature"]),
    "unknown flag": (BERT, lambda t: ["--lerning_rate", "1e-3"], ["--lerning_rate"]),
    "flag of the wrong type": (MAE, lambda t: ["--max_steps", "ten"], ["--max_steps", "ten"]),
    "eval_fraction 1.5": (BERT, lambda t: ["--eval_fraction", 1.5], ["--eval_fraction", "1.5"]),
    "max_seq_length above the positions": (BERT, lambda t: ["--max_seq_length", 600],
                                           ["--max_seq_length 600", "512 positions", "--max_position_embeddings"]),
    "save_total_limit 0": (BERT, lambda t: ["--save_total_limit", 0], ["--save_total_limit"]),
    "mlm_probability 1.5": (BERT, lambda t: ["--mlm_probability", 1.5], ["mlm_probability"]),
    "unknown BERT preset": (BERT, lambda t: ["--preset", "huge"], ["huge"]),
    "resume and overwrite": (BERT, lambda t: ["--resume", "--overwrite_output_dir"], ["--resume", "--overwrite_output_dir"]),
    "resume without a checkpoint": (SSL, lambda t: ["--resume"], ["--resume", "no complete checkpoint"]),
    "mask ratio 1.5": (MAE, lambda t: ["--mask_ratio", 1.5], ["mask_ratio"]),
    "patch size 0": (MAE, lambda t: ["--patch_size", 0], ["--patch_size"]),
    "image size 2": (MAE, lambda t: ["--image_size", 2], ["--image_size 2"]),
    "unknown contrastive method": (SSL, lambda t: ["--method", "dino"], ["dino"]),
    "ResNet preset for a ViT": (SSL, lambda t: ["--backbone", "vit", "--preset", "resnet50"], ["resnet50"]),
    "SimCLR batch of one": (SSL, lambda t: ["--per_device_train_batch_size", 1], ["--per_device_train_batch_size 1",
                                                                                   "at least 2"]),
    "knn_k 0": (SSL, lambda t: ["--knn_k", 0], ["--knn_k"]),
    "negative learning rate": (MAE, lambda t: ["--learning_rate", -1], ["--learning_rate"]),
    "fp8 precision": (SSL, lambda t: ["--mixed_precision", "fp8"], ["--mixed_precision", "fp8"]),
    "unknown storage": (MAE, lambda t: ["--storage", "png"], ["--storage", "png", "encoded"]),
    "max_side 2": (SSL, lambda t: ["--max_side", 2], ["--max_side 2"]),
    "MAE from a BERT folder": (MAE, lambda t: ["--model_name_or_path", model_folder(t, model_type="bert")],
                               ["--model_name_or_path", "model_type 'bert'", "ViTMAEForPreTraining"]),
    "SimCLR from an MAE folder": (SSL, lambda t: ["--model_name_or_path", model_folder(t, model_type="vit_mae")],
                                  ["model_type 'vit_mae'", "ResNetModel"]),
    "model folder without config.json": (SSL, lambda t: ["--model_name_or_path", t], ["--model_name_or_path",
                                                                                      "no config.json"]),
    "preset other than the folder's": (SSL, lambda t: ["--model_name_or_path", model_folder(t, **RESNET50), "--preset",
                                                       "small"], ["--preset small", "--preset resnet50"]),
    "MAE patch size other than the folder's": (MAE, lambda t: ["--model_name_or_path", model_folder(
        t, model_type="vit_mae", patch_size=16), "--patch_size", "4", "--config", ROOT / "recipes/configs/mae_continue.yaml"],
        ["--patch_size 4", "16", "leave patch_size unset"]),
}
RESNET50 = dict(model_type="resnet", layer_type="bottleneck", hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                embedding_size=64)


def model_folder(tmp: Path, **config) -> Path:
    """A model folder with only its config.json: every check of these rows happens before any weight is read."""
    folder = tmp / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_flag_or_config_is_one_line_and_touches_nothing(row, tmp_path, capsys):
    script, args, culprits = ROWS[row]
    keep = tmp_path / "earlier"  # an unrelated earlier output next to the new one
    keep.mkdir()
    (keep / "model.safetensors").write_bytes(b"weights")
    given = args(tmp_path)  # may write the row's config file
    before = snapshot(tmp_path)
    out = tmp_path / "run"
    proc = run_in_process(script, ["--output_dir", out, *given], capsys)
    assert_user_error(proc, *culprits)
    assert not out.exists(), "a refused run must not create its output folder"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("script", [BERT, MAE, SSL])
def test_non_empty_output_folder_is_refused_and_untouched(script, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"an earlier model")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert_user_error(run_in_process(script, ["--output_dir", out], capsys), "--output_dir", "--resume",
                      "--overwrite_output_dir")
    assert snapshot(out) == before


def test_missing_data_paths_name_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert_user_error(run_in_process(BERT, ["--output_dir", tmp_path / "b", "--corpus", missing], capsys), str(missing))
    assert_user_error(run_in_process(MAE, ["--output_dir", tmp_path / "m", "--data", missing], capsys), str(missing))


@pytest.mark.parametrize("script, args, culprits", [
    (BERT, ["--max_seq_length", "600"], ["--max_seq_length 600"]),
    (MAE, ["--patch_size", "0"], ["--patch_size"]),
    ("simclr.py", ["--per_device_train_batch_size", "1"], ["--per_device_train_batch_size 1"]),
])
def test_the_scripts_themselves_keep_the_contract(script, args, culprits, tmp_path):
    """The real entry points (python recipes/X.py), not only their main()."""
    assert_user_error(run_recipe(script, "--output_dir", tmp_path / "run", *args), *culprits)
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    proc = run_recipe(MAE, "--output_dir", tmp_path / "run", "--patch_size", "0", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "--patch_size" in proc.stderr


def test_npz_images_of_one_pixel_size_fail_with_the_patch_size_named(tmp_path, capsys):
    """A data-dependent shape error (image size not a multiple of the patch size) still names the flags."""
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((8, 12, 12), np.uint8))
    proc = run_in_process(MAE, ["--output_dir", tmp_path / "run", "--data", path, "--image_size", "18",
                                "--patch_size", "4", "--eval_fraction", "0.25"], capsys)
    assert_user_error(proc, "image_size 18", "patch_size 4")
