"""Continued pretraining of image models (recipes/mae.py and recipes/contrastive.py --model_name_or_path): folders
laid out like the Hub's facebook/vit-mae-base (ViTMAEForPreTraining + a ViTFeatureExtractor-style
preprocessor_config.json) and microsoft/resnet-50 (ResNetForImageClassification + a ConvNext-style processor),
built here at a small size. The folder's weights are loaded (the step-0 loss is the loaded Hugging Face model's
own), only what it lacks is initialised and listed, its processor sets size and normalisation, and a folder of
the wrong type is one error line naming its model_type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]  # not ImageNet's, not the data's: they must come from the folder
SIDE = 32


def run(script: str, *args) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """12 smooth colour images of 40x30 (resized to the folder's 32 by hfssl), unlabelled."""
    rng = np.random.default_rng(0)
    rows, cols = np.indices((30, 40))
    x = np.stack([(127 + 100 * np.sin(rows / (3 + i % 4) + c + i) * np.cos(cols / 5)) for i in range(12)
                  for c in range(3)]).reshape(12, 3, 30, 40).transpose(0, 2, 3, 1)
    path = tmp_path_factory.mktemp("img") / "images.npz"
    np.savez(path, x=np.clip(x + rng.normal(0, 5, x.shape), 0, 255).astype(np.uint8))
    return path


def processor_json(folder: Path, kind: str) -> None:
    """The preprocessor_config.json of the Hub's folders (old feature-extractor style, ``size`` an int)."""
    common = {"do_normalize": True, "do_resize": True, "image_mean": MEAN, "image_std": STD, "size": SIDE}
    extra = ({"feature_extractor_type": "ViTFeatureExtractor", "resample": 2} if kind == "vit" else
             {"feature_extractor_type": "ConvNextFeatureExtractor", "crop_pct": 0.875, "resample": 3})
    (folder / "preprocessor_config.json").write_text(json.dumps({**common, **extra}))


def mae_folder(folder: Path, encoder_only: bool = False) -> Path:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel, set_seed

    from hfssl.methods.mae import init_mae_weights

    set_seed(5)
    config = ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                          decoder_intermediate_size=64, image_size=SIDE, patch_size=8, norm_pix_loss=False)
    model = ViTMAEForPreTraining(config)
    init_mae_weights(model)  # a trained model's tables are not zero
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # and its weights are not an init
    (model.vit if encoder_only else model).save_pretrained(folder)
    if encoder_only:
        assert json.loads((folder / "config.json").read_text())["architectures"] == [ViTMAEModel.__name__]
    processor_json(folder, "vit")
    return folder


def resnet_folder(folder: Path) -> Path:
    from transformers import ResNetConfig, ResNetForImageClassification, set_seed

    set_seed(6)
    config = ResNetConfig(layer_type="basic", hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], embedding_size=8,
                          num_labels=3, downsample_in_first_stage=False)
    ResNetForImageClassification(config).save_pretrained(folder)
    processor_json(folder, "resnet")
    return folder


