"""Sample quality of a generative model: Frechet distance and k-NN precision / recall in a fixed feature space.

Feature space: :class:`ReferenceNet`, a small conv net at a FIXED RANDOM initialisation (seed 0, never trained,
nothing downloaded), so every hfssl run and machine measures in the same space. Random conv features separate
image statistics surprisingly well (Naeem et al. 2020, https://arxiv.org/abs/2002.09797, use random embeddings
for exactly this), but the numbers are NOT comparable to published FID (Inception-v3 pool features of 299 px
images, Heusel et al. 2017) nor across another reference network: compare runs of hfssl with each other only.

- Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
  ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``; ``Tr((S1 S2)^(1/2))`` is computed as the sum of the
  square roots of the eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)`` (same eigenvalues as ``S1 S2``).
- Precision / recall (Kynkaanniemi et al. 2019, https://arxiv.org/abs/1904.06991): each set's manifold is the union
  of balls around its points whose radius is the distance to the point's k-th nearest neighbour in its own set;
  precision = the fraction of generated samples inside the real manifold, recall = the fraction of real
  images inside the generated one.
"""

from __future__ import annotations

import torch
from torch import nn


class ReferenceNet(nn.Module):
    """Three stride-2 3x3 convs (ReLU) + global average and max pooling: ``(B, 3, S, S)`` in [-1, 1] ->
    ``(B, 2 * width)``. Built from its own generator (seed 0): identical weights on every machine and run."""

    def __init__(self, width: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        convs = [nn.Conv2d(3, width // 2, 3, stride=2, padding=1), nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
                 nn.Conv2d(width, width, 3, stride=2, padding=1)]
        with torch.no_grad():
            for conv in convs:  # He-normal weights, zero bias: the scale survives three ReLUs
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.convs = nn.ModuleList(convs)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        for conv in self.convs:
            x = torch.relu(conv(x))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1).double()  # (B, 2 * width)


def reference_features(images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Features of :class:`ReferenceNet` for images ``(N, 3, S, S)`` in [-1, 1] (float64, CPU)."""
    net = ReferenceNet().to(images.device)
    return torch.cat([net(images[i: i + batch_size]).cpu() for i in range(0, len(images), batch_size)])


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features, in float64."""
    x = features.double()
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` for Gaussians N(mu1, S1) and N(mu2, S2)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1  # symmetric PSD, the eigenvalues of S1 S2
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root)


def frechet_between(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance between the Gaussians fitted to feature sets ``a`` and ``b`` ``(N, D)``."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour in its own set (itself excluded): ``(N,)``."""
    if not 1 <= k < len(features):
        raise ValueError(f"k={k} needs 1 <= k < the {len(features)} points of the set")
    d = torch.cdist(features.double(), features.double())  # (N, N), 0 on the diagonal
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is its own nearest neighbour


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor) -> float:
    """The fraction of ``queries`` within ``radii[j]`` of some manifold point ``j``."""
    d = torch.cdist(queries.double(), manifold.double())  # (Q, M)
    return float((d <= radii[None, :]).any(dim=1).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkaanniemi et al.'s improved precision and recall of ``fake`` against ``real`` features (k = 3 as in the
    paper): precision = share of fake samples inside the real manifold, recall = share of real ones inside the fake."""
    precision = _coverage(real, knn_radii(real, k), fake)
    recall = _coverage(fake, knn_radii(fake, k), real)
    return precision, recall


def sample_quality(real_images: torch.Tensor, fake_images: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Frechet distance and precision / recall of generated vs real images ``(N, 3, S, S)`` in [-1, 1], in the
    feature space of :class:`ReferenceNet` (not comparable to published FID)."""
    real, fake = reference_features(real_images), reference_features(fake_images)
    precision, recall = precision_recall(real, fake, k)
    return {"frechet_random_features": frechet_between(real, fake), "precision": precision, "recall": recall}
