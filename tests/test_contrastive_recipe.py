"""recipes/contrastive.py (directly and through its simclr.py / moco.py / byol.py launchers) end to end on tiny labelled images: the kNN monitor in the
progress output, the final probe, a backbone folder the Auto classes load (only the classifier new,
weights equal, processor at the backbone's input size), MoCo's queue in the checkpoint, two processes."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_mae_recipe import NAMES, ROOT, run, stripes
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

SMALL = ["--image_size", "16", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
         "--proj_hidden_dim", "32", "--proj_dim", "16", "--pred_hidden_dim", "32", "--queue_size", "64",
         "--logging_steps", "2", "--eval_steps", "2", "--save_steps", "0", "--max_steps", "4", "--seed", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, y = stripes(96, 0)
    x_test, y_test = stripes(32, 1)
    path = tmp_path_factory.mktemp("images") / "stripes.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, label_names=np.array(NAMES))
    return path


@pytest.mark.parametrize("method, script", [("simclr", ["recipes/simclr.py"]), ("moco", ["recipes/moco.py"]),
                                            ("byol", ["recipes/contrastive.py", "--config", ROOT / "recipes/configs/byol_tiny.yaml"])])
def test_recipe_monitors_knn_and_exports_a_backbone_the_auto_classes_load(method, script, data, tmp_path):
    """The config's method: is what trains (the launchers only choose the default config)."""
    out = tmp_path / method
    log = run(*script, "--data", data, "--output_dir", out, *SMALL)
    assert f"model: {method}" in log
    assert "step 2: eval_knn_accuracy" in log and "step 4: eval_knn_accuracy" in log  # the monitor, every eval
    assert "linear probe" in log
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("embed_std" in m for m in metrics) and any("eval_knn_accuracy" in m for m in metrics)
    folder = out / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "resnet" and config["hfssl_upsample_to"] == 32
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.size == {"height": 32, "width": 32}  # what the backbone saw: 16 px upsampled 2x
    saved = load_file(folder / "model.safetensors")
    classifier, info = AutoModelForImageClassification.from_pretrained(folder, num_labels=2, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.1.bias", "classifier.1.weight"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for key, value in classifier.resnet.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert AutoModel.from_pretrained(folder).config.hidden_sizes == config["hidden_sizes"]
    card = (folder / "README.md").read_text()
    assert method in card.lower() and "test_linear_probe_accuracy" in card
    from PIL import Image

    clf = pipeline("image-classification", model=classifier, image_processor=processor)
    answer = clf(Image.fromarray(stripes(1, 3)[0][0]))
    assert len(answer) == 2 and {a["label"] for a in answer} == {"LABEL_0", "LABEL_1"}


@pytest.mark.slow  # 30-40 s: with the slow tests (the fast suite keeps other exact-resume checks)
def test_moco_queue_is_in_the_checkpoint_and_resume_continues(data, tmp_path):
    out = tmp_path / "moco"
    args = ["--data", data, "--output_dir", out, *SMALL, "--moco_version", "v2", "--save_steps", "2",
            "--linear_probe", "false"]  # v2 keeps a queue (the config's default is v3)
    run("recipes/moco.py", *args)
    state = load_file(out / "checkpoints" / "step-4" / "model.safetensors")
    assert state["queue"].shape == (64, 16) and int(state["queue_ptr"]) == (4 * 16) % 64  # 4 steps of 16 keys
    log = run("recipes/moco.py", *args[:-2], "--max_steps", "6", "--resume", "true", "--linear_probe", "false")
    assert "resumed from" in log and "step-4" in log


def test_two_cpu_processes_train_simclr_with_per_process_batchnorm(data, tmp_path):
    """Two real gloo processes. torch's SyncBatchNorm has no CPU kernel, so on CPU the recipe keeps per-process
    BN statistics and says so (the SyncBN conversion itself is tested in test_heads_ema.py)."""
    out = tmp_path / "ddp"
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29700 + os.getpid() % 1000)]
    log = run("recipes/simclr.py", "--data", data, "--output_dir", out, *SMALL, "--per_device_train_batch_size", "8",
              "--linear_probe", "false", launcher=launcher)
    assert "[process 0/2] finished 4 optimizer steps" in log and "[process 1/2] finished 4 optimizer steps" in log
    assert "batch norm statistics are per process on cpu" in log
    assert (out / "model" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Grey noise with 4 random-ish classes (brightness only loosely tied to the label): accuracies near chance,
    so they differ from backbone to backbone and identify which backbone was evaluated."""
    rng = np.random.default_rng(5)
    y, y_test = rng.integers(0, 4, 96), rng.integers(0, 4, 64)
    x, x_test = (np.clip(rng.normal(100 + 10 * labels[:, None, None], 60, (len(labels), 12, 12)), 0, 255).astype(np.uint8)
                 for labels in (y, y_test))
    path = tmp_path_factory.mktemp("noise") / "noise.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, label_names=np.array(["a", "b", "c", "d"]))
    return path


def test_run_reports_its_own_random_init_baseline(noisy, tmp_path):
    """The recipe evaluates the same architecture at its seeded random init; the figure equals an independent
    evaluation of a backbone built here with the same seed, and it reaches the printed line and the card."""
    from hfssl.vision.backbones import BackboneArgs, build_backbone
    from hfssl.vision.data import ImageDataArgs, load_images
    from hfssl.vision.probe import evaluate_features, extract_features

    out = tmp_path / "simclr"
    log = run("recipes/simclr.py", "--data", noisy, "--output_dir", out, *SMALL)
    line = re.search(r"random init kNN ([\d.]+) % / probe ([\d.]+) % -> pretrained kNN ([\d.]+) % / probe ([\d.]+) %", log)
    assert line, log[-2000:]
    card = (out / "model" / "README.md").read_text()
    in_card = dict(re.findall(r"^\| (test_\w+) \| ([^|]+) \|$", card, re.M))
    for key in ("test_random_init_knn_accuracy", "test_random_init_linear_probe_accuracy", "test_knn_accuracy",
                "test_linear_probe_accuracy"):
        assert key in in_card, card

    torch.manual_seed(1)  # the run's --seed
    backbone = build_backbone(BackboneArgs(backbone="resnet", preset="small", small_image_upsample=2), 16)
    data = load_images(ImageDataArgs(data=str(noisy), image_size=16))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the recipe ran
    try:
        expected = evaluate_features(*extract_features(backbone, data.train, data.mean, data.std),
                                     *extract_features(backbone, data.eval, data.mean, data.std), num_classes=4)
    finally:
        torch.set_num_threads(threads)
    assert in_card["test_random_init_knn_accuracy"].strip() == f"{expected['knn_accuracy']:.4g}"
    assert in_card["test_random_init_linear_probe_accuracy"].strip() == f"{expected['linear_probe_accuracy']:.4g}"
    assert float(line[1]) == pytest.approx(100 * expected["knn_accuracy"], abs=0.051)
    assert float(line[2]) == pytest.approx(100 * expected["linear_probe_accuracy"], abs=0.051)
    assert float(line[3]) == pytest.approx(100 * float(in_card["test_knn_accuracy"]), abs=0.06)


def test_random_init_baseline_can_be_switched_off(noisy, tmp_path):
    log = run("recipes/simclr.py", "--data", noisy, "--output_dir", tmp_path / "run", *SMALL,
              "--random_init_baseline", "false")
    assert "linear probe" in log and "random init kNN" not in log
