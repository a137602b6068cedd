"""Tests for hfssl.text.masking against brute-force Python versions of Google's BERT masking rules."""

from __future__ import annotations

import io
import math
import random

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import BertTokenizer, HfArgumentParser

from hfssl.text.masking import MaskingArgs, MLMCollator, greedy_word_fill

HEADS = [f"w{i}" for i in range(40)] + ["the", "cat", "play", "run", "dog"]
PIECES = [f"##p{i}" for i in range(15)] + ["##ing", "##s"]


@pytest.fixture(scope="module")
def tok():
    # Specials deliberately not at ids 0..4, so nothing may assume "special = small id".
    tokens = HEADS[:10] + ["[PAD]", "[CLS]"] + HEADS[10:] + ["[UNK]", "[SEP]"] + PIECES + ["[MASK]"]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=512)


def make_features(tok, rng: random.Random, n: int, lo: int, hi: int, p_cont=0.35, p_unk=0.03) -> list[dict]:
    """Random [CLS] A [SEP] B [SEP] sequences of heads, ## pieces and the odd [UNK]."""
    vocab = tok.get_vocab()
    heads, pieces = [vocab[t] for t in HEADS], [vocab[t] for t in PIECES]
    feats = []
    for _ in range(n):
        body, prev_word = [], False
        for _ in range(rng.randint(lo, hi)):
            if prev_word and rng.random() < p_cont:
                body.append(rng.choice(pieces))
            elif rng.random() < p_unk:
                body.append(tok.unk_token_id)
                prev_word = False
                continue
            else:
                body.append(rng.choice(heads))
            prev_word = True
        cut = rng.randint(1, len(body) - 1)
        ids = [tok.cls_token_id, *body[:cut], tok.sep_token_id, *body[cut:], tok.sep_token_id]
        types = [0] * (cut + 2) + [1] * (len(body) - cut + 1)
        feats.append({"input_ids": ids, "token_type_ids": types, "next_sentence_label": rng.randint(0, 1)})
    return feats


def google_count(ids: list[int], special: set[int], p: float, cap: int | None) -> int:
    """Brute force of the count rule, one sequence at a time (Python 3 round)."""
    n = max(1, int(round(len(ids) * p)))
    if cap is not None:
        n = min(cap, n)
    return min(n, sum(i not in special for i in ids))


def google_words(ids: list[int], special: set[int], vocab_inv: dict[int, str]) -> list[list[int]]:
    """Brute force word grouping: a candidate plus the following ## candidates."""
    words = []
    for t, i in enumerate(ids):
        if i in special:
            continue
        if vocab_inv[i].startswith("##") and t > 0 and ids[t - 1] not in special and words:
            words[-1].append(t)
        else:
            words.append([t])
    return words


def google_walk(lengths: list[int], budget: int) -> list[bool]:
    """Google's loop over shuffled words: skip a word that would overflow, go on with the next."""
    taken, count = [], 0
    for n in lengths:
        ok = n > 0 and count < budget and count + n <= budget
        taken.append(ok)
        count += n if ok else 0
    return taken


def test_padding_shapes_and_passthrough(tok):
    feats = make_features(tok, random.Random(0), 3, 3, 9)
    batch = MLMCollator(tok, seed=0)(feats)
    lengths = [len(f["input_ids"]) for f in feats]
    T = math.ceil(max(lengths) / 8) * 8
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert batch[key].shape == (3, T) and batch[key].dtype == torch.long
    for i, (f, n) in enumerate(zip(feats, lengths)):
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (T - n)
        assert batch["input_ids"][i, n:].eq(tok.pad_token_id).all()
        assert batch["token_type_ids"][i].tolist() == f["token_type_ids"] + [0] * (T - n)
        assert batch["labels"][i, n:].eq(-100).all()
    assert batch["next_sentence_label"].tolist() == [f["next_sentence_label"] for f in feats]
    plain = [{"input_ids": f["input_ids"]} for f in feats]
    b2 = MLMCollator(tok, pad_to_multiple_of=None, seed=0)(plain)
    assert b2["input_ids"].shape == (3, max(lengths)) and "next_sentence_label" not in b2
    assert b2["token_type_ids"].eq(0).all()
    # tensors (datasets' torch format) collate exactly like lists
    as_tensors = [{k: torch.tensor(v) for k, v in f.items()} for f in feats]
    b3, b4 = MLMCollator(tok, seed=0)(as_tensors), MLMCollator(tok, seed=0)(feats)
    assert all(torch.equal(b3[k], b4[k]) for k in b4)


