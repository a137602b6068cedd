"""hfssl.text.tokenizer: WordPiece training checked against transformers' reference BERT tokenizers."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer, BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from hfssl.text.tokenizer import (
    SPECIAL_TOKENS,
    TokenizerArgs,
    get_or_train_tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_wordpiece,
)

WORDS = ("the quick brown fox jumps over lazy dog Emma Woodhouse handsome clever rich comfortable home "
         "happy disposition seemed unite blessings existence lived nearly twenty years world little "
         "distress vex her Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u4e2d\u6587 Mr Knightley sighed").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic sentences: real words plus random letter strings (so there is plenty to merge)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) if rng.random() < 0.7 else
                 "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
                 for _ in range(rng.randint(4, 12))]
        out.append(" ".join(words) + rng.choice([".", "!", "?", ", said he."]))
    return out


@pytest.fixture(scope="module")
def uncased():
    return train_wordpiece(corpus(), vocab_size=300, show_progress=False)


@pytest.fixture(scope="module")
def cased():
    return train_wordpiece(corpus(), vocab_size=300, lowercase=False, show_progress=False)


PAIRS = [("Emma Woodhouse, handsome!", "Mr. Knightley sighed."), ("The CAF\u00c9 is na\u00efve.", "\u4e2d\u6587 ok"),
         ("xyzzy qwrtp", "unseen \u2603 symbol"), ("a", "b")]


def test_special_tokens_and_vocab_size(uncased):
    assert [uncased.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (uncased.pad_token_id, uncased.unk_token_id, uncased.cls_token_id, uncased.sep_token_id,
            uncased.mask_token_id) == (0, 1, 2, 3, 4)
    assert len(uncased) == 300 and len(uncased.get_vocab()) == 300
    assert any(t.startswith("##") for t in uncased.get_vocab())
    small = train_wordpiece(corpus(), vocab_size=120, show_progress=False)
    assert len(small) == 120


@pytest.mark.parametrize("lowercase", [True, False])
def test_saved_folder_matches_the_reference_bert_tokenizer(tmp_path, uncased, cased, lowercase):
    tokenizer = uncased if lowercase else cased
    folder = save_tokenizer(tokenizer, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert type(loaded).__name__ == "BertTokenizer"
    assert loaded.model_max_length == 128 and loaded.do_lower_case is lowercase
    vocab_lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocab_lines == sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    # the original pure-Python BERT tokenizer, built from vocab.txt alone
    reference = BertTokenizerLegacy(vocab_file=str(folder / "vocab.txt"), do_lower_case=lowercase)
    for a, b in PAIRS:
        encoded = loaded(a, b)
        ids_a = reference.convert_tokens_to_ids(reference.tokenize(a))
        ids_b = reference.convert_tokens_to_ids(reference.tokenize(b))
        assert encoded["input_ids"] == [2, *ids_a, 3, *ids_b, 3]
        assert encoded["token_type_ids"] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
        assert loaded(a)["input_ids"] == [2, *ids_a, 3]
        assert tokenizer(a, b)["input_ids"] == encoded["input_ids"]  # the in-memory one agrees
    # transformers' own BertTokenizer from the written vocabulary agrees too
    from_vocab = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=lowercase)
    assert all(from_vocab(a, b)["input_ids"] == loaded(a, b)["input_ids"] for a, b in PAIRS)


def test_pair_layout_by_token():
    tokenizer = train_wordpiece(["a b c a b c"] * 5, vocab_size=50, show_progress=False)
    encoded = tokenizer("a", "b")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["[CLS]", "a", "[SEP]", "b", "[SEP]"]
    assert encoded["token_type_ids"] == [0, 0, 0, 1, 1]


def test_lowercase_on_and_off(uncased, cased):
    assert uncased("HANDSOME Caf\u00e9")["input_ids"] == uncased("handsome cafe")["input_ids"]
    assert cased("HANDSOME")["input_ids"] != cased("handsome")["input_ids"]
    assert "Emma" in cased.get_vocab() and "Emma" not in uncased.get_vocab()
    assert cased.tokenize("Emma") == ["Emma"] and uncased.tokenize("Emma") == ["emma"]


def test_wordpieces_decode_back(uncased):
    text = "the quick brownish foxes jumped over qwzx lazily"
    tokens = uncased.tokenize(text)
    assert any(t.startswith("##") for t in tokens) and "[UNK]" not in tokens
    assert uncased.decode(uncased(text, add_special_tokens=False)["input_ids"]) == text


def test_every_sentence_of_a_dataset_reaches_the_trainer():
    # With room to spare, WordPiece keeps merging while a pair occurs >= min_frequency times, so every
    # word seen at least twice ends up whole in the vocabulary. (Ties make the exact ids vary from run
    # to run: huggingface/tokenizers#1794, so vocabularies are not compared id for id.)
    sentences = [s.lower().replace(",", "") for s in corpus(300, seed=1)]
    sentences[0] += " firstmarker firstmarker"
    sentences[-1] += " lastmarker lastmarker"
    documents = datasets.Dataset.from_dict({"sentences": [sentences[i:i + 7] for i in range(0, 300, 7)]})
    counts = Counter(w for s in sentences for w in s.rstrip(".!?").split() if all(c.isascii() for c in w))
    expected = {w for w, c in counts.items() if c >= 2}
    assert {"firstmarker", "lastmarker"} <= expected
    for texts in (documents, sentences):
        vocab = train_wordpiece(texts, vocab_size=20_000, batch_size=16, show_progress=False).get_vocab()
        assert expected <= set(vocab), sorted(expected - set(vocab))[:10]


def test_get_or_train_and_load_errors(tmp_path, uncased):
    folder = save_tokenizer(uncased, tmp_path / "tok")
    reused = get_or_train_tokenizer(TokenizerArgs(tokenizer_name_or_path=str(folder)), None, 64)
    assert reused.get_vocab() == uncased.get_vocab() and reused.model_max_length == 64
    assert get_or_train_tokenizer(TokenizerArgs(), None, 64, reuse=folder).get_vocab() == uncased.get_vocab()
    documents = datasets.Dataset.from_dict({"sentences": [corpus(50)]})
    trained = get_or_train_tokenizer(TokenizerArgs(vocab_size=100), documents, 64)
    assert len(trained) == 100
    with pytest.raises(FileNotFoundError, match="missing_tok"):
        load_tokenizer(tmp_path / "missing_tok")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="no tokenizer path"):
        get_or_train_tokenizer(TokenizerArgs(), None, 64)


def test_tokenizer_args_validation():
    with pytest.raises(ValueError, match="--vocab_size must be above the 5 special tokens"):
        TokenizerArgs(vocab_size=5)
    with pytest.raises(ValueError, match="--min_frequency must be at least 1, got 0"):
        TokenizerArgs(min_frequency=0)
    with pytest.raises(ValueError, match="--model_max_length must be at least 2"):
        TokenizerArgs(model_max_length=1)
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(["a b"], vocab_size=3, show_progress=False)


def _jsonl_corpus(path, n_docs: int) -> None:
    """Documents whose marker words tell which document a vocabulary saw (``docmarkNN`` is in document NN only)."""
    rng = random.Random(0)
    words = ["river", "window", "garden", "letter", "morning", "evening", "carriage", "sister", "village", "kindness"]
    with path.open("w") as f:
        for d in range(n_docs):
            body = " ".join(f"{' '.join(rng.choices(words, k=8))} docmark{d:02d} docmark{d:02d}." for _ in range(3))
            f.write(json.dumps({"text": body}) + "\n")


def test_corpus_tokenizer_samples_documents_evenly_and_reuses_the_vocabulary_of_the_same_corpus(tmp_path, monkeypatch):
    from hfssl.text import tokenizer as tok
    from hfssl.text.corpus import CorpusArgs, load_corpus

    _jsonl_corpus(tmp_path / "c.jsonl", 40)
    corpus_args = CorpusArgs(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "cache"))
    documents, _ = load_corpus(corpus_args)
    joined = sum(sum(len(x.encode()) for x in s) for s in documents["sentences"])  # brute force: every sentence
    assert tok.text_megabytes(documents) == pytest.approx(joined / 1e6)  # 40 documents: all are measured

    seen = []
    real_train = tok.train_wordpiece

    def recording_train(sample, **kw):
        seen.append([int(re.search(r"docmark(\d+)", " ".join(s)).group(1)) for s in sample["sentences"]])
        return real_train(sample, **kw, show_progress=False)

    monkeypatch.setattr(tok, "train_wordpiece", recording_train)
    args = tok.TokenizerArgs(vocab_size=2000, tokenizer_train_mb=joined / 1e6 / 4)  # about a quarter of the text
    logs = []
    first = tok.corpus_tokenizer(args, documents, 64, log=logs.append)
    expected = np.linspace(0, 39, 10).astype(int)  # 10 of 40 documents, spread over the whole corpus
    assert len(seen) == 1 and seen[0] == list(expected)
    assert "training on 10 of 40 documents" in logs[0]
    vocab = first.get_vocab()
    assert {f"docmark{d:02d}" for d in expected} <= set(vocab) and "docmark01" not in vocab

    again, _ = load_corpus(corpus_args)  # the same corpus read again from its cache: no training
    reused = tok.corpus_tokenizer(args, again, 64, log=logs.append)
    assert len(seen) == 1 and reused.get_vocab() == vocab and "trained on this corpus before" in logs[-1]
    tok.corpus_tokenizer(tok.TokenizerArgs(vocab_size=2001, tokenizer_train_mb=args.tokenizer_train_mb), again, 64,
                         log=logs.append)  # other settings: trained again
    tok.corpus_tokenizer(tok.TokenizerArgs(vocab_size=2000, tokenizer_train_mb=0), again, 64, log=logs.append)
    assert len(seen) == 3 and len(seen[2]) == 40  # 0: all of the text
    _jsonl_corpus(tmp_path / "c.jsonl", 41)  # another corpus in the same file: trained again
    tok.corpus_tokenizer(args, load_corpus(corpus_args)[0], 64, log=logs.append)
    assert len(seen) == 4


@pytest.mark.parametrize("total, n", [(40, 10), (1000, 1000), (300_000, 24_000), (300_000, 24_123), (7, 1), (1000, 450)])
def test_sample_runs_spreads_whole_runs_of_documents_over_the_corpus(total, n):
    from hfssl.text import tokenizer as tok

    picks = tok.sample_runs(total, n)
    assert len(set(picks.tolist())) == len(picks) and np.all(np.diff(picks) > 0)  # distinct, in corpus order
    assert len(picks) == n and picks[0] == 0
    runs = np.split(picks, np.flatnonzero(np.diff(picks) > 1) + 1)
    assert len(runs) <= 200 and len({len(r) for r in runs[:-1]}) <= 1  # equal runs of consecutive documents
    assert n < 2 or total - 1 - picks[-1] <= len(runs[0])  # reaching the end of the corpus
    gaps = [b[0] - a[0] for a, b in zip(runs, runs[1:])]
    assert not gaps or max(gaps) - min(gaps) <= 1  # evenly spaced


def test_file_order_reads_a_shuffled_split_in_the_order_of_the_file():
    from hfssl.text import tokenizer as tok

    docs = datasets.Dataset.from_dict({"sentences": [[f"doc {i}."] for i in range(1000)]})
    assert tok.file_order(docs).tolist() == list(range(1000))
    train = docs.train_test_split(test_size=0.1, seed=0)["train"]  # shuffled: positions scattered over the rows
    numbers = [int(s[0].split()[1][:-1]) for s in train["sentences"]]
    assert numbers != sorted(numbers)
    ordered = [int(s[0].split()[1][:-1]) for s in train.select(tok.file_order(train))["sentences"]]
    assert ordered == sorted(numbers)  # the same documents, in the file's order
    runs = [int(s[0].split()[1][:-1]) for s in train.select(tok.file_order(train)[tok.sample_runs(900, 400)])["sentences"]]
    assert runs == sorted(runs) and len(set(runs)) == 400


@pytest.mark.parametrize("flag, total, expected", [
    (None, 10.0, 10.0),  # a corpus under 16 MB: all of it
    (None, 126.0, 16.0),  # at least 16 MB
    (None, 1260.0, 126.0),  # a tenth
    (None, 20_000.0, 1000.0),  # at most 1,000 MB
    (0.0, 500.0, 500.0),  # 0: all
    (50.0, 20.0, 20.0), (50.0, 500.0, 50.0),  # a cap
])
def test_sample_megabytes_follows_the_documented_rule(flag, total, expected):
    from hfssl.text.tokenizer import sample_megabytes

    assert sample_megabytes(flag, total) == pytest.approx(expected)


@pytest.mark.parametrize("fraction, lo, hi, expected_docs", [(0.25, 1 / 8, 1 / 2, 10), (0.05, 1 / 8, 1 / 2, 5),
                                                             (0.9, 1 / 8, 1 / 2, 20)])
def test_corpus_tokenizer_default_sample_is_a_bounded_fraction_of_the_text(tmp_path, monkeypatch, fraction, lo, hi,
                                                                           expected_docs):
    from hfssl.text import tokenizer as tok
    from hfssl.text.corpus import CorpusArgs, load_corpus

    _jsonl_corpus(tmp_path / "c.jsonl", 40)
    documents, _ = load_corpus(CorpusArgs(corpus=str(tmp_path / "c.jsonl"), cache_dir=str(tmp_path / "cache")))
    total = tok.text_megabytes(documents)
    # the rule at this corpus's scale: the fraction, within [lo, hi] of the text
    monkeypatch.setattr(tok, "AUTO_SAMPLE_FRACTION", fraction)
    monkeypatch.setattr(tok, "AUTO_SAMPLE_MIN_MB", total * lo)
    monkeypatch.setattr(tok, "AUTO_SAMPLE_MAX_MB", total * hi)
    seen, real_train = [], tok.train_wordpiece

    def recording_train(sample, **kw):
        seen.append(len(sample))
        return real_train(sample, **kw, show_progress=False)

    monkeypatch.setattr(tok, "train_wordpiece", recording_train)
    logs = []
    tok.corpus_tokenizer(tok.TokenizerArgs(vocab_size=500), documents, 64, log=logs.append)
    assert seen == [expected_docs]  # documents are equal in size, so MB and documents are in proportion
    assert f"training on {expected_docs} of 40 documents" in logs[0] and "by default" in logs[0]
