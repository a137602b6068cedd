"""SimCLR / MoCo / BYOL modules: what each loss is made of (against references built in the test), the
momentum update, MoCo's queue and shuffle BN, targets out of the optimizer, the collapse statistic, and
the kNN / linear-probe evaluation against brute force."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from hfssl.losses import byol_loss, nt_xent
from hfssl.methods.byol import BYOL
from hfssl.methods.contrastive import CollapseGuard, SSLArgs, embedding_std
from hfssl.methods.moco import MoCo
from hfssl.methods.simclr import SimCLR
from hfssl.optim import build_optimizer, build_scheduler
from hfssl.vision.backbones import BackboneArgs, build_backbone
from hfssl.vision.probe import knn_predict, linear_probe

N = 8


def backbone():
    torch.manual_seed(0)
    return build_backbone(BackboneArgs(backbone="resnet", preset="tiny", small_image_upsample=2), 16)


def views(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, 16, 16, generator=g), torch.randn(N, 3, 16, 16, generator=g)


def small(**kw) -> SSLArgs:
    return SSLArgs(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32, queue_size=20, **kw)


def test_simclr_loss_is_nt_xent_of_the_projections_and_trains_the_backbone():
    model = SimCLR(backbone(), small(temperature=0.3))
    v1, v2 = views()
    out = model(v1, v2)
    model.eval()  # BN with running stats is per-sample: project each view alone and compare
    z = model.encoder(torch.cat([v1, v2]))[1]
    torch.testing.assert_close(model(v1, v2).loss, nt_xent(*z.chunk(2), temperature=0.3))
    out.loss.backward()
    assert model.backbone.embedder.embedder.convolution.weight.grad.abs().sum() > 0
    assert 0 < float(out.embed_std) <= 1.5


def test_byol_target_starts_equal_stays_out_of_the_optimizer_and_follows_the_ema():
    model = BYOL(backbone(), small(momentum=0.9, momentum_final=0.9))
    for (name, t), o in zip(model.target.named_parameters(), model.online.parameters()):
        assert torch.equal(t, o) and not t.requires_grad, name
    opt = build_optimizer(model, 0.1, 0.0)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in model.target.parameters())
    assert all(id(p) in in_opt for p in [*model.online.parameters(), *model.predictor.parameters()])
    v1, v2 = views()
    out = model(v1, v2)
    out.loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    before = [t.clone() for t in model.target.parameters()]
    opt.step()
    model.step_end(1, 10)
    for b, t, o in zip(before, model.target.parameters(), model.online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o.detach())


@pytest.mark.parametrize("method", ["byol", "moco_v3"])
def test_pred_lr_scale_multiplies_the_predictor_learning_rate_through_the_schedule(method):
    make = (lambda a: BYOL(backbone(), a)) if method == "byol" else (lambda a: MoCo(backbone(), a))
    extra = {} if method == "byol" else {"moco_version": "v3"}
    plain = build_optimizer(make(small(**extra)), 0.1, 0.01)
    assert len(plain.param_groups) == 2 and all(g["lr"] == 0.1 for g in plain.param_groups)
    model = make(small(pred_lr_scale=10.0, **extra))
    opt = build_optimizer(model, 0.1, 0.01)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())  # every trained parameter, once
    for name, p in model.named_parameters():
        if p.requires_grad:
            expected = 1.0 if name.startswith("predictor.") else 0.1
            assert lr_of[id(p)] == (pytest.approx(expected), 0.01 if p.ndim > 1 else 0.0), name
    sched = build_scheduler(opt, "cosine", warmup=0.1, total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    scaled = [g["lr"] for g in opt.param_groups if g.get("lr_scale")]
    base = [g["lr"] for g in opt.param_groups if not g.get("lr_scale")]
    assert scaled and all(lr == pytest.approx(10 * base[0]) for lr in scaled) and 0 < base[0] < 0.1
    with pytest.raises(ValueError, match="pred_lr_scale"):
        small(pred_lr_scale=0.0)


def test_byol_loss_is_symmetric_regression_on_the_target_projections():
    model = BYOL(backbone(), small()).eval()
    v1, v2 = views()
    p1, p2 = model.predictor(model.online(v1)[1]), model.predictor(model.online(v2)[1])
    t1, t2 = model.target(v1)[1], model.target(v2)[1]
    torch.testing.assert_close(model(v1, v2).loss, byol_loss(p1, t2) + byol_loss(p2, t1))


def test_moco_v2_queue_holds_the_normalised_keys_and_wraps_around():
    model = MoCo(backbone(), small(bn_splits=1, symmetric=False))
    assert "queue" in model.state_dict() and "queue_ptr" in model.state_dict()  # saved in checkpoints
    v1, v2 = views()
    old = model.queue.clone()
    with torch.no_grad():
        keys = F.normalize(model.key(v2)[1], dim=1)  # BN over the whole batch: permutation does not matter
    q = model.query(v1)[1]
    want = F.cross_entropy(torch.cat([(F.normalize(q, dim=1) * keys).sum(1, keepdim=True),
                                      F.normalize(q, dim=1) @ old.T], 1) / 0.2, torch.zeros(N, dtype=torch.long))
    out = model(v1, v2)
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.queue[:N], keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.queue[N:], old[N:])
    assert int(model.queue_ptr) == N
    model(v1, v2), model(v1, v2)  # 3 x 8 = 24 keys into 20 slots (the key encoder has not moved: same keys)
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.queue[8:16], keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.queue[16:20], keys[:4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.queue[:4], keys[4:], atol=1e-5, rtol=1e-5)  # wrapped to the front


def test_moco_runs_under_bf16_autocast_and_keeps_a_float32_queue():
    model = MoCo(backbone(), small())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*views())
    out.loss.backward()
    assert model.queue.dtype == torch.float32 and torch.isfinite(model.queue).all()
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(20), atol=1e-3, rtol=0)


def test_moco_shuffle_bn_encodes_keys_in_permuted_groups():
    model = MoCo(backbone(), small(bn_splits=2))
    _, v2 = views()
    torch.manual_seed(5)
    keys = model._keys(v2)
    torch.manual_seed(5)
    perm = torch.randperm(N)
    with torch.no_grad():
        parts = [model.key(c)[1] for c in v2[perm].chunk(2)]
    want = torch.empty_like(keys)
    want[perm] = torch.cat(parts)
    torch.testing.assert_close(keys, want)
    with torch.no_grad():
        whole = model.key(v2)[1]
    assert not torch.allclose(keys, whole, atol=1e-4)  # groups really have their own BN statistics


def test_moco_v3_has_a_predictor_no_queue_and_a_momentum_schedule():
    model = MoCo(backbone(), small(moco_version="v3", momentum=0.9, momentum_final=1.0))
    assert not hasattr(model, "queue") and model.predictor is not None
    v1, v2 = views()
    out = model(v1, v2)
    out.loss.backward()
    before = [k.clone() for k in model.key.parameters()]
    model.step_end(10, 10)  # momentum 1.0 at the end of the cosine schedule: the key encoder stays
    for b, k in zip(before, model.key.parameters()):
        torch.testing.assert_close(b, k)


def test_embedding_std_and_collapse_guard():
    assert float(embedding_std(torch.ones(64, 32))) == pytest.approx(0.0, abs=1e-6)
    assert float(embedding_std(torch.randn(4096, 32))) == pytest.approx(1.0, abs=0.05)
    model = SimCLR(backbone(), small())
    model.last_embed_std = 0.01
    guard = CollapseGuard(0.1, every=100)
    with pytest.warns(UserWarning, match="collapsing"):
        guard(model, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard(model, 50)  # rate-limited
        model.last_embed_std = 0.8
        guard(model, 500)


def test_knn_predict_equals_a_brute_force_vote():
    g = torch.Generator().manual_seed(0)
    bank, labels, queries = torch.randn(50, 6, generator=g), torch.randint(0, 4, (50,), generator=g), torch.randn(9, 6, generator=g)
    got = knn_predict(bank, labels, queries, 4, k=7, temperature=0.1, chunk=4)
    for q, pred in zip(queries, got):
        sims = [float(F.cosine_similarity(q, b, dim=0)) for b in bank]
        order = sorted(range(50), key=lambda i: -sims[i])[:7]
        votes = [0.0] * 4
        for i in order:
            votes[int(labels[i])] += float(torch.exp(torch.tensor(sims[i] / 0.1)))
        assert int(pred) == max(range(4), key=lambda c: votes[c])


def test_linear_probe_separates_separable_classes_and_picks_l2_on_held_out_data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 10, generator=g) * 3
    y = torch.randint(0, 3, (600,), generator=g)
    x = centres[y] + torch.randn(600, 10, generator=g)
    result = linear_probe(x[:500], y[:500], x[500:], y[500:], 3)
    assert result["linear_probe_accuracy"] > 0.95
    shuffled = linear_probe(x[:500], y[torch.randperm(500, generator=g)], x[500:], y[500:], 3)
    assert shuffled["linear_probe_accuracy"] < 0.6  # labels unrelated to features: chance level


def test_vit_backbone_trains_and_exports_for_image_classification(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hfssl.vision.export import export_backbone

    torch.manual_seed(0)
    vit = build_backbone(BackboneArgs(backbone="vit", preset="test", vit_pooling="mean"), 16)
    model = BYOL(vit, small())
    v1, v2 = views()
    model(v1, v2).loss.backward()
    assert vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    folder = export_backbone(model.backbone, tmp_path / "vit", image_size=16, mean=(0.5,) * 3, std=(0.2,) * 3)
    assert AutoImageProcessor.from_pretrained(folder).size == {"height": 16, "width": 16}  # no upsampling for ViT
    clf, info = AutoModelForImageClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"] and not info["unexpected_keys"]
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(clf.vit.state_dict()[key], value)


def test_losses_run_in_float32_under_bf16_autocast():
    model = SimCLR(backbone(), small(temperature=0.1))
    v1, v2 = views()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(v1, v2)
        z = model.encoder(torch.cat([v1, v2]))[1]  # bf16 projections, as the loss receives them
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, nt_xent(*z.float().chunk(2), temperature=0.1), atol=1e-5, rtol=1e-5)