@pytest.mark.parametrize("cap", [20, 5, None])
def test_choice_matches_bruteforce_count_and_labels(tok, cap):
    rng = random.Random(1)
    special = set(tok.all_special_ids)
    coll = MLMCollator(tok, max_predictions_per_seq=cap, seed=1)
    chosen_total = real_total = 0
    for _ in range(30):
        feats = make_features(tok, rng, 16, 2, 150)
        batch = coll(feats)
        for i, f in enumerate(feats):
            ids = f["input_ids"]
            n = len(ids)
            chosen = batch["labels"][i] != -100
            assert int(chosen.sum()) == google_count(ids, special, 0.15, cap)
            pos = chosen.nonzero().flatten().tolist()
            assert all(t < n and ids[t] not in special for t in pos)  # never special, never padding
            assert batch["labels"][i, pos].tolist() == [ids[t] for t in pos]  # original ids
            keep = [t for t in range(n) if t not in set(pos)]
            assert batch["input_ids"][i, keep].tolist() == [ids[t] for t in keep]
            chosen_total += len(pos)
            real_total += n
    if cap is None:
        assert abs(chosen_total / real_total - 0.15) < 0.01


def test_positions_chosen_uniformly(tok):
    """Every candidate of a sequence is chosen with probability num_to_predict / n_candidates."""
    special = set(tok.all_special_ids)
    feat = make_features(tok, random.Random(2), 1, 40, 40)[0]
    ids = feat["input_ids"]
    coll = MLMCollator(tok, seed=2)
    counts = torch.zeros(len(ids))
    draws = 64 * 60
    for _ in range(60):
        counts += (coll([feat] * 64)["labels"][:, : len(ids)] != -100).sum(0)
    cand = torch.tensor([i not in special for i in ids])
    p = google_count(ids, special, 0.15, 20) / int(cand.sum())
    assert counts[~cand].sum() == 0
    sigma = math.sqrt(p * (1 - p) / draws)
    assert (counts[cand] / draws - p).abs().max() < 5 * sigma


@pytest.mark.parametrize("p_mask,p_random", [(0.8, 0.1), (0.5, 0.4)])
def test_replacement_split(tok, p_mask, p_random):
    rng = random.Random(3)
    special = set(tok.all_special_ids)
    n_replaceable = len(tok.get_vocab()) - len(special)
    coll = MLMCollator(tok, mask_replace_prob=p_mask, random_replace_prob=p_random, seed=3)
    n_mask = n_same = n_other = 0
    replaced = set()
    for _ in range(20):
        batch = coll(make_features(tok, rng, 32, 60, 120))
        chosen = batch["labels"] != -100
        got, orig = batch["input_ids"][chosen], batch["labels"][chosen]
        n_mask += int((got == tok.mask_token_id).sum())
        n_same += int((got == orig).sum())
        other = got[(got != tok.mask_token_id) & (got != orig)]
        n_other += len(other)
        replaced |= set(other.tolist())
    n = n_mask + n_same + n_other
    # a random replacement equal to the original (prob 1/|V|) reads as "unchanged"
    expected = {
        "mask": p_mask,
        "same": 1 - p_mask - p_random + p_random / n_replaceable,
        "other": p_random * (1 - 1 / n_replaceable),
    }
    for name, k in (("mask", n_mask), ("same", n_same), ("other", n_other)):
        e = expected[name]
        assert abs(k / n - e) < 5 * math.sqrt(e * (1 - e) / n), (name, k / n, e)
    assert not replaced & special
    assert len(replaced) >= n_replaceable - 1  # uniform over the whole non-special vocabulary


def test_greedy_word_fill_matches_google_walk():
    g = torch.Generator().manual_seed(4)
    lengths = torch.randint(0, 5, (300, 24), generator=g)  # 0 = no word
    budget = torch.randint(0, 25, (300,), generator=g)
    taken = greedy_word_fill(lengths, budget)
    for row, b, t in zip(lengths.tolist(), budget.tolist(), taken.tolist()):
        assert t == google_walk(row, b)


def check_whole_words(tok, feats, batch, p, cap):
    special = set(tok.all_special_ids)
    inv = {i: t for t, i in tok.get_vocab().items()}
    multi_chosen = 0
    for i, f in enumerate(feats):
        chosen = (batch["labels"][i] != -100).tolist()
        words = google_words(f["input_ids"], special, inv)
        budget = google_count(f["input_ids"], special, p, cap)
        flags = [[chosen[t] for t in w] for w in words]
        assert all(all(x) or not any(x) for x in flags)  # no word partly chosen
        count = sum(chosen)
        assert count == sum(len(w) for w, x in zip(words, flags) if x[0]) and count <= budget
        # Google's walk leaves unchosen only words that no longer fit
        assert all(len(w) > budget - count for w, x in zip(words, flags) if not x[0])
        multi_chosen += sum(len(w) > 1 and x[0] for w, x in zip(words, flags))
    return multi_chosen


