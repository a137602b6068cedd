"""The VAE (hfssl.methods.vae): loss pieces against torch.distributions, the KL warm-up, the AutoencoderKL export,
bad image sizes, and (slow) the recipe end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from torch.distributions import Bernoulli, Laplace, Normal, kl_divergence

from hfssl.hub import save_model_folder
from hfssl.methods.vae import (
    PIXEL_SPEC,
    PixelSpec,
    VAEArgs,
    VAEPretrainer,
    kl_diag_gaussian,
    kl_weight,
    reconstruction_nll,
)
from tests.bad_inputs import assert_user_error, run_in_process

TINY = VAEArgs(block_out_channels="8,8", norm_num_groups=4, latent_channels=2)


def test_kl_of_diagonal_gaussian_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    ref = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(kl_diag_gaussian(mean, logvar), ref, atol=1e-5)
    assert torch.equal(kl_diag_gaussian(torch.zeros(1, 3), torch.zeros(1, 3)), torch.zeros(1))  # q = prior


def test_reconstruction_likelihoods_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 3, 5, 5, generator=g) * 2 - 1  # in [-1, 1]
    out = torch.randn(2, 3, 5, 5, generator=g)
    t, mu = (pixels + 1) / 2, (out + 1) / 2
    for kind, dist in (("mse", Normal(mu, 0.1)), ("l1", Laplace(mu, 0.1))):
        ref = -dist.log_prob(t).flatten(1).sum(1)
        assert torch.allclose(reconstruction_nll(out, pixels, kind, 0.1), ref, rtol=1e-5), kind
    binary = (pixels > 0).float() * 2 - 1  # Bernoulli's support: intensities 0 / 1
    ref = -Bernoulli(logits=out).log_prob((binary + 1) / 2).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(out, binary, "bce", 0.1), ref, rtol=1e-5)
    # grey levels: the cross-entropy written out, t log p + (1 - t) log(1 - p)
    p = torch.sigmoid(out)
    ref = -(t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(out, pixels, "bce", 0.1), ref, rtol=1e-4)


def test_kl_warmup_schedule_values():
    assert [kl_weight(s, 100, 2.0, 0.25) for s in (0, 10, 25, 60)] == [0.0, 0.8, 2.0, 2.0]  # fraction of the run
    assert [kl_weight(s, 100, 1.0, 40) for s in (0, 10, 40, 99)] == [0.0, 0.25, 1.0, 1.0]  # a step count
    assert kl_weight(0, 100, 0.5, 0) == 0.5  # no warm-up
    model = VAEPretrainer(VAEArgs(**{**vars(TINY), "kl_warmup": 10, "beta": 3.0}), 8)
    assert float(model.kl_weight) == 0.0
    model.step_end(5, 100)
    assert float(model.kl_weight) == 1.5 and "kl_weight" in model.state_dict()  # a buffer: checkpoints keep it


def test_forward_loss_is_the_hand_computed_objective():
    torch.manual_seed(0)
    model = VAEPretrainer(VAEArgs(**{**vars(TINY), "recon_loss": "mse", "decoder_scale": 0.2}), 8)
    model.kl_weight.fill_(0.3)
    g = torch.Generator().manual_seed(2)
    x, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 2, 4, 4, generator=g)
    out = model(x, noise)
    post = model.vae.encode(x).latent_dist
    recon = model.vae.decode(post.mean + post.std * noise).sample
    nll = -Normal((recon + 1) / 2, 0.2).log_prob((x + 1) / 2).flatten(1).sum(1)
    kl = kl_divergence(Normal(post.mean, post.std), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert float(out.loss.detach()) == pytest.approx(float((nll + 0.3 * kl).mean().detach() / (3 * 8 * 8)), rel=1e-5)


def test_export_loads_with_autoencoderkl_and_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    model = VAEPretrainer(TINY, 8).eval()
    folder = save_model_folder(model.vae, tmp_path / "model", processor=PixelSpec("bce", 8, model.latent_shape))
    loaded = AutoencoderKL.from_pretrained(folder).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        a, b = model.vae.encode(x).latent_dist, loaded.encode(x).latent_dist
        assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)
        assert torch.equal(model.vae.decode(a.mean).sample, loaded.decode(b.mean).sample)
    spec = json.loads((folder / PIXEL_SPEC).read_text())
    assert spec["latent_shape"] == [2, 4, 4] and spec["recon_loss"] == "bce"
    assert (folder / "diffusion_pytorch_model.safetensors").is_file() and not list(folder.glob("*.bin"))


def test_card_of_a_diffusers_folder_names_its_library():
    from hfssl.card import ModelCardInfo, render_model_card

    info = dict(model_name="m", method="vae", base_model_type="autoencoder_kl", tags=["vae"],
                datasets_description="d", hyperparameters={}, metrics={})
    text = render_model_card(ModelCardInfo(**info, library_name="diffusers"))
    assert "library_name: diffusers" in text and "variational autoencoding" in text and "Auto*" not in text
    assert "library_name: transformers" in render_model_card(ModelCardInfo(**info))  # the default is unchanged


def test_image_size_the_vae_cannot_halve_is_one_line(capsys, tmp_path):
    proc = run_in_process("vae.py", ["--image_size", "30", "--output_dir", tmp_path / "out"], capsys)
    assert_user_error(proc, "--image_size 30", "multiple of 4")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_vae_recipe_end_to_end(tmp_path, run_script):
    rng = np.random.default_rng(0)
    x = (rng.random((80, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "img.npz", x=x, x_test=x[:16])
    out = tmp_path / "run"
    run_script("recipes/vae.py", "--data", tmp_path / "img.npz", "--image_size", "16", "--output_dir", out,
               "--block_out_channels", "32,32", "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2",
               "--per_device_train_batch_size", "16", "--quality_samples", "16", env={"OMP_NUM_THREADS": "1"})
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_bits_per_dim" in line]
    assert [e["step"] for e in evals] == [2, 4]
    last = evals[-1]
    assert last["eval_neg_elbo_nats"] == pytest.approx(last["eval_nll_nats"] + last["eval_kl_nats"])
    assert last["eval_bits_per_dim"] == pytest.approx(last["eval_neg_elbo_nats"] / (3 * 16 * 16 * math.log(2)))
    assert (out / "pictures/step-2.png").is_file() and (out / "pictures/step-4.png").is_file()
    AutoencoderKL.from_pretrained(out / "model")


@pytest.mark.slow
def test_vae_resumes_to_identical_weights(tmp_path, run_script):
    """4 steps with checkpoints every 2 and the KL warm-up running; a copy cut back to step 2 resumes bit-identical."""
    import shutil

    from safetensors.torch import load_file

    x = (np.random.default_rng(1).random((48, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "img.npz", x=x, x_test=x[:8])
    args = ["--data", tmp_path / "img.npz", "--image_size", "16", "--block_out_channels", "32,32", "--max_steps", "4",
            "--kl_warmup", "3", "--save_steps", "2", "--eval_steps", "2", "--per_device_train_batch_size", "8",
            "--quality_samples", "0", "--num_pictures", "2", "--augment", "true"]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run_script("recipes/vae.py", *args, "--output_dir", straight, env={"OMP_NUM_THREADS": "1"})
    shutil.copytree(straight, cut)
    shutil.rmtree(cut / "checkpoints/step-4")
    run_script("recipes/vae.py", *args, "--output_dir", cut, "--resume", env={"OMP_NUM_THREADS": "1"})
    a, b = (load_file(p / "checkpoints/step-4/model.safetensors") for p in (straight, cut))
    assert a.keys() == b.keys() and float(a["kl_weight"]) == 1.0  # warm-up over 3 steps: done at step 4
    for k in a:
        assert torch.equal(a[k], b[k]), k
