"""Fine-tuning recipes (classification, extractive QA) end to end on a tiny pretrained folder, plus their
building blocks against independent references: scikit-learn for accuracy / F1, hand-computed SQuAD
EM / F1, a brute-force span search for QA post-processing, and character offsets for window labels."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
FAST = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--logging_steps", "2",
        "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--seed", "1"]


def _recipe(name: str):
    """Import recipes/<name>.py as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny BertForPreTraining + WordPiece tokenizer saved the way recipes/bert_mlm.py saves its model."""
    from transformers import BertConfig, BertForPreTraining, set_seed

    from hfssl.card import ModelCardInfo
    from hfssl.hub import save_model_folder
    from hfssl.text.tokenizer import save_tokenizer, train_wordpiece

    texts = [r["text"] for r in _rows("cls_train.jsonl")] + [r["context"] for r in _rows("qa_train.jsonl")]
    texts += [r["question"] for r in _rows("qa_train.jsonl") + _rows("qa_validation.jsonl")]
    tokenizer = train_wordpiece(texts, vocab_size=400, min_frequency=1, model_max_length=128, show_progress=False)
    set_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    card = ModelCardInfo(model_name="tiny", method="bert-mlm-nsp", base_model_type="bert", tags=[],
                         datasets_description="test fixtures", hyperparameters={}, metrics={})
    folder = save_model_folder(BertForPreTraining(config), tmp_path_factory.mktemp("pre") / "model",
                               tokenizer=tokenizer, card=card)
    save_tokenizer(tokenizer, folder)  # + vocab.txt, as bert_mlm's folder has
    return folder


def _encoder(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("bert.encoder.") or k.startswith("bert.embeddings.")}


# ---------------------------------------------------------------- text classification

def _cls_args(pretrained, out, *extra, train="cls_train.jsonl", validation="cls_validation.jsonl"):
    return ["--model_name_or_path", str(pretrained), "--train_file", str(DATA / train if isinstance(train, str) else train),
            "--validation_file", str(DATA / validation if isinstance(validation, str) else validation),
            "--output_dir", str(out), *FAST, *extra]


def test_classification_recipe_end_to_end(pretrained, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import pipeline

    out = tmp_path / "cls"
    metrics = _recipe("finetune_text_classification").main(
        ["--config", str(ROOT / "recipes/configs/finetune_text_classification.yaml"),
         *_cls_args(pretrained, out, "--num_train_epochs", "2", "--learning_rate", "2e-3")])
    assert json.loads((out / "all_results.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "animal", "1": "food", "2": "sport"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    card = (out / "README.md").read_text()  # Trainer's model card: base model, hyperparameters, results
    assert str(pretrained) in card and "learning_rate: 0.002" in card and "hfssl" in card
    # training moved the encoder away from the pretrained weights
    before, after = _encoder(load_file(pretrained / "model.safetensors")), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)

    classify = pipeline("text-classification", model=str(out))
    rows = _rows("cls_validation.jsonl")
    predicted = classify([r["text"] for r in rows])
    assert all(p["label"] in {"animal", "food", "sport"} and 0.0 <= p["score"] <= 1.0 for p in predicted)
    full = classify(rows[0]["text"], top_k=None)
    assert sorted(p["label"] for p in full) == ["animal", "food", "sport"]
    assert sum(p["score"] for p in full) == pytest.approx(1.0, abs=1e-5)
    # the reported metrics are those of the saved model's predictions (scikit-learn as the reference)
    gold, pred = [r["label"] for r in rows], [p["label"] for p in predicted]
    assert metrics["eval_accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-6)
    assert metrics["eval_f1"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-6)


def test_pretrained_encoder_is_loaded_and_from_scratch_is_not(pretrained):
    """The recipes' loading code path: only the task head is new; --from_scratch replaces everything."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    from hfssl.finetune.common import describe_loading, load_model

    saved = _encoder(load_file(pretrained / "model.safetensors"))
    cases = [(AutoModelForSequenceClassification, {"num_labels": 3}, {"classifier.weight", "classifier.bias"}),
             (AutoModelForQuestionAnswering, {}, {"qa_outputs.weight", "qa_outputs.bias"})]
    for auto_cls, kwargs, head in cases:
        config = AutoConfig.from_pretrained(pretrained, **kwargs)
        model, info = load_model(auto_cls, str(pretrained), config)
        assert set(info["missing_keys"]) == head and not info["mismatched_keys"]
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items())
        assert "WARNING" not in describe_loading(info, False, (next(iter(head)).split(".")[0] + ".",))
        scratch, _ = load_model(auto_cls, str(pretrained), config, from_scratch=True)
        state = scratch.state_dict()
        weights = [k for k in saved if k.endswith("weight") and "LayerNorm" not in k]
        assert weights and all(not torch.equal(state[k], saved[k]) for k in weights)