def test_whole_word_masking_groups_and_counts(tok):
    rng = random.Random(5)
    coll = MLMCollator(tok, whole_word_mask=True, seed=5)
    multi, mixed = 0, 0
    for _ in range(20):
        feats = make_features(tok, rng, 16, 5, 140)
        batch = coll(feats)
        multi += check_whole_words(tok, feats, batch, 0.15, 20)
        # 80/10/10 is decided per position (as Google): a chosen word may be partly [MASK]
        for i in range(len(feats)):
            got = batch["input_ids"][i][batch["labels"][i] != -100]
            mixed += int(0 < int((got == tok.mask_token_id).sum()) < len(got))
    assert multi > 50 and mixed > 0
    # without ## pieces every word is one token: exactly the count rule
    feats = make_features(tok, rng, 32, 5, 140, p_cont=0.0)
    labels = coll(feats)["labels"]
    special = set(tok.all_special_ids)
    assert [int((r != -100).sum()) for r in labels] == [
        google_count(f["input_ids"], special, 0.15, 20) for f in feats
    ]


def test_whole_word_selection_frequencies_match_google(tok):
    """Per-word selection frequency vs a brute-force simulation of Google's shuffle-and-walk."""
    special = set(tok.all_special_ids)
    inv = {i: t for t, i in tok.get_vocab().items()}
    feat = make_features(tok, random.Random(6), 1, 24, 24, p_cont=0.5)[0]
    words = google_words(feat["input_ids"], special, inv)
    budget = google_count(feat["input_ids"], special, 0.15, 20)
    draws, rng = 64 * 50, random.Random(6)
    ref = [0] * len(words)
    for _ in range(draws):
        order = list(range(len(words)))
        rng.shuffle(order)
        for w, ok in zip(order, google_walk([len(words[w]) for w in order], budget)):
            ref[w] += ok
    coll = MLMCollator(tok, whole_word_mask=True, seed=6)
    got = torch.zeros(len(words))
    for _ in range(50):
        chosen = coll([feat] * 64)["labels"] != -100  # (64, T)
        got += torch.stack([chosen[:, w[0]] for w in words], 1).sum(0)
    for a, b in zip(got.tolist(), ref):
        p = (a + b) / (2 * draws)
        assert abs(a - b) / draws <= 5 * math.sqrt(max(p * (1 - p), 1e-4) * 2 / draws)


def test_count_rule_matches_python_round(tok):
    coll = MLMCollator(tok, max_predictions_per_seq=None)
    for p in (0.15, 0.1, 0.2, 0.3, 0.45, 0.33, 0.07):
        coll.args.mlm_probability = p
        lengths = torch.arange(1, 700)
        mask = (torch.arange(700)[None, :] < lengths[:, None]).long()  # (699, 700)
        got = coll.num_to_predict(mask, mask.bool()).tolist()
        assert got == [google_count([0] * n, set(), p, None) for n in lengths.tolist()], p
    few = mask.bool() & (torch.arange(700) < 3)  # only 3 candidates
    assert coll.num_to_predict(mask, few).max() == 3


def test_continuation_after_special_starts_a_word(tok):
    """A ## piece after [SEP] or [UNK] is its own word, chosen apart from the word before it."""
    v = tok.get_vocab()
    ids = [tok.cls_token_id, v["cat"], tok.sep_token_id, v["##s"], tok.unk_token_id, v["##ing"], tok.sep_token_id]
    coll = MLMCollator(tok, whole_word_mask=True, seed=13)  # 7 tokens: one prediction
    chosen = coll([{"input_ids": ids}] * 300)["labels"][:, : len(ids)] != -100  # (300, 7)
    assert chosen.sum(1).eq(1).all()
    freq = chosen.float().mean(0)[[1, 3, 5]]  # cat, ##s, ##ing: one third each
    assert (freq - 1 / 3).abs().max() < 5 * math.sqrt(2 / 9 / 300)


def test_real_tokenizer_whole_words(tok):
    enc = [dict(tok("the cat playing runs", "dog plays")), dict(tok("cats run the dog", "the dogs playing"))]
    coll = MLMCollator(tok, whole_word_mask=True, mlm_probability=0.5, seed=7)
    for _ in range(30):
        check_whole_words(tok, enc, coll(enc), 0.5, 20)


def test_seed_determinism_and_state_roundtrip(tok):
    feats = make_features(tok, random.Random(8), 8, 10, 60)
    a, b = MLMCollator(tok, whole_word_mask=True, seed=8), MLMCollator(tok, whole_word_mask=True, seed=8)
    first, second = a(feats), b(feats)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["labels"], MLMCollator(tok, whole_word_mask=True, seed=9)(feats)["labels"])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # what accelerate's register_for_checkpointing does
    expected = a(feats)
    resumed = MLMCollator(tok, whole_word_mask=True, seed=123)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    got = resumed(feats)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert not torch.equal(expected["labels"], first["labels"])
    assert MLMCollator(tok).state_dict() == {}


