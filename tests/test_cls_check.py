"""hfssl.text.cls_check: the constancy measure against brute-force pair sums, its threshold on vectors of known
structure, and the states it reads from real (tiny, random) transformers models against one row at a time."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hfssl.text.cls_check import (
    SPREAD_THRESHOLD,
    check_cls_state,
    cls_spread,
    first_token_states,
    mean_cosine,
)


def test_spread_and_cosine_equal_brute_force_pair_sums():
    """spread = mean_i ||x_i - mean||^2 / mean_i ||x_i||^2, and mean_i ||x_i - mean||^2 is half the mean squared
    distance over all ordered pairs; the cosine is the mean over distinct pairs."""
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) + 0.7
    n = x.shape[0]
    pairs = sum(float((x[i] - x[j]).pow(2).sum()) for i in range(n) for j in range(n)) / (2 * n * n)
    energy = sum(float(x[i].pow(2).sum()) for i in range(n)) / n
    assert cls_spread(x) == pytest.approx(pairs / energy, rel=1e-6)
    cosines = [float(F.cosine_similarity(x[i], x[j], dim=0)) for i, j in itertools.permutations(range(n), 2)]
    assert mean_cosine(x) == pytest.approx(sum(cosines) / len(cosines), rel=1e-6)


def test_constant_vectors_are_flagged_and_random_ones_are_not():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(64, generator=g) * 3
    constant = base.expand(256, 64)
    assert cls_spread(constant) == 0.0 and cls_spread(torch.zeros(10, 4)) == 0.0
    nearly = base + 0.02 * base.norm() / 8 * torch.randn(256, 64, generator=g)  # variation 2 % of the norm
    random = torch.randn(256, 64, generator=g)
    assert cls_spread(nearly) < SPREAD_THRESHOLD < cls_spread(random)
    assert cls_spread(random) == pytest.approx(1 - 1 / 256, abs=0.02)  # zero-mean: all of it varies
    # scale-free: the same verdict for any unit of the states
    for v in (nearly, random):
        assert cls_spread(1000 * v) == pytest.approx(cls_spread(v), rel=1e-6)
        assert cls_spread(1e-3 * v) == pytest.approx(cls_spread(v), rel=1e-6)
    # LayerNorm-like rows (equal norms, a shared offset): spread tracks 1 - mean cosine
    ln = F.layer_norm(torch.randn(256, 64, generator=g) * 0.5 + base, (64,))
    assert cls_spread(ln) == pytest.approx(1 - mean_cosine(ln), abs=0.01)


def _tiny_bert(seed=0, **kw):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, **kw)
    return BertForPreTraining(config)


def _rows(n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [[2, *torch.randint(5, 50, (int(torch.randint(3, 20, (1,), generator=g)),), generator=g).tolist(), 3]
            for _ in range(n)]


def test_states_equal_one_row_at_a_time_and_masked_rows_are_undone():
    """Padding in batches changes nothing (first token of BERT, last real token of GPT-2), a premasked held-out
    row (input_ids with [MASK] + MLM labels) is read as its original, token types are passed on; the model's
    training mode comes back."""
    from transformers import GPT2Config, GPT2LMHeadModel

    bert = _tiny_bert().train()
    rows = _rows(9)
    types = [[0] * (len(r) // 2) + [1] * (len(r) - len(r) // 2) for r in rows]
    masked = [[4 if i % 3 == 1 else t for i, t in enumerate(r)] for r in rows]
    labels = [[t if i % 3 == 1 else -100 for i, t in enumerate(r)] for r in rows]
    data = Dataset.from_dict({"input_ids": masked, "labels": labels, "token_type_ids": types})
    got = first_token_states(bert, data, batch_size=4)
    assert bert.training and got.shape == (9, 32)
    bert.eval()
    with torch.no_grad():
        want = torch.stack([bert.bert(torch.tensor([r]), token_type_ids=torch.tensor([t])).last_hidden_state[0, 0]
                            for r, t in zip(rows, types)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert first_token_states(bert, data, max_rows=5).shape == (5, 32)

    torch.manual_seed(0)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    got = first_token_states(gpt, [{"input_ids": r} for r in rows], batch_size=4, position="last")
    with torch.no_grad():
        want = torch.stack([gpt.transformer(torch.tensor([r])).last_hidden_state[0, -1] for r in rows])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_real_model_with_a_constant_output_is_flagged_and_a_random_one_is_not(tmp_path):
    """A tiny BERT with large random weights (init std 0.5: attention that mixes the row into [CLS]) is not
    flagged; at BERT's init (std 0.02, attention near uniform and small next to the residual) the [CLS] state is
    its own embedding whatever the row (flagged: what an encoder that never learnt to use [CLS] exports); so is
    the mixing model with its last LayerNorm's gain zeroed (every position outputs that LayerNorm's bias). The
    message and the card note say so."""
    rows = [{"input_ids": r} for r in _rows(64)]
    fine = check_cls_state(_tiny_bert(initializer_range=0.5), rows)
    assert fine.rows == 64 and not fine.constant and fine.spread > 0.2 and fine.note is None
    assert fine.message("out/model").startswith("[CLS] state of out/model over 64 held-out rows")
    fresh = check_cls_state(_tiny_bert(), rows)
    assert fresh.constant and fresh.cosine > 0.999
    model = _tiny_bert(initializer_range=0.5)
    with torch.no_grad():
        norm = model.bert.encoder.layer[-1].output.LayerNorm
        norm.weight.zero_()
        norm.bias.normal_()
    flat = check_cls_state(model, rows, hint="--cls_bow_weight 1")
    assert flat.constant and flat.spread < 1e-6 and flat.cosine == pytest.approx(1.0, abs=1e-6)
    line = flat.message("out/model")
    assert line.startswith("warning: the [CLS] state of out/model is (near) constant over 64 held-out rows (spread ")
    assert "\n" not in line and "a sequence classifier reading [CLS] starts from no signal" in line
    assert line.endswith("a sentence-level loss (--cls_bow_weight 1)") and "(--cls_bow_weight 1)." in flat.note
    assert check_cls_state(model, rows[:1]) is None  # one row: nothing to compare
