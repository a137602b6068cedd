"""The GAN (hfssl.methods.gan): losses against their formulas, R1 against a per-example autograd loop, the EMA, the
one-optimizer D/G design (each part's gradient reaches only its own parameters), the generator's folder in a fresh
process, the discriminator's trunk as a ResNet folder, the collapse warning, bad image sizes, and (slow) the recipe's
exact resume."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForImageClassification

from hfssl.checkpoint import latest_checkpoint
from hfssl.hub import save_model_folder
from hfssl.methods.gan import (
    CollapseWatch,
    GANArgs,
    GANPretrainer,
    discriminator_loss,
    ema_momentum,
    folded_trunk,
    generator_loss,
    r1_penalty,
)
from hfssl.optim import build_optimizer
from hfssl.vision.backbones import features
from hfssl.vision.export import export_backbone
from tests.bad_inputs import ROOT, assert_user_error, run_in_process

SMALL = GANArgs(latent_dim=8, generator_width=8, num_upsamples=2, discriminator_upsample=1)


def _model(seed=0, **kw) -> GANPretrainer:
    torch.manual_seed(seed)
    return GANPretrainer(GANArgs(**{**vars(SMALL), **kw}), 16, learning_rate=1e-3)


def _batch(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1, torch.randn(n, 8, generator=g)


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -0.5, 0.3]), torch.tensor([-1.5, 0.7, 0.0])
    sig = torch.sigmoid
    ns_d = -(sig(real).log().mean() + (1 - sig(fake)).log().mean())
    assert discriminator_loss(real, fake, "non_saturating").item() == pytest.approx(ns_d.item(), rel=1e-6)
    assert generator_loss(fake, "non_saturating").item() == pytest.approx(-sig(fake).log().mean().item(), rel=1e-6)
    hinge_d = sum(max(0.0, 1 - r) for r in real.tolist()) / 3 + sum(max(0.0, 1 + f) for f in fake.tolist()) / 3
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(hinge_d, rel=1e-6)
    assert generator_loss(fake, "hinge").item() == pytest.approx(-sum(fake.tolist()) / 3, rel=1e-6)


def test_r1_matches_a_per_example_autograd_loop():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.Flatten(), nn.LazyLinear(1))
    x = torch.randn(5, 3, 6, 6, requires_grad=True)
    scores = d(x).squeeze(-1)
    brute = []
    for i in range(5):  # each example's own score, differentiated alone
        xi = x[i: i + 1].detach().requires_grad_(True)
        (gi,) = torch.autograd.grad(d(xi).sum(), xi)
        brute.append(gi.pow(2).sum())
    penalty = r1_penalty(scores, x)
    assert penalty.item() == pytest.approx(torch.stack(brute).mean().item(), rel=1e-5)
    penalty.backward()  # create_graph: the penalty trains D
    assert d[0].weight.grad is not None and d[0].weight.grad.abs().sum() > 0


def test_ema_update_follows_the_formula():
    assert [ema_momentum(s, 0.999) for s in (0, 10, 10_000)] == [0.1, 11 / 20, 0.999]
    model = _model()
    before = {k: v.clone() for k, v in model.generator_ema.state_dict().items()}
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
        model.generator.project_norm.running_mean.add_(3.0)
    model.step_end(10)
    m = 11 / 20
    online = model.generator.state_dict()
    for k, v in model.generator_ema.named_parameters():
        assert torch.allclose(v, m * before[k] + (1 - m) * online[k], atol=1e-6), k
    assert torch.equal(model.generator_ema.project_norm.running_mean, online["project_norm.running_mean"])


@pytest.mark.parametrize("kw", [dict(), dict(r1_gamma=2.0, gan_loss="hinge", spectral_norm=False)])
def test_each_part_of_the_loss_reaches_only_its_own_parameters(kw):
    """One backward of forward().loss gives D the gradient of (d_loss + r1) alone and G that of g_loss alone, where
    the reference computes them the usual alternating way: D on G(z).detach(), then G through D."""
    model = _model(**kw)
    reference = copy.deepcopy(model)  # same weights, BN statistics and spectral-norm vectors
    x, z = _batch()
    model(x, z).loss.backward()
    # reference D step
    real = x.clone().requires_grad_(model.args.r1_gamma > 0)
    fake = reference.generator(z)
    real_scores, fake_scores = reference.discriminator(real), reference.discriminator(fake.detach())
    d_loss = discriminator_loss(real_scores, fake_scores, model.args.gan_loss)
    if model.args.r1_gamma:
        d_loss = d_loss + 0.5 * model.args.r1_gamma * r1_penalty(real_scores, real)
    d_params = list(reference.discriminator.parameters())
    d_grads = torch.autograd.grad(d_loss, d_params)
    # reference G step against the same D (its third forward, as in the model)
    g_params = list(reference.generator.parameters())
    g_grads = torch.autograd.grad(generator_loss(reference.discriminator(fake), model.args.gan_loss), g_params)
    for p, ref in zip(model.discriminator.parameters(), d_grads):
        assert torch.allclose(p.grad, ref, atol=1e-6, rtol=1e-5)
    for p, ref in zip(model.generator.parameters(), g_grads):
        assert torch.allclose(p.grad, ref, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.generator_ema.parameters())


def test_one_optimizer_step_updates_d_and_g_at_their_own_learning_rates():
    model = _model(discriminator_learning_rate=4e-3)  # G's lr 1e-3: D x 4 (TTUR)
    opt = build_optimizer(model, 1e-3, 0.0)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {lrs[id(p)] for p in model.discriminator.parameters()} == {4e-3}
    assert {lrs[id(p)] for p in model.generator.parameters()} == {1e-3}
    assert not any(id(p) in lrs for p in model.generator_ema.parameters())  # never optimized, only averaged
    ema = {k: v.clone() for k, v in model.generator_ema.state_dict().items()}
    before = {k: v.clone() for k, v in model.named_parameters()}
    model(*_batch()).loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        moved = (p - before[name]).abs().max().item()
        if name.startswith("generator_ema"):
            assert moved == 0, name
        elif p.grad is not None and p.grad.abs().max() > 0:  # Adam's first step moves each weight by ~lr
            expected = 4e-3 if name.startswith("discriminator") else 1e-3
            assert moved == pytest.approx(expected, rel=0.01), name
    assert all(torch.equal(v, model.generator_ema.state_dict()[k]) for k, v in ema.items())


def test_generator_loads_in_a_fresh_process_and_reproduces_samples(tmp_path):
    model = _model()
    model.generator_ema.load_state_dict({k: v + 0.01 for k, v in model.generator.state_dict().items()
                                         if v.is_floating_point()}, strict=False)
    folder = save_model_folder(model.generator_ema, tmp_path / "generator")
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    save_file({"z": z}, tmp_path / "z.safetensors")
    code = ("import sys, torch; from safetensors.torch import load_file, save_file; "
            "from hfssl.methods.gan import Generator; g = Generator.from_pretrained(sys.argv[1]).eval(); "
            "save_file({'x': g(load_file(sys.argv[2])['z']).detach()}, sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "z.safetensors"), str(tmp_path / "x.safetensors")],
                   check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                              "PATH": "/usr/bin:/bin"}, timeout=300)
    assert torch.equal(load_file(tmp_path / "x.safetensors")["x"], model.sample(z))
    assert json.loads((folder / "config.json").read_text())["latent_dim"] == 8
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.py"))


def test_discriminator_trunk_loads_as_a_resnet_with_only_the_head_new(tmp_path):
    model = _model()
    with torch.no_grad():  # a few training-mode passes: spectral-norm vectors and BN statistics move
        for seed in range(3):
            model.discriminator(_batch(seed)[0])
    folder = export_backbone(folded_trunk(model), tmp_path / "model", image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    loaded, info = AutoModelForImageClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    model.eval()
    loaded.eval()
    x = _batch(7)[0]
    with torch.no_grad():
        ours, theirs = features(model.discriminator.trunk, x), features(loaded.resnet, x)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_collapse_watch_warns_once_per_pinned_stretch():
    lines = []
    watch = CollapseWatch(5, log=lines.append)
    for step, acc in enumerate([1.0] * 4 + [0.9] + [1.0] * 7 + [0.5] + [0.0] * 5, start=1):
        watch(acc, step)
    assert len(lines) == 2  # the first run of 4 is too short; the 7 warn once; the 5 zeros warn once
    assert lines[0].startswith("warning: discriminator accuracy pinned at 1 for the last 5 steps (to step 10)")
    assert "pinned at 0 " in lines[1] and "collapsed" in lines[1]


def test_image_size_the_generator_cannot_make_is_one_line(capsys, tmp_path):
    proc = run_in_process("gan.py", ["--image_size", "28", "--output_dir", tmp_path / "out"], capsys)
    assert_user_error(proc, "--image_size 28", "multiple of 8")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gan_resumes_to_identical_weights(tmp_path, run_script):
    """4 steps with checkpoints every 2; a copy of the run cut back to step 2 and resumed ends bit-identical."""
    rng = np.random.default_rng(0)
    x = (rng.random((48, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "img.npz", x=x, x_test=x[:16])
    args = ["--data", tmp_path / "img.npz", "--image_size", "16", "--num_upsamples", "2", "--generator_width", "8",
            "--latent_dim", "8", "--discriminator_upsample", "1", "--r1_gamma", "1", "--max_steps", "4",
            "--save_steps", "2", "--eval_steps", "2", "--per_device_train_batch_size", "8", "--quality_samples", "8",
            "--num_pictures", "4"]
    straight = tmp_path / "straight"
    run_script("recipes/gan.py", *args, "--output_dir", straight, env={"OMP_NUM_THREADS": "1"})
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    shutil.rmtree(cut / "checkpoints/step-4")
    assert latest_checkpoint(cut).name == "step-2"
    run_script("recipes/gan.py", *args, "--output_dir", cut, "--resume", env={"OMP_NUM_THREADS": "1"})
    a, b = (load_file(p / "checkpoints/step-4/model.safetensors") for p in (straight, cut))
    assert a.keys() == b.keys() and any("generator_ema" in k for k in a) and any("_u" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for folder in ("generator", "model"):
        fa, fb = (load_file(p / folder / "model.safetensors") for p in (straight, cut))
        assert all(torch.equal(fa[k], fb[k]) for k in fa)
    evals = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines() if "eval_frechet" in line]
    assert [e["step"] for e in evals] == [2, 4] and all(math.isfinite(e["eval_frechet_random_features"]) for e in evals)
    assert (cut / "samples/step-4.png").is_file()