def test_mae_continues_from_a_vit_mae_folder_at_the_loaded_models_loss(images, tmp_path):
    from transformers import ViTMAEForPreTraining

    from hfssl.train import step_generator
    from hfssl.vision.data import ImageDataArgs, load_images
    from hfssl.vision.loader import PIXELS, pixels_from_bytes

    folder, out = mae_folder(tmp_path / "vit-mae-base-like"), tmp_path / "run"
    log = run("recipes/mae.py", "--config", ROOT / "recipes/configs/mae_continue.yaml", "--model_name_or_path", folder,
              "--data", images, "--output_dir", out, "--eval_fraction", "0", "--augment", "false",
              "--per_device_train_batch_size", "4", "--max_steps", "1", "--base_learning_rate", "0",
              "--learning_rate", "0", "--logging_steps", "1", "--save_steps", "0", "--num_pictures", "0")
    assert "initialised (not in the folder): none" in log
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # the reference: Hugging Face's own model from the folder, on the same batch (order: shuffle(seed); masking noise
    # from the loop's step-0 generator), normalised with the folder's processor statistics
    data = load_images(ImageDataArgs(data=str(images), image_size=SIDE, eval_fraction=0))
    pixels = pixels_from_bytes(data.train.shuffle(seed=42)[:4][PIXELS])
    noise = torch.rand(4, 16, generator=step_generator(42, 0, 0, 0))
    reference = ViTMAEForPreTraining.from_pretrained(folder, mask_ratio=0.75, norm_pix_loss=True)
    normalised = (pixels.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    expected = reference(pixel_values=normalised, noise=noise).loss.item()
    assert first["loss"] == pytest.approx(expected, rel=1e-5)
    # lr 0: the exported ViT is the folder's encoder, tensor for tensor; the processor carries the folder's statistics
    saved, source = load_file(out / "model/model.safetensors"), load_file(folder / "model.safetensors")
    encoder = {k[len("vit."):]: v for k, v in source.items() if k.startswith("vit.")}
    assert set(saved) == set(encoder)
    for key, value in encoder.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    processor = json.loads((out / "model/preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx(MEAN) and processor["size"]["height"] == SIDE


def test_mae_from_an_encoder_only_folder_initialises_and_lists_only_the_decoder(tmp_path):
    from transformers import ViTMAEModel

    from hfssl.methods.mae import MAEArgs, MAEPretrainer, folder_mae_config, sincos_position_embedding
    from hfssl.vision.pretrained import read_model_folder

    folder = read_model_folder(mae_folder(tmp_path / "enc", encoder_only=True), {"vit_mae": "ViTMAE"}, "test")
    model, new = MAEPretrainer.from_folder(folder.path, folder_mae_config(MAEArgs(model_name_or_path="x"), folder, None))
    reference = ViTMAEModel.from_pretrained(folder.path).state_dict()  # Hugging Face's own reading of the folder
    decoder = {f"decoder.{k}" for k in model.model.decoder.state_dict()}
    assert set(new) == decoder  # every decoder tensor new and listed, nothing else
    encoder = model.model.vit.state_dict()
    assert set(encoder) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(encoder[key], value, rtol=0, atol=0)
    # the new decoder has MAE's sin-cos table, not transformers' zeros
    torch.testing.assert_close(model.model.decoder.decoder_pos_embed[0], sincos_position_embedding(4, 32))


def test_contrastive_continues_from_a_resnet_classifier_folder(images, tmp_path):
    folder, out = resnet_folder(tmp_path / "resnet-50-like"), tmp_path / "run"
    log = run("recipes/contrastive.py", "--config", ROOT / "recipes/configs/contrastive_continue.yaml",
              "--model_name_or_path", folder, "--data", images, "--output_dir", out, "--eval_fraction", "0",
              "--per_device_train_batch_size", "4", "--max_steps", "1", "--learning_rate", "0", "--logging_steps", "1",
              "--save_steps", "0", "--proj_hidden_dim", "16", "--proj_dim", "8")
    assert "initialised (not in the folder): encoder.projector;" in log  # SimCLR: only its projection head is new
    assert "left out of the folder: classifier.1.bias, classifier.1.weight" in log
    saved, source = load_file(out / "model/model.safetensors"), load_file(folder / "model.safetensors")
    assert {f"resnet.{k}" for k in saved} == {k for k in source if not k.startswith("classifier.")}
    for key, value in saved.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN statistics move in training
            torch.testing.assert_close(value, source[f"resnet.{key}"], rtol=0, atol=0)
    processor = json.loads((out / "model/preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx(MEAN)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_loaded_backbone_features_are_the_folders_models(kind, tmp_path):
    """The features hfssl trains are the Hugging Face model's own outputs (ResNet pooler, ViT [CLS])."""
    from transformers import ResNetForImageClassification, ViTConfig, ViTModel

    from hfssl.vision.backbones import BACKBONE_FOLDER_TYPES, BackboneArgs, features, load_backbone
    from hfssl.vision.pretrained import read_model_folder

    side = 72 if kind == "resnet" else SIDE  # above 64 px: no small-image upsampling in the way
    if kind == "resnet":
        path = resnet_folder(tmp_path / "r")
    else:
        path = tmp_path / "v"
        ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=SIDE, patch_size=8)).save_pretrained(path)
    folder = read_model_folder(path, BACKBONE_FOLDER_TYPES, "test")
    model, missing, unused = load_backbone(BackboneArgs(backbone=kind, model_name_or_path=str(path)), folder, side)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        if kind == "resnet":
            expected = ResNetForImageClassification.from_pretrained(path).eval().resnet(x).pooler_output.flatten(1)
            assert unused == ["classifier.1.bias", "classifier.1.weight"]
        else:
            expected = ViTModel.from_pretrained(path).eval()(x).last_hidden_state[:, 0]
            assert unused == ["pooler.dense.bias", "pooler.dense.weight"]
        torch.testing.assert_close(features(model.eval(), x), expected)
    assert missing == []


def test_one_flag_continues_mae_and_moco_keeping_the_recipes_method(images, tmp_path):
    """``--model_name_or_path`` without ``--config``: the from-scratch default's preset, image size and schedule
    give way to the continue config's (each replaced default named), a MoCo recipe stays MoCo v3 with its own
    knobs; a preset the user set that contradicts the folder is still an error."""
    import yaml

    small = ["--data", images, "--eval_fraction", "0", "--per_device_train_batch_size", "4", "--max_steps", "1",
             "--save_steps", "0"]
    log = run("recipes/mae.py", "--model_name_or_path", mae_folder(tmp_path / "mae"), "--output_dir", tmp_path / "a",
              "--num_pictures", "0", *small)
    line = next(x for x in log.splitlines() if x.startswith("--model_name_or_path without --config"))
    assert "mae_continue.yaml instead of mae_tiny.yaml" in line and "preset tiny -> the folder's" in line
    assert "image_size 32 -> the folder's" in line and "base_learning_rate 0.002 -> 0.00015" in line
    config = json.loads((tmp_path / "a/model/config.json").read_text())
    assert (config["hidden_size"], config["patch_size"]) == (32, 8)  # the folder's ViT, not the tiny preset

    folder = resnet_folder(tmp_path / "resnet")
    log = run("recipes/moco.py", "--model_name_or_path", folder, "--output_dir", tmp_path / "b", "--proj_hidden_dim",
              "16", "--proj_dim", "8", "--pred_hidden_dim", "16", *small)
    line = next(x for x in log.splitlines() if x.startswith("--model_name_or_path without --config"))
    moco = yaml.safe_load((ROOT / "recipes/configs/moco_tiny.yaml").read_text())
    assert "contrastive_continue.yaml instead of moco_tiny.yaml" in line and "preset small -> the folder's" in line
    assert "method" not in line and "momentum" not in line and "temperature" not in line  # MoCo's own, kept
    assert f"model: moco {moco['moco_version']} on a resnet" in log

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/moco.py"), "--model_name_or_path", str(folder),
                           "--preset", "resnet18", "--output_dir", str(tmp_path / "c"), *map(str, small)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --preset resnet18 "
                                                                                     "conflicts with")
    assert not (tmp_path / "c").exists()