def test_accelerate_checkpoint_resumes_masking(tok, tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    feats = make_features(tok, random.Random(14), 8, 10, 60)
    accelerator = Accelerator(cpu=True)
    coll = MLMCollator(tok, seed=14)
    accelerator.register_for_checkpointing(coll)
    coll(feats)
    accelerator.save_state(str(tmp_path / "ckpt"))
    expected = coll(feats)
    coll(feats)  # the run goes on, then resumes from the checkpoint
    accelerator.load_state(str(tmp_path / "ckpt"))
    got = coll(feats)
    AcceleratorState._reset_state(reset_partial_state=True)  # leave no singleton for other tests
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_mask_with_external_generator_equals_call(tok):
    feats = make_features(tok, random.Random(9), 4, 10, 60)
    coll = MLMCollator(tok, seed=10)
    out = MLMCollator(tok).mask(coll.pad(feats), generator=torch.Generator().manual_seed(10))
    ref = coll(feats)
    assert all(torch.equal(out[k], ref[k]) for k in ref)


def test_workers_get_distinct_streams(tok):
    feat = make_features(tok, random.Random(11), 1, 100, 100)[0]
    loader = DataLoader([feat] * 16, batch_size=8, num_workers=2, collate_fn=MLMCollator(tok, seed=11))
    first, second = (b["labels"] for b in loader)  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(first, second)


def test_args_validation_and_from_args(tok):
    for bad in (
        {"mlm_probability": 0.0},
        {"max_predictions_per_seq": 0},
        {"mask_replace_prob": 0.95, "random_replace_prob": 0.1},
        {"random_replace_prob": -0.1},
        {"pad_to_multiple_of": 0},
    ):
        with pytest.raises(ValueError):
            MaskingArgs(**bad)
    (args,) = HfArgumentParser(MaskingArgs).parse_args_into_dataclasses(
        ["--max_predictions_per_seq", "3", "--whole_word_mask", "true", "--pad_to_multiple_of", "16"]
    )
    coll = MLMCollator.from_args(tok, args, seed=0)
    assert coll.args == args
    batch = coll(make_features(tok, random.Random(12), 4, 100, 100))
    assert batch["input_ids"].shape[1] % 16 == 0 and (batch["labels"] != -100).sum(1).max() <= 3


def test_bad_input_names_the_row(tok):
    coll = MLMCollator(tok, seed=0)
    good = {"input_ids": [tok.cls_token_id, 12, tok.sep_token_id], "next_sentence_label": 0}
    with pytest.raises(ValueError, match="feature 1: empty"):
        coll([good, {"input_ids": []}])
    with pytest.raises(ValueError, match="feature 1: input_ids outside"):
        coll([good, {"input_ids": [len(tok) + 5]}])
    with pytest.raises(ValueError, match="feature 0 lacks 'next_sentence_label'"):
        coll([{"input_ids": [12]}, good])
    with pytest.raises(ValueError, match="feature 0: 2 token_type_ids"):
        coll([{"input_ids": [12, 13, 14], "token_type_ids": [0, 0]}])


def test_full_rows_drop_the_all_ones_mask_and_the_model_agrees(tok):
    """Packed rows have no padding: mask() drops the all-ones attention mask (SDPA's mask-free path) and the
    loss is exactly the one computed with the mask; a padded batch keeps its mask."""
    from hfssl.methods.bert import BertPretrainer
    from hfssl.methods.bert_config import BertModelArgs

    rng = random.Random(3)
    ids = [[tok.cls_token_id] + [rng.randrange(5, len(tok)) for _ in range(14)] + [tok.sep_token_id] for _ in range(4)]
    collator = MLMCollator(tok, seed=0)
    padded = collator.pad([{"input_ids": r} for r in ids])
    assert padded["no_padding"] is True and padded["attention_mask"].all()
    full = collator.mask(padded, torch.Generator().manual_seed(0))
    assert "attention_mask" not in full and "no_padding" not in full
    torch.manual_seed(0)
    model = BertPretrainer.from_args(BertModelArgs(preset="tiny"), len(tok), tok.pad_token_id, nsp=False).eval()
    with torch.no_grad():
        without = model(**full).loss
        with_mask = model(**full, attention_mask=torch.ones_like(full["input_ids"])).loss
    torch.testing.assert_close(without, with_mask, rtol=1e-6, atol=1e-6)
    ragged = collator.mask(collator.pad([{"input_ids": r[: 8 + i]} for i, r in enumerate(ids)]),
                           torch.Generator().manual_seed(0))
    assert "attention_mask" in ragged and not ragged["attention_mask"].all()