def test_from_scratch_with_csv_pairs_and_integer_labels(pretrained, tmp_path, capsys):
    from transformers import pipeline

    rows = _rows("cls_train.jsonl")
    partners = [rows[(i + (3 if i % 2 else 1)) % len(rows)] for i in range(len(rows))]  # same topic on odd rows
    lines = ["premise,hypothesis,label"] + [
        f'"{a["text"]}","{b["text"]}",{int(a["label"] == b["label"])}' for a, b in zip(rows, partners)]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scratch"
    metrics = _recipe("finetune_text_classification").main(_cls_args(
        pretrained, out, "--from_scratch", "--learning_rate", "0", "--max_steps", "1", "--text_column", "premise",
        "--text_pair_column", "hypothesis", train=tmp_path / "pairs.csv", validation=tmp_path / "pairs.csv"))
    assert "from scratch" in capsys.readouterr().out and 0.0 <= metrics["eval_f1"] <= 1.0
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
    assert str(pretrained) not in (out / "README.md").read_text()  # the card names no base model
    before, after = _encoder(load_file(pretrained / "model.safetensors")), load_file(out / "model.safetensors")
    weights = [k for k in before if k.endswith("weight") and "LayerNorm" not in k]
    assert all(not torch.equal(before[k], after[k]) for k in weights)  # lr 0: still the random init
    answer = pipeline("text-classification", model=str(out))({"text": rows[0]["text"], "text_pair": rows[1]["text"]})
    assert answer["label"] in {"0", "1"} and 0.0 <= answer["score"] <= 1.0


@pytest.mark.parametrize("problem, expected", [
    ("missing_column", r"cls_train.jsonl: no column 'label'; available columns: text, topic"),
    ("unknown_label", r"bad.jsonl: row 2 \(0-based\) has 'label' = 'weather'.*training labels: animal, food, sport"),
    ("empty_text", r"bad.jsonl: row 3 \(0-based\) has an empty or missing 'text'"),
    ("missing_label", r"bad.jsonl: row 1 \(0-based\) has no 'label' label"),
    ("float_label", r"bad.jsonl: column 'label' holds fractional numbers"),
])
def test_classification_bad_input_names_the_row_or_column(pretrained, tmp_path, problem, expected):
    from hfssl.finetune.common import DataError

    rows = _rows("cls_train.jsonl")
    train, validation = "cls_train.jsonl", "cls_validation.jsonl"
    if problem == "missing_column":
        train = _write_jsonl(tmp_path / "cls_train.jsonl", [{"text": r["text"], "topic": r["label"]} for r in rows])
    elif problem == "unknown_label":
        validation = _write_jsonl(tmp_path / "bad.jsonl", [{**r, "label": "weather" if i == 2 else r["label"]}
                                                           for i, r in enumerate(rows)])
    elif problem == "empty_text":
        train = _write_jsonl(tmp_path / "bad.jsonl", [{**r, "text": "  " if i == 3 else r["text"]}
                                                      for i, r in enumerate(rows)])
    elif problem == "missing_label":
        train = _write_jsonl(tmp_path / "bad.jsonl", [{**r, "label": None if i == 1 else i % 2}
                                                      for i, r in enumerate(rows)])
    else:
        train = _write_jsonl(tmp_path / "bad.jsonl", [{**r, "label": i / 2} for i, r in enumerate(rows)])
    with pytest.raises(DataError, match=expected):
        _recipe("finetune_text_classification").main(_cls_args(pretrained, tmp_path / "o", train=train,
                                                                validation=validation))


def test_validation_split_holds_out_rows_of_the_training_file():
    from hfssl.finetune.common import DataFilesArgs
    from hfssl.finetune.text_classification import TextClassificationArgs, load_classification_data

    files = DataFilesArgs(train_file=str(DATA / "cls_train.jsonl"), validation_split=0.2, max_train_samples=20)
    splits, labels = load_classification_data(files, TextClassificationArgs(), seed=0)
    train, held_out = list(splits["train"]["text"]), list(splits["validation"]["text"])
    assert labels == ["animal", "food", "sport"] and (len(train), len(held_out)) == (20, 6)
    assert not set(train) & set(held_out) and set(held_out) <= {r["text"] for r in _rows("cls_train.jsonl")}


