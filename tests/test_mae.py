"""The MAE method against Hugging Face's ViTMAEForPreTraining, its per-step randomness, and the ViT export:
tensors equal key by key, only the classifier new, hidden states equal to the unmasked MAE encoder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, ViTMAEForPreTraining

from hfssl.methods.mae import (
    MAEArgs,
    MAEBatchTransform,
    MAEPretrainer,
    export_vit,
    mae_config,
    mae_encoder_as_vit,
    mae_eval_step,
    mae_summary,
    sincos_position_embedding,
)
from hfssl.vision.arrays import arrays_to_pixels
from hfssl.vision.pictures import ReconstructionPictures, reconstruction_grid
from hfssl.vision.transforms import AugmentArgs, ImageViews

MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


def small_mae(norm_pix_loss: bool = True, seed: int = 0) -> MAEPretrainer:
    torch.manual_seed(seed)
    args = MAEArgs(preset="tiny", patch_size=4, norm_pix_loss=norm_pix_loss, decoder_hidden_size=32,
                   decoder_num_hidden_layers=1)
    return MAEPretrainer(mae_config(args, image_size=16))  # 16 patches, 4 visible


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_and_gradients_equal_hugging_face(norm_pix_loss):
    ours = small_mae(norm_pix_loss)
    hf = ViTMAEForPreTraining(ours.config)
    hf.load_state_dict(ours.model.state_dict())
    x, noise = torch.randn(6, 3, 16, 16), torch.rand(6, 16)
    loss, ref = ours(x, noise).loss, hf(x, noise=noise).loss
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref.backward()
    for (name, a), b in zip(ours.model.named_parameters(), hf.parameters()):
        if a.requires_grad:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


def test_encoder_sees_only_the_visible_patches():
    model = small_mae().eval()
    x, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    latent, mask, _ = model.forward_encoder(x, noise)
    assert latent.shape == (2, 1 + 4, 128) and mask.sum(-1).tolist() == [12.0, 12.0]
    # scrambling the pixels of every dropped patch changes nothing the encoder computes
    pixel_mask = model.unpatchify(mask[..., None].expand(-1, -1, 48).contiguous()).bool()  # (B, 3, 16, 16)
    scrambled = torch.where(pixel_mask, torch.randn_like(x) * 5, x)
    assert torch.allclose(model.forward_encoder(scrambled, noise)[0], latent, atol=1e-6)
    assert not torch.allclose(model.forward_encoder(x + 0.1 * ~pixel_mask, noise)[0], latent, atol=1e-3)


def test_position_embeddings_are_mae_sincos_and_decoder_knows_where_patches_are():
    """transformers 5 leaves both fixed position tables at zero; ours hold MAE's sin-cos table, checked
    against transformers' own builder (with the h/w rotation of its pretrained checkpoints)."""
    from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

    model = small_mae()
    for table in (model.model.vit.embeddings.position_embeddings, model.model.decoder.decoder_pos_embed):
        dim = table.shape[-1]
        ref = build_2d_sinusoidal_position_embedding(4, 4, dim, cls_token=True)
        ref = torch.cat([ref[:, dim // 2 :], ref[:, : dim // 2]], dim=-1)
        assert torch.allclose(table[0], ref, atol=1e-6) and not table.requires_grad
    assert torch.allclose(sincos_position_embedding(4, 128), model.model.vit.embeddings.position_embeddings[0])
    latent, mask, ids = model.forward_encoder(torch.randn(1, 3, 16, 16), torch.rand(1, 16))
    pred = model.forward_decoder(latent, ids)[0][mask[0].bool()]  # (12, 48) predictions for dropped patches
    assert torch.cdist(pred, pred).triu(1)[torch.ones(12, 12).triu(1).bool()].min() > 1e-3  # all different


def test_batch_transform_draws_everything_from_the_step_generator():
    transform = MAEBatchTransform(ImageViews(MEAN, STD, AugmentArgs()), num_patches=16)
    batch = {"pixel_values": torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)}
    a, b = transform(batch, torch.Generator().manual_seed(7)), transform(batch, torch.Generator().manual_seed(7))
    c = transform(batch, torch.Generator().manual_seed(8))
    assert a["noise"].shape == (5, 16) and a["pixel_values"].dtype == torch.float32
    assert torch.equal(a["noise"], b["noise"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert not torch.equal(a["noise"], c["noise"]) and not torch.equal(a["pixel_values"], c["pixel_values"])


def test_eval_step_sums_give_the_batch_loss():
    model = small_mae().eval()
    pixels = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8)
    noise = torch.rand(7, 16)
    views = ImageViews(MEAN, STD)
    sums = mae_eval_step(views)(model, {"pixel_values": pixels, "noise": noise}, None)
    with torch.no_grad():
        ref = model(views(pixels), noise).loss
    assert sums["loss"].shape == (7,) and sums["masked_patches"].tolist() == [12.0] * 7
    totals = {k: float(v.detach().sum()) for k, v in sums.items()}
    assert mae_summary(totals)["loss"] == pytest.approx(float(ref), rel=1e-6)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_mae(seed=3)
    with torch.no_grad():  # move every tensor off its initial value so that equality means something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    folder = export_vit(model, tmp_path_factory.mktemp("export") / "vit", mean=MEAN, std=STD)
    return model, folder


def classic_vit_key(mae_key: str) -> str:
    """Where a ViTMAEModel tensor (transformers 5 names) lives in a classic ViT checkpoint file."""
    for new, old in (("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
                     ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
                     ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
        mae_key = mae_key.replace(new, old)
    return mae_key.replace("layers.", "encoder.layer.", 1) if mae_key.startswith("layers.") else mae_key


def test_exported_tensors_equal_the_mae_encoder_key_by_key(exported):
    from safetensors.torch import load_file

    model, folder = exported
    saved = load_file(folder / "model.safetensors")
    encoder = model.model.vit.state_dict()
    assert "encoder.layer.0.attention.attention.query.weight" in saved
    assert set(saved) == {classic_vit_key(k) for k in encoder}
    for key, value in encoder.items():
        assert torch.equal(saved[classic_vit_key(key)], value), key
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "vit" and config["image_size"] == 16 and config["patch_size"] == 4


def test_auto_classification_loads_with_only_the_classifier_new(exported):
    _, folder = exported
    model, info = AutoModelForImageClassification.from_pretrained(folder, num_labels=10, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(model).__name__ == "ViTForImageClassification" and model.config.num_labels == 10


def test_hidden_states_equal_the_unmasked_mae_encoder(exported):
    model, folder = exported
    vit = AutoModel.from_pretrained(folder).eval()
    x, noise = torch.randn(3, 3, 16, 16), torch.rand(3, 16)
    model.eval()
    model.config.mask_ratio = 0.0  # keep every patch; the patches come out shuffled by the noise
    try:
        latent, mask, ids_restore = model.forward_encoder(x, noise)
    finally:
        model.config.mask_ratio = 0.75
    assert mask.sum() == 0
    patches = torch.gather(latent[:, 1:], 1, ids_restore[..., None].expand(-1, -1, latent.shape[-1]))  # unshuffle
    with torch.no_grad():
        hidden = vit(pixel_values=x).last_hidden_state
    assert torch.allclose(hidden[:, 0], latent[:, 0], atol=1e-5) and torch.allclose(hidden[:, 1:], patches, atol=1e-5)
    assert torch.allclose(mae_encoder_as_vit(model)(pixel_values=x).last_hidden_state, hidden, atol=1e-6)


def test_image_processor_reproduces_the_training_input(exported):
    _, folder = exported
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.size == {"height": 16, "width": 16} and list(processor.image_mean) == list(MEAN)
    grey = (np.indices((28, 28)).sum(0) * 4).astype(np.uint8)  # a smooth grey ramp, any size, mode L
    ours = ImageViews(MEAN, STD)(torch.from_numpy(arrays_to_pixels(grey[None], 16, "t")))
    theirs = processor(Image.fromarray(grey, "L"), return_tensors="pt")["pixel_values"]
    assert theirs.shape == ours.shape == (1, 3, 16, 16)
    assert (theirs - ours).abs().max() < 3 / 255 / min(STD)  # PIL vs torchvision bilinear: within 3 grey levels


def test_reconstruction_picture_is_written_and_logged(tmp_path):
    model = small_mae()
    pixels = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    noise = torch.rand(3, 16)
    logged = []
    tracker = SimpleNamespace(name="fake", log_images=lambda values, step: logged.append((step, values)))
    accelerator = SimpleNamespace(is_main_process=True, trackers=[tracker])
    path = ReconstructionPictures(accelerator, pixels, noise, ImageViews(MEAN, STD), tmp_path)(model, 40, {})
    assert path == tmp_path / "reconstructions/step-40.png" and model.training
    grid = np.asarray(Image.open(path))
    zoom = 6  # 16-pixel cells enlarged to at least 96
    assert grid.shape == (3 * (96 + 2) + 2, 4 * (96 + 2) + 2, 3) and logged[0][0] == 40
    first = grid[2 : 2 + 96 : zoom, 2 : 2 + 96 : zoom].transpose(2, 0, 1)  # top-left cell, back to 16x16
    assert np.abs(first.astype(int) - pixels[0].numpy().astype(int)).max() <= 1  # the original, denormalised
    predicted, mask = model.reconstruct(ImageViews(MEAN, STD)(pixels), noise)
    direct = reconstruction_grid(ImageViews(MEAN, STD)(pixels), predicted, mask, MEAN, STD)
    assert np.array_equal(direct, grid)
    assert SimpleNamespace(is_main_process=False) and ReconstructionPictures(
        SimpleNamespace(is_main_process=False), pixels, noise, ImageViews(MEAN, STD), tmp_path / "x")(model, 1) is None


def test_recipe_resumes_to_the_same_weights(tmp_path):
    """Run 4 steps with checkpoints at 2 and 4; drop step 4 and the model as if killed after step 2; --resume
    ends with exactly the weights of the uninterrupted run: crops, flips and masks come from the step."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[1]
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).integers(0, 256, (64, 12, 12), dtype=np.uint8))
    out = tmp_path / "run"
    args = [sys.executable, str(root / "recipes/mae.py"), "--data", str(tmp_path / "x.npz"), "--output_dir", str(out),
            "--image_size", "16", "--decoder_hidden_size", "32", "--decoder_num_hidden_layers", "1", "--max_steps", "4",
            "--save_steps", "2", "--eval_steps", "0", "--per_device_train_batch_size", "8", "--num_pictures", "0"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    for extra in ([], ["--resume"]):
        proc = subprocess.run(args + extra, capture_output=True, text=True, cwd=root, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if not extra:
            straight = load_file(out / "model/model.safetensors")
            shutil.rmtree(out / "checkpoints/step-4")
            shutil.rmtree(out / "model")
    assert "resumed from" in proc.stdout and "step-2" in proc.stdout
    resumed = load_file(out / "model/model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
