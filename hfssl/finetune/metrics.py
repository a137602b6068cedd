"""Offline evaluation metrics as ``evaluate.Metric`` classes: accuracy, F1, SQuAD v1.1 EM/F1.

``evaluate.load("accuracy")`` and friends fetch their scripts from the Hub, which is not reachable
offline; these take the same inputs and return the same keys, computed with numpy only.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import datasets
import evaluate
import numpy as np

_PUNCTUATION = set(string.punctuation)


def _class_metric_info(description: str) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description, citation="", inputs_description="predictions, references: class ids",
        features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}))


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the references (the Hub's ``accuracy``, offline)."""

    def _info(self):
        return _class_metric_info("accuracy = correct / total")

    def _compute(self, predictions, references):
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}


class F1(evaluate.Metric):
    """F1 over classes, ``average`` macro / micro / weighted as in scikit-learn (the Hub's ``f1``, offline).

    Classes are those present in predictions or references; a class never predicted scores 0.
    """

    def _info(self):
        return _class_metric_info("F1 = 2 TP / (2 TP + FP + FN), averaged over classes")

    def _compute(self, predictions, references, average: str = "macro"):
        pred, ref = np.asarray(predictions), np.asarray(references)
        classes = np.union1d(pred, ref)
        tp = np.array([np.sum((pred == c) & (ref == c)) for c in classes])  # (C,)
        fp = np.array([np.sum((pred == c) & (ref != c)) for c in classes])
        fn = np.array([np.sum((pred != c) & (ref == c)) for c in classes])
        if average == "micro":
            return {"f1": float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))}
        per_class = 2 * tp / np.maximum(2 * tp + fp + fn, 1)  # (C,)
        if average == "macro":
            return {"f1": float(per_class.mean())}
        if average == "weighted":
            support = tp + fn
            return {"f1": float((per_class * support).sum() / max(support.sum(), 1))}
        raise ValueError(f"average must be macro, micro or weighted, got {average!r}")


def classification_metrics():
    """A ``compute_metrics`` for ``Trainer``: accuracy and macro-F1 of the argmax over logits."""
    accuracy, f1 = Accuracy(keep_in_memory=True), F1(keep_in_memory=True)

    def compute(eval_pred) -> dict:
        logits, labels = eval_pred.predictions, eval_pred.label_ids  # (N, C), (N,)
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = np.argmax(logits, axis=-1)
        return {**accuracy.compute(predictions=preds, references=labels),
                **f1.compute(predictions=preds, references=labels, average="macro")}

    return compute


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lowercase, drop punctuation and the articles a / an / the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 of the normalised answers (official SQuAD v1.1)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    """Official SQuAD v1.1 exact match and F1 (0-100, best over the gold answers), inputs as the Hub's ``squad``.

    Predictions pair with references by id when ids are unique, else by position (ids must then agree).
    """

    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and F1", citation="https://arxiv.org/abs/1606.05250",
            inputs_description="predictions: {id, prediction_text}; references: {id, answers: {text, answer_start}}",
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                "references": {"id": datasets.Value("string"), "answers": datasets.Sequence(
                    {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})}}))

    def _compute(self, predictions, references):
        ids = [r["id"] for r in references]
        if len(set(ids)) == len(ids):
            by_id = {p["id"]: p["prediction_text"] for p in predictions}
            if set(by_id) != set(ids):
                raise ValueError(f"predictions and references have different ids, e.g. {sorted(set(ids) ^ set(by_id))[:3]}")
            texts = [by_id[i] for i in ids]
        elif [p["id"] for p in predictions] == ids:
            texts = [p["prediction_text"] for p in predictions]
        else:
            raise ValueError("references repeat ids, so predictions must be given in the same order")
        golds = [r["answers"]["text"] for r in references]
        em = [max(float(normalize_answer(t) == normalize_answer(g)) for g in gs) for t, gs in zip(texts, golds)]
        f1 = [max(squad_f1(t, g) for g in gs) for t, gs in zip(texts, golds)]
        return {"exact_match": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}
