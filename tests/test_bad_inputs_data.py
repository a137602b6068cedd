"""Bad data and bad flags of the data recipes (train_tokenizer, finetune_text_classification, finetune_qa,
finetune_image_classification), one table row each: exit code 2, ONE ``error:`` line on stderr naming the
culprit (file, row or flag), no traceback, and the pre-existing output folder untouched.

Every row runs the recipe's ``main`` under :func:`hfssl.errors.run_cli`, the same call as the script's
``if __name__ == "__main__"`` block, in this process (a recipe subprocess spends ~10 s importing torch and
transformers); the rows marked ``SUBPROCESS`` run the real script with the harness of tests/bad_inputs.py,
one or more per recipe, so the entry points themselves are checked too. Rows are built to fail before a
model is loaded; the only model is one tiny BERT folder.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from bad_inputs import assert_user_error, run_in_process, run_recipe, snapshot

DATA = Path(__file__).resolve().parent / "data"
TOK, CLS, QA, IMG = ("train_tokenizer.py", "finetune_text_classification.py", "finetune_qa.py",
                     "finetune_image_classification.py")
SUBPROCESS = "subprocess"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny BertForPreTraining + WordPiece tokenizer folder, as recipes/bert_mlm.py saves one."""
    from transformers import BertConfig, BertForPreTraining, set_seed

    from hfssl.hub import save_model_folder
    from hfssl.text.tokenizer import save_tokenizer, train_wordpiece

    texts = [r["text"] for r in _rows("cls_train.jsonl")] + [r["context"] for r in _rows("qa_train.jsonl")]
    tokenizer = train_wordpiece(texts, vocab_size=300, min_frequency=1, model_max_length=128, show_progress=False)
    set_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    folder = save_model_folder(BertForPreTraining(config), tmp_path_factory.mktemp("bert") / "model",
                               tokenizer=tokenizer)
    return save_tokenizer(tokenizer, folder)



# ------------------------------------------------------------------------------------------ data makers
def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _words(n: int) -> str:
    """``n`` lines of pseudo-random words (they compress badly: half a .gz still holds > 8 KB of text)."""
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    return "\n".join(" ".join(rng.choice(vocab) for _ in range(12)).capitalize() + "." for _ in range(n))


def _cut_gzip(path: Path, text: str) -> Path:
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])  # a download that stopped half-way
    return path


def _corpus(data: Path) -> Path:
    (data / "good.txt").write_text("A first sentence. A second one.\n\nAnother paragraph here.\n")
    return data / "good.txt"


def _long_answer(row: dict) -> dict:
    return {**row, "answers": {"text": [row["context"][:300]], "answer_start": [0]}}


# ------------------------------------------------------------------------------------------ argument builders
# Each builder gets (data folder, output folder, model folder or None) and returns the recipe's flags; the
# output folder already holds a file, so every row but the refusals passes --overwrite_output_dir.
def tok(corpus=None, *extra, overwrite=True):
    def build(data, out, model):
        path = corpus(data) if callable(corpus) else _corpus(data)
        return ["--corpus", path, "--output_dir", out, "--cache_dir", data.parent / "cache", "--vocab_size", "40",
                "--min_frequency", "1", *(["--overwrite_output_dir"] if overwrite else []), *extra]
    return build


def cls(train=None, validation=None, *extra, model=True, overwrite=True, train_flag=True):
    def build(data, out, folder):
        train_path = train(data) if callable(train) else DATA / "cls_train.jsonl"
        dev_path = validation(data) if callable(validation) else DATA / "cls_validation.jsonl"
        return [*(["--model_name_or_path", folder] if model else []),
                *(["--train_file", train_path] if train_flag else []), "--validation_file", dev_path,
                "--output_dir", out, *(["--overwrite_output_dir"] if overwrite else []), *extra]
    return build


def qa(train=None, *extra, model=True):
    def build(data, out, folder):
        train_path = train(data) if callable(train) else DATA / "qa_train.jsonl"
        return [*(["--model_name_or_path", folder] if model else []), "--train_file", train_path,
                "--validation_file", DATA / "qa_validation.jsonl", "--output_dir", out, "--overwrite_output_dir",
                "--max_seq_length", "64", "--doc_stride", "16", *extra]
    return build


