"""Frechet distance and k-NN precision / recall against brute-force references (scipy's sqrtm, loops)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from hfssl.vision.frechet import (
    ReferenceNet,
    frechet_between,
    frechet_distance,
    gaussian_stats,
    knn_radii,
    precision_recall,
    sample_quality,
)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _random_cov(d, g):
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_matches_scipy_sqrtm():
    g = torch.Generator().manual_seed(0)
    for d in (2, 5, 12):
        mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
        s1, s2 = _random_cov(d, g), _random_cov(d, g)
        ours = frechet_distance(mu1, s1, mu2, s2)
        ref = _scipy_frechet(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
        assert ours == pytest.approx(ref, rel=1e-7, abs=1e-9)


def test_identical_sets_give_zero_and_shift_gives_closed_form():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    assert frechet_between(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], dtype=torch.float64)
    # equal covariances: the trace terms cancel and only ||mu1 - mu2||^2 remains
    assert frechet_between(x, x + shift) == pytest.approx(float((shift**2).sum()), rel=1e-8)
    # and for two 1-d Gaussians the closed form is (m1 - m2)^2 + (s1 - s2)^2
    mu, s = gaussian_stats(torch.randn(5000, 1, generator=g, dtype=torch.float64))
    assert frechet_distance(mu, s, mu + 2, s * 4) == pytest.approx(4 + float(s) * (2 - 1) ** 2, rel=1e-8)


def _brute_radii(x, k):
    out = []
    for i in range(len(x)):
        dists = sorted(float(np.linalg.norm(x[i] - x[j])) for j in range(len(x)) if j != i)
        out.append(dists[k - 1])
    return np.array(out)


def _brute_coverage(manifold, radii, queries):
    inside = 0
    for q in queries:
        inside += any(np.linalg.norm(q - m) <= r for m, r in zip(manifold, radii))
    return inside / len(queries)


def test_precision_recall_match_brute_force_knn():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(40, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(30, 3, generator=g, dtype=torch.float64) * 0.6 + 0.8  # partly overlapping
    for k in (1, 3, 5):
        assert np.allclose(knn_radii(real, k).numpy(), _brute_radii(real.numpy(), k))
        precision, recall = precision_recall(real, fake, k)
        r, f = real.numpy(), fake.numpy()
        assert precision == pytest.approx(_brute_coverage(r, _brute_radii(r, k), f))
        assert recall == pytest.approx(_brute_coverage(f, _brute_radii(f, k), r))
        if k == 1:  # small balls: the sets only partly cover each other (the test can tell 1.0 from a bug)
            assert 0 < precision < 1 and 0 < recall < 1
    assert precision_recall(real, real, 3) == (1.0, 1.0)
    with pytest.raises(ValueError, match="k=40"):
        knn_radii(real, 40)


def test_reference_net_is_fixed_and_separates_distributions():
    a, b = ReferenceNet(), ReferenceNet()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)  # the same weights whatever the global RNG
    g = torch.Generator().manual_seed(3)
    real = torch.rand(64, 3, 16, 16, generator=g) * 2 - 1
    same = torch.rand(64, 3, 16, 16, generator=g) * 2 - 1
    dark = torch.rand(64, 3, 16, 16, generator=g) - 1  # in [-1, 0]
    near, far = sample_quality(real, same), sample_quality(real, dark)
    assert near["frechet_random_features"] < far["frechet_random_features"]
    collapsed = real[:1].repeat(64, 1, 1, 1) + 0.01 * torch.randn(64, 3, 16, 16, generator=g)  # mode collapse
    assert sample_quality(real, collapsed)["recall"] < 0.2 < near["recall"]
