"""Held-out evaluation of an image-text model: retrieval over ALL held-out pairs and zero-shot accuracy.

Retrieval: every held-out image ranks every held-out caption (and the reverse) by cosine similarity; the rank of
the true partner (1 = first; 1 + the number of candidates scored strictly higher) gives recall@k (the fraction
ranked within the first k) and the median rank. Zero-shot (CLIP's prompt ensembling): each class is the mean of
the normalised text embeddings of its name in every template, normalised again; an image is assigned the class
of highest cosine similarity.

Ranking needs every embedding at once, which ``fit``'s per-example sums cannot give: :class:`CLIPEvaluator`
encodes the held-out set in ``before_evaluate`` (every process encodes all of it, so each holds the same
numbers with any process count) and ``eval_summary`` reports them beside the mean cosine of the true pairs;
:class:`RetrievalPictures` draws what fixed held-out captions retrieve, from the same embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hfssl.multimodal.pictures import retrieval_grid
from hfssl.vision.pictures import save_picture

RECALL_AT = (1, 5, 10)


def true_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """``(Q, Q)`` similarities of query i with candidate j (the partner of i is j = i) -> ``(Q,)`` ranks from 1."""
    true = similarity.diagonal().unsqueeze(1)  # (Q, 1)
    return 1 + (similarity > true).sum(dim=1)


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor, ks=RECALL_AT) -> dict[str, float]:
    """Image->text and text->image recall@k and median rank of ``(Q, D)`` paired embeddings (row i of each)."""
    sim = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T  # (Q, Q)
    out = {}
    for name, ranks in (("i2t", true_ranks(sim)), ("t2i", true_ranks(sim.T))):
        for k in ks:
            out[f"{name}_recall@{k}"] = float((ranks <= k).float().mean())
        out[f"{name}_median_rank"] = float(ranks.float().median())
    return out


def top_k_images(image_embeds: torch.Tensor, query_embeds: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, D)`` candidate images, ``(Q, D)`` text queries -> ``(Q, k)`` indices of each query's k most similar
    images by cosine, best first (equal scores: the lower index first)."""
    sim = F.normalize(query_embeds.float(), dim=-1) @ F.normalize(image_embeds.float(), dim=-1).T  # (Q, N)
    return torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]


def query_rows(captions: list[str], count: int) -> list[int]:
    """``count`` fixed query rows spread over the held-out set, one per distinct caption (first occurrence)."""
    firsts: dict[str, int] = {}
    for i, caption in enumerate(captions):
        firsts.setdefault(caption, i)
    first = list(firsts.values())
    picks = np.linspace(0, len(first) - 1, num=min(count, len(first))).round().astype(int)
    return [first[i] for i in dict.fromkeys(picks.tolist())]