def test_accuracy_and_f1_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score

    from hfssl.finetune.metrics import F1, Accuracy

    rng = np.random.default_rng(0)
    for _ in range(5):
        ref, pred = rng.integers(0, 4, 50), rng.integers(0, 5, 50)  # class 4 is never a reference
        assert Accuracy().compute(predictions=pred, references=ref)["accuracy"] == pytest.approx(accuracy_score(ref, pred))
        for average in ("macro", "micro", "weighted"):
            ours = F1().compute(predictions=pred, references=ref, average=average)["f1"]
            assert ours == pytest.approx(f1_score(ref, pred, average=average, zero_division=0)), average


def test_label_names_and_deterministic_subsample():
    import datasets

    from hfssl.finetune.common import label_names, subsample

    assert label_names(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert label_names(["b", "a", "B"]) == ["B", "a", "b"]
    ds = datasets.Dataset.from_dict({"x": list(range(100))})
    first, again, other = subsample(ds, 10, 3)["x"], subsample(ds, 10, 3)["x"], subsample(ds, 10, 4)["x"]
    assert list(first) == list(again) == sorted(first) and list(first) != list(other) and len(set(first)) == 10


# ---------------------------------------------------------------- question answering

def test_qa_windows_label_the_answer_tokens(pretrained):
    """Every window either holds the whole answer and its labels map back to exactly the answer text,
    or does not and is labelled [CLS]; consecutive windows share ``stride`` context tokens."""
    import datasets
    from transformers import AutoTokenizer

    from hfssl.finetune.qa import featurize

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    examples = datasets.Dataset.from_list(_rows("qa_train.jsonl"))
    feats = featurize(examples, tokenizer, max_length=64, stride=16)
    by_example = {}
    for f in feats:
        by_example.setdefault(f["example_idx"], []).append(f)
    assert len(by_example) == len(examples) and max(len(v) for v in by_example.values()) >= 3
    for ex, windows in by_example.items():
        row = examples[ex]
        a = row["answers"]["answer_start"][0]
        b = a + len(row["answers"]["text"][0])
        found = 0
        for w in windows:
            spans = [o for o in w["offset_mapping"] if o is not None]
            if spans[0][0] <= a and b <= spans[-1][1]:
                s, e = w["start_positions"], w["end_positions"]
                offs = w["offset_mapping"]
                assert row["context"][offs[s][0]:offs[e][1]] == row["answers"]["text"][0]
                found += 1
            else:
                assert w["start_positions"] == w["end_positions"] == 0
                assert w["input_ids"][0] == tokenizer.cls_token_id
        assert found >= 1
        for w1, w2 in itertools.pairwise(windows):
            tail = [o for o in w1["offset_mapping"] if o is not None][-16:]
            head = [o for o in w2["offset_mapping"] if o is not None][:16]
            assert tail == head


def _brute_force(contexts, example_idx, offsets, start, end, n_best, max_len):
    """Every (window, i, j) with context tokens i <= j, j - i + 1 <= max_len; best score per character span."""
    best = [{} for _ in contexts]
    for f, ex in enumerate(example_idx):
        for i, j in itertools.product(range(len(offsets[f])), repeat=2):
            if offsets[f][i] is None or offsets[f][j] is None or not 0 <= j - i < max_len:
                continue
            span = (offsets[f][i][0], offsets[f][j][1])
            best[ex][span] = max(best[ex].get(span, -np.inf), start[f, i] + end[f, j])
    return [sorted(((s, span) for span, s in b.items()), reverse=True)[:n_best] for b in best]


def test_postprocess_matches_brute_force_search():
    from hfssl.finetune.qa import postprocess_qa

    rng = np.random.default_rng(0)
    contexts = ["aa bb cc dd ee ff gg hh", "one two three four five"]

    def window(words_from: int, n: int, text: str) -> list:  # [CLS] q q [SEP] context... [SEP] [PAD]
        starts = [i for i, ch in enumerate(text) if ch != " " and (i == 0 or text[i - 1] == " ")]
        spans = [(s, text.index(" ", s) if " " in text[s:] else len(text)) for s in starts]
        return [None, None, None, None, *spans[words_from:words_from + n], None, None]

    offsets = [window(0, 5, contexts[0]), window(3, 5, contexts[0]), window(0, 5, contexts[1])]  # overlapping
    example_idx = [0, 0, 1]
    for trial in range(20):
        start, end = rng.normal(size=(3, 11)), rng.normal(size=(3, 11))
        n_best, max_len = (1, 3, 20)[trial % 3], (1, 2, 4)[trial % 3]
        ours = postprocess_qa(contexts, example_idx, offsets, start, end, n_best, max_len)
        reference = _brute_force(contexts, example_idx, offsets, start, end, n_best, max_len)
        for got, want, context in zip(ours, reference, contexts):
            assert [(a["start"], a["end"]) for a in got] == [span for _, span in want]
            assert [a["score"] for a in got] == pytest.approx([s for s, _ in want])
            assert all(a["text"] == context[a["start"]:a["end"]] for a in got)


def test_squad_metric_against_hand_computed_values():
    from hfssl.finetune.metrics import Squad, normalize_answer

    assert normalize_answer("  The  Eiffel-Tower, an icon! ") == "eiffeltower icon"
    refs = [{"id": "a", "answers": {"text": ["Eiffel tower"], "answer_start": [0]}},
            {"id": "b", "answers": {"text": ["Paris"], "answer_start": [0]}},
            {"id": "c", "answers": {"text": ["apple", "cherry pie"], "answer_start": [0, 9]}},
            {"id": "d", "answers": {"text": ["x"], "answer_start": [0]}}]
    texts = {"a": "the Eiffel Tower!", "b": "in Paris, France", "c": "an apple pie", "d": ""}
    # a: exact after normalisation (1, 1); b: P 1/3, R 1 -> F1 1/2; c: max(F1 2/3 vs "apple", 1/2 vs
    # "cherry pie"); d: nothing. EM = 1/4, F1 = (1 + 1/2 + 2/3 + 0) / 4.
    preds = [{"id": i, "prediction_text": t} for i, t in reversed(texts.items())]  # paired by id, any order
    result = Squad().compute(predictions=preds, references=refs)
    assert result["exact_match"] == pytest.approx(25.0)
    assert result["f1"] == pytest.approx(100 * (1 + 0.5 + 2 / 3) / 4)
    # repeated ids (as in /work/shared's QA sample) are scored row by row, in order
    twice = Squad().compute(predictions=[preds[-1], preds[-1]], references=[refs[0], refs[0]])
    assert twice == {"exact_match": 100.0, "f1": 100.0}


def test_official_nested_squad_json_reads_like_the_flat_rows(tmp_path):
    from hfssl.finetune.qa import load_squad_file

    rows = _rows("qa_train.jsonl")
    articles = {}
    for r in rows:
        paragraphs = articles.setdefault(r["title"], {})
        paragraphs.setdefault(r["context"], []).append(
            {"id": r["id"], "question": r["question"],
             "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]})
    nested = {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()]}
    (tmp_path / "squad.json").write_text(json.dumps(nested))
    assert load_squad_file(tmp_path / "squad.json").to_list() == rows


def _qa_args(pretrained, out, *extra, train="qa_train.jsonl", validation="qa_validation.jsonl"):
    return ["--model_name_or_path", str(pretrained), "--train_file", str(DATA / train if isinstance(train, str) else train),
            "--validation_file", str(DATA / validation if isinstance(validation, str) else validation),
            "--output_dir", str(out), "--max_seq_length", "64", "--doc_stride", "16", *FAST, *extra]


def test_qa_recipe_end_to_end(pretrained, tmp_path, capsys):
    from hfssl.finetune.metrics import Squad
    from hfssl.finetune.qa import QuestionAnswerer

    out = tmp_path / "qa"
    metrics = _recipe("finetune_qa").main(["--config", str(ROOT / "recipes/configs/finetune_qa.yaml"),
                                            *_qa_args(pretrained, out, "--num_train_epochs", "2",
                                                      "--learning_rate", "2e-3")])
    printed = capsys.readouterr().out
    assert "new task-head weights: qa_outputs.bias, qa_outputs.weight" in printed
    assert "4 validation questions ->" in printed
    assert 0.0 <= metrics["eval_exact_match"] <= 100.0 and 0.0 <= metrics["eval_f1"] <= 100.0
    assert metrics["eval_exact_match"] <= metrics["eval_f1"] + 1e-9
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]

    answer = QuestionAnswerer.from_pretrained(out, max_seq_length=64, doc_stride=16)
    predictions = []
    for row in _rows("qa_validation.jsonl"):
        best = answer(question=row["question"], context=row["context"])
        predictions.append({"id": row["id"], "prediction_text": best["answer"]})
        assert best["answer"] and best["answer"] == row["context"][best["start"]:best["end"]]
        assert 0.0 <= best["score"] <= 1.0
        top = answer(question=row["question"], context=row["context"], top_k=3)
        assert len(top) == 3 and top[0] == best
        assert all(0.0 <= t["score"] <= 1.0 for t in top) and len({(t["start"], t["end"]) for t in top}) == 3
        assert all(t["answer"] == row["context"][t["start"]:t["end"]] for t in top)
    # the reported metrics are those of the saved model's answers
    scored = Squad().compute(predictions=predictions, references=[
        {"id": r["id"], "answers": r["answers"]} for r in _rows("qa_validation.jsonl")])
    assert scored["exact_match"] == pytest.approx(metrics["eval_exact_match"])
    assert scored["f1"] == pytest.approx(metrics["eval_f1"])


@pytest.mark.parametrize("problem, expected", [
    ("missing_question", r"bad.jsonl: row 1 \(0-based, id 'q2'\) has an empty or missing 'question'"),
    ("wrong_start", r"bad.jsonl: row 2 \(0-based, id 'q4'\) answer 'the original millstones' is not the span at "
                    r"answer_start 483.*occurs at 482"),
    ("no_answers_field", r"bad.jsonl: no 'answers' field; available fields: id, title, context, question"),
    ("no_answer", r"bad.jsonl: row 0 \(0-based, id 'q1'\) needs 'answers'.*unanswerable"),
    ("long_question", r"bad.jsonl: row 3 \(0-based, id 'q5'\) has a \d+-token question, too long for max_seq_length 64"),
])
def test_qa_bad_input_names_the_row(pretrained, tmp_path, problem, expected):
    from hfssl.finetune.common import DataError

    rows = _rows("qa_train.jsonl")
    if problem == "missing_question":
        rows[1] = {k: v for k, v in rows[1].items() if k != "question"}
    elif problem == "wrong_start":
        rows[2]["answers"]["answer_start"][0] += 1
    elif problem == "no_answers_field":
        rows = [{k: v for k, v in r.items() if k != "answers"} for r in rows]
    elif problem == "no_answer":
        rows[0]["answers"] = {"text": [], "answer_start": []}
    else:
        rows[3]["question"] = "which " * 50 + "?"
    bad = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=expected):
        _recipe("finetune_qa").main(_qa_args(pretrained, tmp_path / "o", train=bad))


