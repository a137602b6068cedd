"""Frozen-feature evaluation of an image encoder: weighted kNN and a linear probe.

kNN (Wu et al. 2018, https://arxiv.org/abs/1805.01978, the monitor of InstDisc / MoCo / DINO): cosine
similarity to every bank feature, the ``k`` nearest vote for their class with weight ``exp(sim / T)``.
Linear probe: standardised features, multinomial logistic regression fitted with full-batch L-BFGS; the L2
strength is chosen on a held-out tenth of the training features, then the probe is refitted on all.
Features always come from the backbone (:func:`hfssl.vision.backbones.features`), never a projector.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hfssl.vision.backbones import features
from hfssl.vision.data import ImageData, subset
from hfssl.vision.loader import PIXELS, as_pixels, pixels_from_bytes
from hfssl.vision.transforms import normalize

PROBE_L2 = (0.0, 1e-4, 1e-3, 1e-2)


@dataclass
class MonitorArgs:
    """Frozen-feature evaluation (needs labels; pretraining itself never uses them)."""

    knn_k: int = field(default=20, metadata={"help": "Neighbours of the kNN monitor."})
    knn_bank_size: int = field(default=10_000, metadata={"help": "Labelled training images in the kNN bank."})
    linear_probe: bool = field(default=True, metadata={"help": "Fit a linear probe on frozen features at the end."})
    probe_max_images: int = field(default=60_000, metadata={"help": "Training images used by the final probe."})
    random_init_baseline: bool = field(default=True, metadata={
        "help": "With the final probe, also evaluate the same backbone at its random initialisation (same seed and "
                "architecture), so the run shows what pretraining bought."})

    def __post_init__(self):
        for name in ("knn_k", "knn_bank_size", "probe_max_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")


@torch.no_grad()
def extract_features(backbone, ds: datasets.Dataset, mean, std, batch_size: int = 256, device=None,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(N, F)`` float features of every image of ``ds`` (``pixel_values``: :func:`hfssl.vision.data.as_pixels`)
    and its ``(N,)`` labels."""
    device = device or next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for start in tqdm(range(0, len(ds), batch_size), desc="features", disable=not progress, leave=False):
        rows = ds[start:start + batch_size]  # one fetch: encoded storage decodes each image once, here
        pixels = pixels_from_bytes(rows[PIXELS]).to(device)  # (B, 3, S, S) uint8
        feats.append(features(backbone, normalize(pixels, mean, std)).float().cpu())
        labels += rows.get("label", [])
    backbone.train(was_training)
    return torch.cat(feats), torch.as_tensor(labels) if "label" in ds.column_names else None


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted cosine kNN: ``(Q,)`` predicted classes of ``queries`` ``(Q, F)`` from ``bank`` ``(N, F)``."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, len(bank))
    out = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (C, k)
        votes = torch.zeros(len(q), num_classes, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, bank_labels.to(idx.device)[idx], (sim / temperature).exp())
        out.append(votes.argmax(1))
    return torch.cat(out)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight), torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return linear


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, l2_grid=PROBE_L2, max_iter: int = 300, seed: int = 0) -> dict[str, float]:
    """Test accuracy of a logistic-regression probe; ``l2`` picked on a held-out tenth of the train set."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    tx, vx = (train_x - mu) / sd, (test_x - mu) / sd
    perm = torch.randperm(len(tx), generator=torch.Generator().manual_seed(seed))
    cut = max(1, len(tx) // 10)
    held, fit = perm[:cut], perm[cut:]
    scores = {}
    for l2 in l2_grid:
        probe = _fit_logistic(tx[fit], train_y[fit], num_classes, l2, max_iter)
        with torch.no_grad():
            scores[l2] = float((probe(tx[held]).argmax(1) == train_y[held]).float().mean())
    best = max(scores, key=scores.get)
    probe = _fit_logistic(tx, train_y, num_classes, best, max_iter)
    with torch.no_grad():
        acc = float((probe(vx).argmax(1) == test_y).float().mean())
    return {"linear_probe_accuracy": acc, "linear_probe_l2": best}


def evaluate_features(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20) -> dict[str, float]:
    """kNN and linear-probe test accuracy of frozen features."""
    knn = knn_predict(train_x, train_y, test_x, num_classes, k)
    return {"knn_accuracy": float((knn == test_y).float().mean()),
            **linear_probe(train_x, train_y, test_x, test_y, num_classes)}


def frozen_evaluation(backbone, train_ds: datasets.Dataset, test_ds: datasets.Dataset, mean, std, num_classes: int,
                      k: int = 20, progress: bool = False) -> dict[str, float]:
    """:func:`evaluate_features` of ``backbone``'s frozen features: ``train_ds`` is the kNN bank and the probe's
    training set, ``test_ds`` is scored (both labelled)."""
    train_x, train_y = extract_features(backbone, train_ds, mean, std, progress=progress)
    test_x, test_y = extract_features(backbone, test_ds, mean, std, progress=progress)
    return evaluate_features(train_x, train_y, test_x, test_y, num_classes, k)


def held_out_evaluation(backbone, data: ImageData, args: MonitorArgs, starting_state: dict | None = None,
                        start: str = "random_init", log=print) -> dict[str, float]:
    """The end-of-run figures of a labelled run: :func:`frozen_evaluation` of ``backbone`` on ``data.eval`` (bank
    and probe data: up to ``args.probe_max_images`` training images), and, with ``starting_state`` and
    ``args.random_init_baseline``, of the same architecture at that state (``start``: "random_init", or "loaded"
    for a run that continued from a folder): what pretraining bought. Both are logged; returns ``test_*`` metrics."""
    bank, test = as_pixels(subset(data.train, args.probe_max_images, 0), data.image_size), as_pixels(
        data.eval, data.image_size)

    def evaluate(model) -> dict[str, float]:
        return frozen_evaluation(model, bank, test, data.mean, data.std, len(data.label_names), args.knn_k,
                                 progress=True)

    final = evaluate(backbone)
    metrics = {f"test_{k}": v for k, v in final.items()}
    log(f"frozen backbone features on {len(data.eval)} held-out images: kNN (k={args.knn_k}, bank "
        f"{len(bank)}) {final['knn_accuracy']:.2%}, linear probe {final['linear_probe_accuracy']:.2%}")
    if starting_state is not None and args.random_init_baseline:
        first = copy.deepcopy(backbone)
        first.load_state_dict(starting_state)
        base = evaluate(first)
        metrics.update({f"test_{start}_{k}": v for k, v in base.items()})
        pct = lambda d, key: f"{100 * d[key + '_accuracy']:.1f} %"  # noqa: E731
        log(f"{start.replace('_', ' ')} kNN {pct(base, 'knn')} / probe {pct(base, 'linear_probe')} -> "
            f"pretrained kNN {pct(final, 'knn')} / probe {pct(final, 'linear_probe')}")
    return metrics


class KNNMonitor:
    """The training-time kNN monitor, as ``fit``'s ``eval_step`` + ``before_evaluate`` + ``eval_summary``.

    ``before_evaluate`` encodes the (un-augmented) labelled bank images with the current backbone (every
    process encodes the whole bank, so the result does not depend on the process count); ``eval_step``
    classifies each evaluation image by its ``k`` nearest bank features and returns per-example hits.
    """

    def __init__(self, bank: datasets.Dataset, mean, std, num_classes: int, k: int = 20, temperature: float = 0.07,
                 batch_size: int = 256):
        self.bank_ds, self.mean, self.std, self.num_classes = bank, tuple(mean), tuple(std), num_classes
        self.k, self.temperature, self.batch_size = k, temperature, batch_size
        self.bank = self.bank_labels = None

    def before_evaluate(self, model, step: int) -> None:
        self.bank, self.bank_labels = extract_features(model.backbone, self.bank_ds, self.mean, self.std,
                                                       self.batch_size)

    def eval_step(self, model, batch: dict, generator) -> dict[str, torch.Tensor]:
        h = features(model.backbone, normalize(batch[PIXELS], self.mean, self.std)).float()  # (B, F)
        pred = knn_predict(self.bank.to(h.device), self.bank_labels, h, self.num_classes, self.k, self.temperature)
        return {"knn_correct": (pred == batch["labels"]).float(), "count": torch.ones_like(pred, dtype=torch.float)}

    @staticmethod
    def summary(totals: dict[str, float]) -> dict[str, float]:
        return {"knn_accuracy": totals["knn_correct"] / max(totals["count"], 1.0)}


def as_hooks(monitor: KNNMonitor | None) -> dict[str, Callable | None]:
    """``fit`` keyword arguments for a monitor (or none)."""
    if monitor is None:
        return {}
    return {"eval_step": monitor.eval_step, "eval_summary": monitor.summary, "before_evaluate": monitor.before_evaluate}