def img(images=None, *extra):
    def build(data, out, folder):
        path = images(data) if callable(images) else _image_folder(data, ["cat", "dog"])
        return ["--data", path, "--output_dir", out, "--overwrite_output_dir", "--cache_dir", data.parent / "cache",
                "--model_name_or_path", "", *extra]
    return build


def _image_folder(data: Path, classes: list[str]) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (data / "images" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(data / "images" / name / f"{i}.png")
    return data / "images"


# ------------------------------------------------------------------------------------------ bad data
def binary_file(data):
    (data / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return data / "bin.txt"


def blank_file(data):
    (data / "blank.txt").write_text("\n   \n\n")
    return data / "blank.txt"


def cut_txt_gz(data):
    return _cut_gzip(data / "cut.txt.gz", _words(4000))


def cut_jsonl_gz(data):
    return _cut_gzip(data / "cut.jsonl.gz", "\n".join(json.dumps({"text": t}) for t in _words(4000).split("\n")))


def missing_label_column(data):
    return _jsonl(data / "train.jsonl", [{"text": r["text"], "topic": r["label"]} for r in _rows("cls_train.jsonl")])


def empty_text_row(data):
    return _jsonl(data / "train.jsonl", [{**r, "text": " " if i == 3 else r["text"]}
                                         for i, r in enumerate(_rows("cls_train.jsonl"))])


def unknown_validation_label(data):
    return _jsonl(data / "dev.jsonl", [{**r, "label": "weather" if i == 2 else r["label"]}
                                       for i, r in enumerate(_rows("cls_validation.jsonl"))])


def single_label(data):
    return _jsonl(data / "train.jsonl", [{**r, "label": "animal"} for r in _rows("cls_train.jsonl")])


def answer_not_at_start(data):
    rows = _rows("qa_train.jsonl")
    rows[2]["answers"]["answer_start"][0] += 1
    return _jsonl(data / "train.jsonl", rows)


def all_answers_too_long(data):
    return _jsonl(data / "train.jsonl", [_long_answer(r) for r in _rows("qa_train.jsonl")])


def row(script: str, build, culprits: list[str], id: str, how: str = "here"):
    return pytest.param(script, build, culprits, how, id=id)


ROWS = [
    # train_tokenizer: the corpus, then the flags
    row(TOK, tok(lambda d: d / "nowhere.txt"), ["nowhere.txt", "--corpus"], id="corpus-path-missing"),
    row(TOK, tok(binary_file), ["bin.txt", "binary"], id="corpus-binary-file"),
    row(TOK, tok(cut_txt_gz), ["cut.txt.gz", "cannot be read", "EOFError"], id="corpus-truncated-txt-gz", how=SUBPROCESS),
    row(TOK, tok(cut_jsonl_gz), ["cut.jsonl.gz", "cannot be read"], id="corpus-truncated-jsonl-gz"),
    row(TOK, tok(blank_file), ["blank.txt", "no text found"], id="corpus-empty"),
    row(TOK, tok(None, overwrite=False), ["--output_dir", "not empty", "--overwrite_output_dir"],
        id="tokenizer-output-dir-not-empty"),
    row(TOK, tok(None, "--vocab_size", "3"), ["--vocab_size", "got 3"], id="tokenizer-vocab-size-too-small"),
    row(TOK, tok(None, "--min_frequency", "0"), ["--min_frequency", "got 0"], id="tokenizer-min-frequency-0"),
    row(TOK, tok(None, "--num_proc", "0"), ["--num_proc", "got 0"], id="tokenizer-num-proc-0"),
    row(TOK, tok(None, "--document_separator", "(unclosed"), ["--document_separator", "regex"],
        id="tokenizer-bad-separator-regex"),
    # finetune_text_classification: flags first (no data read), then the files row by row
    row(CLS, cls(None, None, model=False), ["--model_name_or_path", "required"], id="cls-no-model-path", how=SUBPROCESS),
    row(CLS, cls(None, None, train_flag=False), ["--train_file", "required"], id="cls-no-train-file"),
    row(CLS, cls(lambda d: d / "nope.jsonl"), ["--train_file", "nope.jsonl", "not found"],
        id="cls-train-file-not-found"),
    row(CLS, cls(None, None, "--per_device_train_batch_size", "0"), ["--per_device_train_batch_size", "got 0"],
        id="cls-batch-size-0"),
    row(CLS, cls(None, None, "--learning_rate", "-1"), ["--learning_rate", "got -1"], id="cls-negative-lr"),
    row(CLS, cls(None, None, "--max_seq_length", "0"), ["--max_seq_length", "got 0"], id="cls-max-seq-length-0"),
    row(CLS, cls(None, None, overwrite=False), ["--output_dir", "not empty", "--overwrite_output_dir"],
        id="cls-output-dir-not-empty"),
    row(CLS, cls(missing_label_column), ["train.jsonl", "no column 'label'", "--label_column"],
        id="cls-missing-column"),
    row(CLS, cls(empty_text_row), ["train.jsonl", "row 3", "'text'"], id="cls-empty-text-row"),
    row(CLS, cls(None, unknown_validation_label), ["dev.jsonl", "row 2", "'weather'"],
        id="cls-unknown-validation-label"),
    row(CLS, cls(single_label), ["train.jsonl", "'animal'", "at least two"], id="cls-single-label"),
    # finetune_qa
    row(QA, qa(None, model=False), ["--model_name_or_path", "required"], id="qa-no-model-path"),
    row(QA, qa(None, "--model_name_or_path", "./nowhere/model"), ["--model_name_or_path", "nowhere"],
        id="qa-model-path-not-found"),
    row(QA, qa(None, "--max_seq_length", "0"), ["--max_seq_length", "got 0"], id="qa-max-seq-length-0"),
    row(QA, qa(None, "--doc_stride", "64"), ["--doc_stride", "--max_seq_length"], id="qa-stride-not-below-length"),
    row(QA, qa(None, "--n_best_size", "0"), ["--n_best_size", "got 0"], id="qa-n-best-0"),
    row(QA, qa(answer_not_at_start), ["train.jsonl", "id 'q4'", "answer_start"], id="qa-answer-not-at-start"),
    row(QA, qa(all_answers_too_long), ["train.jsonl", "--max_seq_length", "--doc_stride"],
        id="qa-all-answers-longer-than-the-window", how=SUBPROCESS),
    # finetune_image_classification
    row(IMG, img(lambda d: _image_folder(d, ["cat"]), "--from_scratch"), ["one class", "'cat'", "images",
        "at least two"], id="image-single-class", how=SUBPROCESS),
    row(IMG, img(None), ["--model_name_or_path", "--from_scratch"], id="image-no-model"),
    row(IMG, img(None, "--from_scratch", "--patch_size", "0"), ["--patch_size", "got 0"],
        id="image-patch-size-0"),
    row(IMG, img(None, "--from_scratch", "--per_device_train_batch_size", "-4"),
        ["--per_device_train_batch_size", "got -4"], id="image-negative-batch-size"),
]


@pytest.mark.parametrize("script, build, culprits, how", ROWS)
def test_bad_input_is_one_error_line_and_touches_nothing(script, build, culprits, how, request, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("HFSSL_DEBUG", "0")  # the traceback is shown only when asked for
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run's result")  # must survive whatever the row does
    model = request.getfixturevalue("tiny_bert") if script in (CLS, QA) else None
    args = build(data, out, model)
    before_out, before_data = snapshot(out), snapshot(data)
    if how == SUBPROCESS:
        proc = run_recipe(script, *args, cwd=tmp_path, timeout=240)
    else:
        proc = run_in_process(script, args, capsys)
    last = assert_user_error(proc, *culprits)
    assert sum(line.startswith("error:") for line in proc.stderr.splitlines()) == 1, proc.stderr[-2000:]
    assert len(last) < 1000  # one readable line, not a dump of a file
    assert snapshot(out) == before_out and snapshot(data) == before_data
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left