def _long_answer(row: dict, n_chars: int = 300) -> dict:
    """``row`` with its answer replaced by the first ``n_chars`` characters of its context (many windows long)."""
    return {**row, "answers": {"text": [row["context"][:n_chars]], "answer_start": [0]}}


def test_qa_answers_longer_than_a_window_are_counted_named_and_dropped(pretrained):
    """Every window of a question whose answer is longer than a window points at [CLS]: such training
    questions are dropped (counted, named), evaluation questions kept; all of them is a DataError."""
    import datasets
    from transformers import AutoTokenizer

    from hfssl.finetune.common import DataError
    from hfssl.finetune.qa import drop_unfit_questions, featurize, unfit_questions

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    rows = _rows("qa_train.jsonl")
    rows[1], rows[5] = _long_answer(rows[1]), _long_answer(rows[5])
    examples = datasets.Dataset.from_list(rows)
    feats = featurize(examples, tokenizer, max_length=64, stride=16)
    assert unfit_questions(feats, len(examples)) == [1, 5]
    assert all(f["start_positions"] == 0 for f in feats if f["example_idx"] in (1, 5))  # all [CLS]: no answer

    kept, line = drop_unfit_questions(examples, feats, 64, 16, "train.jsonl")
    assert line.startswith("skipped 2 of 8 training questions whose answer does not fit in any window of "
                           f"max_seq_length 64 (ids: {rows[1]['id']}, {rows[5]['id']}; first 20 named)")
    assert sorted(set(kept["example_idx"])) == [0, 2, 3, 4, 6, 7]
    assert len(kept) == sum(1 for f in feats["example_idx"] if f not in (1, 5))

    same, note = drop_unfit_questions(examples, feats, 64, 16, "dev.jsonl", split="validation")
    assert len(same) == len(feats) and note.startswith("note: 2 of 8 validation questions whose answer")

    every = datasets.Dataset.from_list([_long_answer(r) for r in _rows("qa_train.jsonl")])
    with pytest.raises(DataError, match=r"train\.jsonl: no training question has an answer that fits.*"
                                        r"max_seq_length 64 with doc_stride 16.*raise --max_seq_length"):
        drop_unfit_questions(every, featurize(every, tokenizer, 64, 16), 64, 16, "train.jsonl")
    many = datasets.Dataset.from_list([{**_long_answer(rows[0]), "id": f"x{i}"} for i in range(25)] + rows[2:4])
    line = drop_unfit_questions(many, featurize(many, tokenizer, 64, 16), 64, 16, "t")[1]
    assert "skipped 25 of 27" in line and "x19, ...; first 20 named" in line and "x20" not in line


