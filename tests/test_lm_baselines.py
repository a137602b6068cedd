"""benchmarks/gain/lm_baselines.py: the unigram / bigram baselines of recipes/gpt_clm.py against brute-force
computations from their definitions on a tiny corpus, and the token -> byte mapping the byte models use."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks/gain"))

import lm_baselines as lmb  # noqa: E402

V = 6  # symbols 0..5; 5 never occurs in training
TRAIN = [np.array([0, 1, 2, 1, 2, 3, 0, 1, 1, 2]), np.array([3, 3, 0, 2, 4, 1, 2])]


def brute_discount(counts) -> float:
    n1, n2 = sum(1 for c in counts if c == 1), sum(1 for c in counts if c == 2)
    d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.75
    return d if 0 < d < 1 else 0.75


def brute_bigram(sequences, v):
    """p(w | v) for every (v, w), written out from the definitions with Python loops."""
    pairs = Counter((int(a), int(b)) for s in sequences for a, b in zip(s[:-1], s[1:]))
    d = brute_discount(pairs.values())
    continuation = {w: sum(1 for (_, b) in pairs if b == w) for w in range(v)}
    d1 = brute_discount([c for c in continuation.values() if c > 0])
    seen_types = sum(1 for c in continuation.values() if c > 0)
    p_cont = {w: (max(continuation[w] - d1, 0) + d1 * seen_types / v) / len(pairs) for w in range(v)}
    table = {}
    for a in range(v):
        c_a = sum(c for (x, _), c in pairs.items() if x == a)
        followers = sum(1 for (x, _) in pairs if x == a)
        for w in range(v):
            table[a, w] = p_cont[w] if c_a == 0 else \
                (max(pairs.get((a, w), 0) - d, 0) + d * followers * p_cont[w]) / c_a
    return table


def test_unigram_is_add_k():
    counts = Counter(int(t) for s in TRAIN for t in s)
    n = sum(counts.values())
    for k in (1.0, 0.5):
        p = lmb.unigram_addk(TRAIN, V, k)
        assert p == pytest.approx([(counts.get(w, 0) + k) / (n + k * V) for w in range(V)])
        assert p.sum() == pytest.approx(1.0)


def test_bigram_matches_the_definition_and_sums_to_one():
    model = lmb.BigramKN(TRAIN, V)
    brute = brute_bigram(TRAIN, V)
    prev, nxt = np.divmod(np.arange(V * V), V)
    assert model.prob(prev, nxt) == pytest.approx([brute[a, w] for a, w in zip(prev, nxt)], rel=1e-12)
    assert model.prob(prev, nxt).reshape(V, V).sum(1) == pytest.approx(np.ones(V))  # context 5 unseen: p_cont
    assert (model.prob(prev, nxt) > 0).all()  # never seen after anything, still possible
    assert model.p_cont.sum() == pytest.approx(1.0)


def test_bits_per_byte_is_nats_over_ln2_bytes_of_the_predicted_symbols():
    rows = [np.array([1, 2, 3, 0, 5]), np.array([2, 4, 1, 1, 0])]
    first = [1, 2]  # the second row's first two symbols are context only
    weight = np.array([0, 1, 2, 3, 1, 2], float)  # symbol 0 (an eos) stands for no bytes
    logp = np.log(lmb.unigram_addk(TRAIN, V, 1.0))
    model = lmb.BigramKN(TRAIN, V)
    brute = brute_bigram(TRAIN, V)
    totals = lmb.score(rows, first, logp, model, weight)
    predicted = [(int(r[i - 1]), int(r[i])) for r, f in zip(rows, first) for i in range(f, len(r))]
    n_bytes = sum(weight[w] for _, w in predicted)
    uni = -sum(logp[w] for _, w in predicted)
    bi = -sum(math.log(brute[a, w]) for a, w in predicted)
    assert totals["unigram"]["predicted"] == len(predicted) == 7
    assert lmb.bits_per_byte(totals["unigram"]) == pytest.approx(uni / (math.log(2) * n_bytes))
    assert lmb.bits_per_byte(totals["bigram"]) == pytest.approx(bi / (math.log(2) * n_bytes))


def test_tokens_map_to_the_bytes_they_stand_for():
    from hfssl.text.bpe import END_OF_TEXT, token_byte_lengths, train_bpe

    texts = ["It is a truth universally acknowledged, café au lait.", "Ünïcode – and the truth again."] * 20
    tok = train_bpe(texts, vocab_size=300, min_frequency=2, show_progress=False)
    from tokenizers import pre_tokenizers

    assert set(lmb.bytes_to_unicode().values()) == set(pre_tokenizers.ByteLevel.alphabet())
    symbols = lmb.token_symbols(tok)
    assert [len(s) if s[0] != lmb.EOS_BYTE else 0 for s in symbols] == token_byte_lengths(tok).tolist()
    eos = tok.convert_tokens_to_ids(END_OF_TEXT)
    ids = np.array(tok(texts[1])["input_ids"] + [eos] + tok(texts[0])["input_ids"])
    got = lmb.to_bytes(ids, symbols)
    cut = len(texts[1].encode("utf-8"))
    assert bytes(got[:cut].astype(np.uint8)) == texts[1].encode("utf-8")
    assert got[cut] == lmb.EOS_BYTE and bytes(got[cut + 1:].astype(np.uint8)) == texts[0].encode("utf-8")