class RetrievalPictures:
    """At each evaluation (main process): ``out_dir/retrievals/step-N.png``, fixed held-out captions (rows) with
    the top-k held-out images they retrieve (columns), the true partners outlined; logged to the trackers."""

    def __init__(self, accelerator, pixels: list[bytes], captions: list[str], out_dir: str | Path,
                 queries: int = 6, k: int = 6):
        self.accelerator, self.captions, self.k = accelerator, captions, min(k, len(captions))
        side = int(round((len(pixels[0]) // 3) ** 0.5))
        self.pixels = np.frombuffer(b"".join(pixels), np.uint8).reshape(len(pixels), 3, side, side)
        self.rows = query_rows(captions, queries)
        self.folder = Path(out_dir) / "retrievals"

    def __call__(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, step: int) -> Path | None:
        """``(N, D)`` embeddings of every held-out pair (row i of each is a pair)."""
        if not self.accelerator.is_main_process:
            return None
        top = top_k_images(image_embeds, text_embeds[self.rows], self.k).numpy()  # (Q, k)
        queries = [self.captions[r] for r in self.rows]
        correct = np.array([[self.captions[j] == q for j in picks] for q, picks in zip(queries, top)])
        grid = retrieval_grid(self.pixels, queries, top, correct)
        return save_picture(self.accelerator, grid, self.folder, step, "retrievals")


def zero_shot_classifier(text_embeds: torch.Tensor) -> torch.Tensor:
    """``(C, T, D)`` embeddings of C class names in T templates -> ``(C, D)`` normalised class embeddings."""
    return F.normalize(F.normalize(text_embeds.float(), dim=-1).mean(dim=1), dim=-1)


def zero_shot_accuracy(image_embeds: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``(N, D)`` images whose most similar ``(C, D)`` class is their label ``(N,)``."""
    predicted = (F.normalize(image_embeds.float(), dim=-1) @ classes.T).argmax(dim=1)
    return float((predicted == labels.to(predicted.device)).float().mean())


class CLIPEvaluator:
    """``fit`` hooks: ``before_evaluate`` encodes the held-out pairs, ``eval_step`` the per-pair cosine,
    ``eval_summary`` both. ``data`` holds ``pixel_values``, ``input_ids`` (+ ``label``); ``collate`` is the
    training collator; ``label_names`` + ``templates`` give zero-shot accuracy when the rows have labels."""

    def __init__(self, data, collate, tokenizer, batch_size: int, *, label_names=None, templates=(),
                 retrieval: bool = True, max_length: int = 32, pictures: RetrievalPictures | None = None):
        self.data, self.collate, self.tokenizer, self.batch_size = data, collate, tokenizer, batch_size
        self.pictures = pictures
        self.label_names = label_names if label_names and "label" in data.column_names else None
        self.templates, self.retrieval, self.max_length = list(templates), retrieval, max_length
        self.latest: dict[str, float] = {}

    @torch.no_grad()
    def embed(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and caption embeddings ``(Q, D)`` of every held-out pair, in order."""
        device = next(model.parameters()).device
        images, texts = [], []
        for start in range(0, len(self.data), self.batch_size):
            batch = self.collate(list(self.data.select(range(start, min(start + self.batch_size, len(self.data))))))
            batch = {k: v.to(device) for k, v in batch.items()}
            images.append(model.encode_images(batch["pixel_values"]).float().cpu())
            texts.append(model.encode_texts(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float().cpu())
        return torch.cat(images), torch.cat(texts)

    @torch.no_grad()
    def class_embeddings(self, model) -> torch.Tensor:
        """``(C, D)``: the label names in every template, through the text tower, averaged per class."""
        device = next(model.parameters()).device
        prompts = [t.format(name) for name in self.label_names for t in self.templates]
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        texts = model.encode_texts(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).float().cpu()
        return zero_shot_classifier(texts.view(len(self.label_names), len(self.templates), -1))

    def before_evaluate(self, model, step: int) -> None:
        was_training = model.training
        model.eval()
        images, texts = self.embed(model)
        self.latest = retrieval_metrics(images, texts) if self.retrieval else {}
        if self.pictures is not None:
            self.pictures(images, texts, step)
        if self.label_names is not None:
            labels = torch.tensor(self.data["label"])
            self.latest["zero_shot_accuracy"] = zero_shot_accuracy(images, self.class_embeddings(model), labels)
        model.train(was_training)

    @staticmethod
    def eval_step(model, batch, generator=None) -> dict[str, torch.Tensor]:
        images = F.normalize(model.encode_images(batch["pixel_values"]).float(), dim=-1)
        texts = F.normalize(model.encode_texts(batch["input_ids"], batch["attention_mask"],
                                               batch["token_type_ids"]).float(), dim=-1)
        return {"pairs": torch.ones(len(images), device=images.device), "positive_cosine": (images * texts).sum(-1)}

    def eval_summary(self, totals: dict[str, float]) -> dict[str, float]:
        return {"pairs": totals["pairs"], "positive_cosine": totals["positive_cosine"] / totals["pairs"], **self.latest}