def test_qa_recipe_reports_skipped_questions(pretrained, tmp_path, capsys):
    rows = _rows("qa_train.jsonl")
    rows[1] = _long_answer(rows[1])
    validation = _rows("qa_validation.jsonl")
    validation[0] = _long_answer(validation[0])
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    dev = _write_jsonl(tmp_path / "dev.jsonl", validation)
    _recipe("finetune_qa").main(_qa_args(pretrained, tmp_path / "o", "--max_steps", "1", train=train, validation=dev))
    printed = capsys.readouterr().out
    assert (f"skipped 1 of 8 training questions whose answer does not fit in any window of max_seq_length 64 "
            f"(ids: {rows[1]['id']}; first 20 named)") in printed
    assert f"note: 1 of 4 validation questions whose answer does not fit in any window of max_seq_length 64 " \
           f"(ids: {validation[0]['id']}; first 20 named); kept" in printed
    assert "data: 7 of 8 training questions ->" in printed and "4 validation questions ->" in printed


def test_argument_ranges_name_their_flag(tmp_path):
    """Every numeric setting of the fine-tuning dataclasses is checked before any data is read."""
    from hfssl.finetune.common import DataFilesArgs, FinetuneTrainingArguments
    from hfssl.finetune.qa import QAArgs
    from hfssl.finetune.text_classification import TextClassificationArgs

    train = str(DATA / "cls_train.jsonl")
    cases = [
        (lambda: QAArgs(max_seq_length=4), "--max_seq_length must be at least 8, got 4"),
        (lambda: QAArgs(doc_stride=-1), "--doc_stride must be at least 0"),
        (lambda: QAArgs(max_seq_length=64, doc_stride=64), "--doc_stride must be below --max_seq_length"),
        (lambda: QAArgs(n_best_size=0), "--n_best_size must be at least 1"),
        (lambda: QAArgs(max_answer_length=0), "--max_answer_length must be at least 1"),
        (lambda: TextClassificationArgs(max_seq_length=0), "--max_seq_length must be at least 8, got 0"),
        (lambda: TextClassificationArgs(label_column="text"), "--label_column and --text_column"),
        (lambda: DataFilesArgs(train_file=train, validation_split=1.0), "--validation_split must be in"),
        (lambda: DataFilesArgs(train_file=train, validation_split=0.1, max_train_samples=0), "--max_train_samples"),
        (lambda: DataFilesArgs(train_file=str(tmp_path), validation_split=0.1), "--train_file .* is a folder"),
        (lambda: FinetuneTrainingArguments(output_dir="o", per_device_eval_batch_size=0), "--per_device_eval_batch_size"),
        (lambda: FinetuneTrainingArguments(output_dir="o", gradient_accumulation_steps=0), "--gradient_accumulation"),
        (lambda: FinetuneTrainingArguments(output_dir="o", max_steps=0), "--max_steps must be at least 1"),
        (lambda: FinetuneTrainingArguments(output_dir="o", num_train_epochs=0), "--num_train_epochs must be above 0"),
        (lambda: FinetuneTrainingArguments(output_dir="o", warmup_steps=-0.1), "--warmup_steps must be at least 0"),
        (lambda: FinetuneTrainingArguments(output_dir="o", seed=-1), "--seed must be at least 0"),
    ]
    for make, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            make()
    FinetuneTrainingArguments(output_dir="o", max_steps=5, num_train_epochs=0, learning_rate=0)  # max_steps wins
