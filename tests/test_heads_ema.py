"""Projection / prediction heads, SyncBN conversion, EMA target update and momentum schedule."""

import math

import pytest
import torch
from torch import nn

from hfssl.ema import MomentumSchedule, ema_update, make_target
from hfssl.heads import PredictionHead, ProjectionHead, convert_sync_batchnorm
from hfssl.optim import build_optimizer


def kinds(model):
    return [type(m).__name__ for m in model.modules() if not isinstance(m, (nn.Sequential, ProjectionHead))]


def test_projection_head_styles_shapes_and_layers():
    x = torch.randn(6, 10)
    simclr = ProjectionHead(10, 16, 8)
    assert simclr(x).shape == (6, 8)
    assert kinds(simclr) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert simclr.layers[0].bias is None and simclr.layers[3].bias is not None  # BN replaces the bias
    moco_v2 = ProjectionHead(10, 16, 8, batch_norm=False)
    assert kinds(moco_v2) == ["Linear", "ReLU", "Linear"]
    v3 = ProjectionHead(10, 16, 8, num_layers=3, last_bn=True)
    assert kinds(v3) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert v3.layers[-1].weight is None and v3.layers[1].weight is not None  # last BN not affine
    out = v3(x)
    assert out.shape == (6, 8)
    # a training-mode BN output has per-feature mean 0 and (biased) variance 1 over the batch
    torch.testing.assert_close(out.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    pred = PredictionHead(8, 32)
    assert pred(out).shape == (6, 8) and kinds(pred) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    with pytest.raises(ValueError):
        ProjectionHead(10, 16, 8, num_layers=0)


class FakeAccelerator:
    def __init__(self, n):
        self.num_processes = n


def test_convert_sync_batchnorm_only_for_several_processes():
    head = ProjectionHead(4, 8, 4, num_layers=3, last_bn=True)
    assert convert_sync_batchnorm(head, 1) is head
    assert convert_sync_batchnorm(head, FakeAccelerator(1)) is head
    assert "SyncBatchNorm" not in kinds(head)
    for arg in (2, FakeAccelerator(4)):
        converted = convert_sync_batchnorm(ProjectionHead(4, 8, 4, num_layers=3, last_bn=True), arg)
        assert kinds(converted).count("SyncBatchNorm") == 3 and "BatchNorm1d" not in kinds(converted)
    with pytest.raises(ValueError):
        convert_sync_batchnorm(head, 0)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))


def test_make_target_is_a_frozen_copy_left_out_of_the_optimizer():
    online = small_net()
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for (n1, a), (n2, b) in zip(online.state_dict().items(), target.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    both = nn.ModuleDict({"online": online, "target": target})
    opt = build_optimizer(both, lr=1e-3, weight_decay=0.1)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in online.parameters()}
    assert not in_opt & {id(p) for p in target.parameters()}


@pytest.mark.parametrize("m", [0.0, 0.9, 0.996, 1.0])
def test_ema_update_formula_per_parameter_and_buffers_copied(m):
    online, target = small_net(), make_target(small_net())
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    online(torch.randn(8, 3))  # moves online's BN running stats and num_batches_tracked
    before_t = {k: v.clone() for k, v in target.named_parameters()}
    ema_update(target, online, m)
    for name, o in online.named_parameters():
        t = dict(target.named_parameters())[name]
        flat_t, flat_before, flat_o = t.flatten().tolist(), before_t[name].flatten().tolist(), o.flatten().tolist()
        for new, old, on in zip(flat_t, flat_before, flat_o):
            assert new == pytest.approx(m * old + (1 - m) * on, rel=1e-6, abs=1e-7)
    for name, b in online.named_buffers():
        assert torch.equal(dict(target.named_buffers())[name], b)
    assert int(target[1].num_batches_tracked) == 1


def test_ema_update_refuses_wrapped_models():
    online = small_net()
    wrapped = nn.ModuleDict({"module": online})  # names like DDP's "module.*"
    with pytest.raises(ValueError, match="UNWRAPPED"):
        ema_update(make_target(online), wrapped, 0.99)
    with pytest.raises(ValueError):
        ema_update(make_target(online), online, 1.5)


def test_momentum_schedule_endpoints_and_midpoint():
    s = MomentumSchedule(total_steps=100, base=0.99, final=1.0)
    assert s(0) == pytest.approx(0.99)
    assert s(100) == pytest.approx(1.0)
    assert s(50) == pytest.approx(1.0 - 0.01 * (math.cos(math.pi / 2) + 1) / 2)
    assert s(1000) == pytest.approx(1.0)
    assert all(s(i) <= s(i + 1) for i in range(100))
