"""Extractive question answering (SQuAD v1.1 layout): data checks, features, post-processing, metric.

Rows are ``{"id", "title"?, "context", "question", "answers": {"text": [...], "answer_start": [...]}}`` in
.jsonl / .json (the official nested SQuAD .json too). A long context becomes several overlapping windows
(``doc_stride`` tokens shared); a training window that does not contain the answer is labelled with the
[CLS] position. A training question whose answer fits in no window (longer than a window, or across
every window boundary) would only teach "no answer": it is dropped, counted and named
(:func:`drop_unfit_questions`); evaluation questions are kept and counted the same way. Predictions take the best span over all windows of an example, mapped back to the context
text through the tokenizer's character offsets.

transformers 5 removed ``pipeline("question-answering")``; :class:`QuestionAnswerer` does its job with
the same pre- and post-processing as the evaluation. :class:`Squad` is the official SQuAD v1.1 exact
match / F1 as an ``evaluate.Metric`` (``evaluate.load("squad")`` needs the Hub).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from hfssl.files import read_text_file
from hfssl.finetune.common import MIN_SEQ_LENGTH, DataError, DataFilesArgs, load_data_file, subsample
from hfssl.finetune.metrics import Squad

_FIELDS = ("id", "context", "question", "answers")
_META = ("example_idx", "offset_mapping", "answer_in_window")  # feature columns the model does not take
_NAMED = 20  # question ids named in a report of skipped questions


@dataclass
class QAArgs:
    """Windowing of long contexts and answer search."""

    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question + context), capped by the model."})
    doc_stride: int = field(default=64, metadata={"help": "Context tokens shared by consecutive windows."})
    n_best_size: int = field(default=20, metadata={"help": "Candidate spans kept per example."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})

    def __post_init__(self):
        if self.max_seq_length < MIN_SEQ_LENGTH:
            raise ValueError(f"--max_seq_length must be at least {MIN_SEQ_LENGTH}, got {self.max_seq_length}")
        if self.doc_stride < 0:
            raise ValueError(f"--doc_stride must be at least 0, got {self.doc_stride}")
        if self.doc_stride >= self.max_seq_length:
            raise ValueError(f"--doc_stride must be below --max_seq_length ({self.max_seq_length}), got "
                             f"{self.doc_stride}; lower --doc_stride")
        for name in ("n_best_size", "max_answer_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")


def _flatten_squad(data: dict) -> list[dict]:
    """The official nested layout ``{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}`` -> rows."""
    rows = []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers") or []
                rows.append({"id": qa.get("id"), "title": article.get("title"), "context": paragraph.get("context"),
                             "question": qa.get("question"),
                             "answers": {"text": [a.get("text") for a in answers],
                                         "answer_start": [a.get("answer_start") for a in answers]}})
    return rows


def load_squad_file(path) -> datasets.Dataset:
    """A SQuAD-layout file as a Dataset whose rows are all checked (see :func:`check_squad_rows`)."""
    path = Path(path)
    if path.suffix.lower() == ".json" and path.is_file():
        text = read_text_file(path, "data file", "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
        if text.lstrip()[:1] == "{":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not valid JSON ({err}); fix the file (or re-create a truncated one)") from None
            if isinstance(data, dict) and "data" in data:
                try:
                    rows = _flatten_squad(data)
                except (AttributeError, TypeError, KeyError) as err:
                    raise DataError(f"{path}: not in the SQuAD layout ({type(err).__name__}: {err}); expected "
                                    '{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}') from None
                ds = datasets.Dataset.from_list(rows)
                check_squad_rows(ds, path)
                return ds
    ds = load_data_file(path)
    check_squad_rows(ds, path)
    return ds


def _row_error(path, row: int, qid, problem: str) -> DataError:
    who = f"row {row} (0-based, id {qid!r})" if qid not in (None, "") else f"row {row} (0-based)"
    return DataError(f"{path}: {who} {problem}")


def check_squad_rows(ds: datasets.Dataset, path) -> None:
    """Every row needs an id, a context, a question and answers that are the spans at their answer_start."""
    missing = [c for c in _FIELDS if c not in ds.column_names]
    if missing:
        raise DataError(f"{path}: no {', '.join(map(repr, missing))} field; available fields: "
                        f"{', '.join(ds.column_names)} (expected SQuAD layout: {', '.join(_FIELDS)})")
    columns = {c: list(ds[c]) for c in _FIELDS}
    for row, (qid, context, question, answers) in enumerate(zip(*columns.values())):
        if qid in (None, ""):
            raise _row_error(path, row, qid, "has no 'id'; give every row an id")
        for name, value in (("context", context), ("question", question)):
            if not isinstance(value, str) or not value.strip():
                raise _row_error(path, row, qid, f"has an empty or missing {name!r}; fill it in or remove the row")
        texts, starts = (answers or {}).get("text"), (answers or {}).get("answer_start")
        if not texts or starts is None or len(texts) != len(starts):
            raise _row_error(path, row, qid, "needs 'answers': {'text': [...], 'answer_start': [...]} with one start "
                             "per text and at least one answer (unanswerable SQuAD v2 questions are not supported); add its "
                             "answer or remove the row")
        for text, start in zip(texts, starts):
            if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
                raise _row_error(path, row, qid, f"has answer {text!r} at answer_start {start!r}: expected text and a "
                                 "character offset (an integer); fix the row")
            if not text or context[start:start + len(text)] != text:
                where = context.find(text) if text else -1
                hint = (f"; the text occurs at {where}: fix answer_start" if where >= 0
                        else "; the text is not in the context: fix the answer")
                raise _row_error(path, row, qid, f"answer {text!r} is not the span at answer_start {start} of its "
                                 f"context (found {context[start:start + len(text or '')]!r}){hint}")
    duplicates = sum(n - 1 for n in Counter(columns["id"]).values() if n > 1)
    if duplicates:
        print(f"note: {path}: {duplicates} row(s) repeat an earlier id; every row is kept and scored on its own")


def check_question_lengths(ds: datasets.Dataset, tokenizer, max_length: int, stride: int, path) -> None:
    """A window must fit the question plus more than ``stride`` context tokens ([CLS] q [SEP] c [SEP])."""
    lengths = [len(ids) for ids in tokenizer(list(ds["question"]), add_special_tokens=False)["input_ids"]]
    budget = max_length - 3 - stride  # context tokens per window must exceed the stride
    for row, n in enumerate(lengths):
        if n >= budget:
            raise _row_error(path, row, ds[row]["id"], f"has a {n}-token question, too long for max_seq_length "
                             f"{max_length} with doc_stride {stride}; raise --max_seq_length or lower --doc_stride")


def load_qa_data(files: DataFilesArgs, tokenizer, qa: QAArgs, max_length: int, seed: int) -> dict:
    """Checked ``{"train", "validation"}`` Datasets (validation split from the training file if asked)."""
    train = load_squad_file(files.train_file)
    check_question_lengths(train, tokenizer, max_length, qa.doc_stride, files.train_file)
    if files.validation_file:
        validation = load_squad_file(files.validation_file)
        check_question_lengths(validation, tokenizer, max_length, qa.doc_stride, files.validation_file)
    else:
        split = train.train_test_split(test_size=files.validation_split, seed=seed)
        train, validation = split["train"], split["test"]
    return {"train": subsample(train, files.max_train_samples, seed),
            "validation": subsample(validation, files.max_eval_samples, seed)}


def _label_span(offsets: list, start_char: int, end_char: int, cls_index: int) -> tuple[int, int]:
    """Token positions of the answer characters [start_char, end_char) in one window, or (CLS, CLS)."""
    context = [k for k, o in enumerate(offsets) if o is not None]
    if offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return cls_index, cls_index  # the answer is not (entirely) in this window
    start = max(k for k in context if offsets[k][0] <= start_char)
    end = min(k for k in context if offsets[k][1] >= end_char)
    return start, end


def tokenize_qa(examples: dict, indices: list[int], tokenizer, max_length: int, stride: int) -> dict:
    """Batched ``datasets.map`` function: examples -> windows (features) of ``max_length`` tokens.

    Each feature keeps ``example_idx`` and ``offset_mapping`` (character spans of context tokens, None
    elsewhere); with ``answers`` present, ``start_positions`` / ``end_positions`` label the first answer and
    ``answer_in_window`` says whether the window holds it (else both positions are [CLS]).
    """
    enc = tokenizer([q.lstrip() for q in examples["question"]], examples["context"], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")  # feature -> example in this batch
    enc["example_idx"] = [indices[s] for s in sample_map]
    offsets, starts, ends, inside = [], [], [], []
    for i, s in enumerate(sample_map):
        offsets.append([o if seq == 1 else None for o, seq in zip(enc["offset_mapping"][i], enc.sequence_ids(i))])
        if "answers" in examples:
            answers = examples["answers"][s]
            first = answers["answer_start"][0]
            cls_index = enc["input_ids"][i].index(tokenizer.cls_token_id)
            start, end = _label_span(offsets[-1], first, first + len(answers["text"][0]), cls_index)
            starts.append(start)
            ends.append(end)
            inside.append(start != cls_index)
    enc["offset_mapping"] = offsets
    if "answers" in examples:
        enc["start_positions"], enc["end_positions"], enc["answer_in_window"] = starts, ends, inside
    return enc


def featurize(ds: datasets.Dataset, tokenizer, max_length: int, stride: int) -> datasets.Dataset:
    """All windows of all examples of ``ds`` (cached by ``datasets``)."""
    return ds.map(tokenize_qa, batched=True, with_indices=True, remove_columns=ds.column_names, desc="windows",
                  fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "stride": stride})


def unfit_questions(features: datasets.Dataset, n_examples: int) -> list[int]:
    """Indices of the examples (0..n_examples-1) whose answer is in none of their windows in ``features``."""
    example_idx = np.asarray(features["example_idx"], dtype=np.int64)  # (F,)
    inside = np.asarray(features["answer_in_window"], dtype=bool)  # (F,)
    found = np.zeros(n_examples, dtype=bool)
    found[example_idx[inside]] = True
    return np.flatnonzero(~found).tolist()


def _named_ids(examples: datasets.Dataset, rows: list[int]) -> str:
    ids = [str(examples[i]["id"]) for i in rows[:_NAMED]]
    return f"ids: {', '.join(ids)}{', ...' if len(rows) > _NAMED else ''}; first {_NAMED} named"


def drop_unfit_questions(examples: datasets.Dataset, features: datasets.Dataset, max_length: int, stride: int,
                         path, split: str = "training") -> tuple[datasets.Dataset, str | None]:
    """``features`` without the windows of questions whose answer fits in no window, and a report line.

    A training question whose answer does not fit in any window has only [CLS]-labelled windows: they
    would teach the model "no answer here" while the text holds one. ``split="training"`` drops them
    (all of them dropped is a :class:`DataError`); any other split keeps them (they are scored as they are)
    and only reports them. The line is None when every answer fits."""
    unfit = unfit_questions(features, len(examples))
    if not unfit:
        return features, None
    what = (f"{len(unfit)} of {len(examples)} {split} questions whose answer does not fit in any window of "
            f"max_seq_length {max_length} ({_named_ids(examples, unfit)})")
    if split != "training":
        return features, f"note: {what}; kept and scored as they are (raise --max_seq_length or --doc_stride)"
    if len(unfit) == len(examples):
        raise DataError(f"{path}: no training question has an answer that fits in a window of max_seq_length "
                        f"{max_length} with doc_stride {stride} ({_named_ids(examples, unfit)}); raise "
                        "--max_seq_length (up to the model's limit) or --doc_stride, or give shorter answers")
    keep = np.flatnonzero(~np.isin(np.asarray(features["example_idx"]), unfit))
    return features.select(keep), f"skipped {what}; raise --max_seq_length or --doc_stride to train on them"


def best_spans(start_logits, end_logits, offsets: list, max_answer_length: int, n_best: int) -> list:
    """The ``n_best`` highest ``start_logits[i] + end_logits[j]`` over context tokens with i <= j < i + L.

    Exact (every valid pair is scored, O(T * L)), not the top-k-starts x top-k-ends shortcut.
    Returns ``[(score, i, j), ...]``, best first.
    """
    context = np.array([o is not None for o in offsets])  # (T,)
    s = np.where(context, start_logits, -np.inf)  # (T,)
    e = np.where(context, end_logits, -np.inf)  # (T,)
    e_pad = np.concatenate([e, np.full(max_answer_length - 1, -np.inf)])  # (T + L - 1,)
    scores = (s[:, None] + sliding_window_view(e_pad, max_answer_length)).ravel()  # (T * L,): [i, l] -> i, j=i+l
    k = min(n_best, int(np.isfinite(scores).sum()))
    if k == 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(float(scores[t]), int(t // max_answer_length), int(t // max_answer_length + t % max_answer_length))
            for t in top]


def postprocess_qa(contexts: list[str], example_idx, offsets, start_logits, end_logits, n_best_size: int = 20,
                   max_answer_length: int = 30) -> list[list[dict]]:
    """Per example, its n-best answers over all its windows, best first.

    An answer is ``{"text", "score", "start", "end", "window", "tokens"}``: ``start``/``end`` index
    ``contexts[i]``, ``window`` is the feature it came from and ``tokens`` its (first, last) token there.

    ``start_logits`` / ``end_logits`` are (F, T) for F features. A span found in two overlapping windows
    keeps its higher score.
    """
    found: list[dict] = [{} for _ in contexts]
    for f, ex in enumerate(example_idx):
        for score, i, j in best_spans(start_logits[f], end_logits[f], offsets[f], max_answer_length, n_best_size):
            a, b = offsets[f][i][0], offsets[f][j][1]
            if score > found[ex].get((a, b), {"score": -np.inf})["score"]:
                found[ex][(a, b)] = {"text": contexts[ex][a:b], "score": score, "start": a, "end": b,
                                     "window": f, "tokens": (i, j)}
    return [sorted(spans.values(), key=lambda x: -x["score"])[:n_best_size] for spans in found]


def qa_metrics(examples: datasets.Dataset, features: datasets.Dataset, qa: QAArgs):
    """A ``compute_metrics`` for ``Trainer``: post-process the (start, end) logits, then SQuAD EM / F1."""
    example_idx, offsets = list(features["example_idx"]), list(features["offset_mapping"])
    contexts = list(examples["context"])
    references = [{"id": r["id"], "answers": r["answers"]} for r in examples]
    squad = Squad(keep_in_memory=True)

    def compute(eval_pred) -> dict:
        start_logits, end_logits = eval_pred.predictions[:2]  # (F, T) each
        nbest = postprocess_qa(contexts, example_idx, offsets, start_logits, end_logits, qa.n_best_size,
                               qa.max_answer_length)
        predictions = [{"id": r["id"], "prediction_text": n[0]["text"] if n else ""} for r, n in zip(references, nbest)]
        return squad.compute(predictions=predictions, references=references)

    return compute


def model_inputs(features: datasets.Dataset) -> datasets.Dataset:
    """``features`` without the bookkeeping columns (example index, offsets) that the model does not take."""
    return features.remove_columns([c for c in _META if c in features.column_names])


class QuestionAnswerer:
    """``answerer(question=..., context=...) -> {"answer", "score", "start", "end"}`` for a fine-tuned folder.

    Stands in for ``pipeline("question-answering")`` (removed in transformers 5). Answers are ranked exactly
    as in evaluation (start + end logit); ``score`` is p(start) * p(end), softmax over the context tokens of
    the window holding the answer (so with ``top_k`` > 1, scores from different windows need not be sorted).
    """

    def __init__(self, model, tokenizer, max_seq_length: int | None = None, doc_stride: int = 64,
                 max_answer_length: int = 30):
        self.model, self.tokenizer = model.eval(), tokenizer
        limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        self.max_length, self.stride, self.max_answer_length = min(max_seq_length or limit, limit), doc_stride, max_answer_length

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> QuestionAnswerer:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        return cls(AutoModelForQuestionAnswering.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)

    @torch.no_grad()
    def __call__(self, question: str, context: str, top_k: int = 1):
        feats = tokenize_qa({"question": [question], "context": [context]}, [0], self.tokenizer, self.max_length,
                            self.stride)
        names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in feats]
        device = next(self.model.parameters()).device
        out = self.model(**{n: torch.tensor(feats[n], device=device) for n in names})
        logits = [x.float().cpu() for x in (out.start_logits, out.end_logits)]  # (F, T) each
        nbest = postprocess_qa([context], feats["example_idx"], feats["offset_mapping"], *(x.numpy() for x in logits),
                               top_k, self.max_answer_length)[0]
        context_mask = torch.tensor([[o is not None for o in offs] for offs in feats["offset_mapping"]])  # (F, T)
        log_p = [torch.log_softmax(x.masked_fill(~context_mask, -1e4), dim=-1) for x in logits]  # (F, T) each
        answers = [{"answer": a["text"], "start": a["start"], "end": a["end"],
                    "score": float(torch.exp(log_p[0][a["window"], a["tokens"][0]] + log_p[1][a["window"], a["tokens"][1]]))}
                   for a in nbest]
        return answers[0] if top_k == 1 else answers
