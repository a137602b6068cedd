"""NSP instances against a pure-Python port of Google's algorithm and exhaustive invariants.

Most corpora here are built directly as ``tokens``, with every token id unique in the corpus
(id = 5 + global position), so any token says which document and position it came from.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from datasets import Dataset

from hfssl.text import encode, epochs, nsp

CLS, SEP = 2, 3
FIRST_ID = 5  # ids 0..4 are the special tokens


def make_corpus(lengths: list[list[int]]) -> Dataset:
    """Documents of sentences with the given token counts; token id = FIRST_ID + global position."""
    docs, k = [], FIRST_ID
    for doc in lengths:
        starts = np.cumsum([k] + doc)
        docs.append([list(range(a, a + n)) for a, n in zip(starts, doc)])
        k = int(starts[-1])
    return Dataset.from_dict({"tokens": docs})


def random_lengths(seed: int, docs: int, max_sentences: int = 30, max_len: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(1, max_len) for _ in range(rng.randint(1, max_sentences))] for _ in range(docs)]


# ------------------------------------------------------------------ Google's algorithm, ported
def google_document(all_documents, document_index, max_seq_length, short_seq_prob, rng,
                    random_next_prob=0.5, balance=False, debt=None):
    """create_pretraining_data.create_instances_from_document (google-research/bert), list by list.

    Two documented changes: after 10 failed tries at another document take the next one, and the
    optional balance debt (``debt`` a one-element list)."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances, current_chunk, current_length, i = [], [], 0, 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            a_end = 1
            if len(current_chunk) >= 2:
                a_end = rng.randint(1, len(current_chunk) - 1)
            tokens_a = [t for seg in current_chunk[:a_end] for t in seg]
            tokens_b = []
            if len(current_chunk) == 1:
                is_random_next = True
                if balance:
                    debt[0] += 1 - random_next_prob
            else:
                is_random_next = rng.random() < random_next_prob
                if balance and is_random_next and debt[0] >= 0.5:
                    is_random_next, debt[0] = False, debt[0] - 1
            if is_random_next:
                target_b_length = target_seq_length - len(tokens_a)
                for _ in range(10):
                    random_document_index = rng.randint(0, len(all_documents) - 1)
                    if random_document_index != document_index:
                        break
                if random_document_index == document_index:
                    random_document_index = (random_document_index + 1) % len(all_documents)
                random_document = all_documents[random_document_index]
                random_start = rng.randint(0, len(random_document) - 1)
                for j in range(random_start, len(random_document)):
                    tokens_b.extend(random_document[j])
                    if len(tokens_b) >= target_b_length:
                        break
                i -= len(current_chunk) - a_end
            else:
                tokens_b = [t for seg in current_chunk[a_end:] for t in seg]
            while len(tokens_a) + len(tokens_b) > max_num_tokens:  # truncate_seq_pair
                trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                if rng.random() < 0.5:
                    del trunc_tokens[0]
                else:
                    trunc_tokens.pop()
            instances.append((tokens_a, tokens_b, int(is_random_next)))
            current_chunk, current_length = [], 0
        i += 1
    return instances


def non_empty(corpus: Dataset) -> list[list[list[int]]]:
    docs = [[s for s in doc if s] for doc in corpus["tokens"]]
    return [d for d in docs if d]


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("seed,max_seq_length,short_seq_prob", [(0, 32, 0.0), (1, 24, 0.5), (2, 64, 0.1)])
def test_matches_google_port(balance, seed, max_seq_length, short_seq_prob):
    lengths = random_lengths(seed, docs=12, max_len=20)
    lengths[3] = [0, 4, 0]  # empty sentences are dropped, as Google
    lengths.insert(5, [0])  # an empty document is skipped
    corpus = make_corpus(lengths)
    flat = encode.TokenCorpus(corpus)
    documents = non_empty(corpus)
    ours, theirs = random.Random(seed), random.Random(seed)
    debt_ours, debt_theirs = [0.0], [0.0]
    for rank, doc in enumerate(flat.docs):
        found = []
        nsp._pair_instances(flat, int(doc), ours, found, debt_ours, max_num_tokens=max_seq_length - 3,
                            short_seq_prob=short_seq_prob, random_next_prob=0.5, balance=balance)
        got = [(flat.tokens[a:b].tolist(), flat.tokens[c:d].tolist(), label) for a, b, c, d, label in found]
        assert got == google_document(documents, rank, max_seq_length, short_seq_prob, theirs,
                                      balance=balance, debt=debt_theirs)


# ------------------------------------------------------------------ invariants on whole builds
def where(token: int, bounds: np.ndarray) -> int:
    """Document of a token id."""
    return int(np.searchsorted(bounds, token - FIRST_ID, side="right") - 1)


def check_pairs(instances: Dataset, lengths: list[list[int]], max_seq_length: int):
    doc_bounds = np.cumsum([0] + [sum(d) for d in lengths])
    sentence_starts = {FIRST_ID + s for s in np.cumsum([0] + [n for d in lengths for n in d])[:-1]}
    for row in instances:
        ids, types, label = row["input_ids"], row["token_type_ids"], row["next_sentence_label"]
        assert len(ids) <= max_seq_length
        assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2 and ids.count(CLS) == 1
        first_sep = ids.index(SEP)
        a, b = ids[1:first_sep], ids[first_sep + 1:-1]
        assert a and b
        assert types == [0] * (first_sep + 1) + [1] * (len(b) + 1)
        for seg in (a, b):  # each segment is one contiguous slice of one document
            assert seg == list(range(seg[0], seg[0] + len(seg)))
            assert where(seg[0], doc_bounds) == where(seg[-1], doc_bounds)
        if label == 0:  # B follows A in the same document, from the sentence after A's last one
            assert where(a[0], doc_bounds) == where(b[0], doc_bounds) and b[0] > a[-1]
            assert any(a[-1] + 1 <= s <= b[0] for s in sentence_starts)
        else:
            assert label == 1 and where(a[0], doc_bounds) != where(b[0], doc_bounds)


def test_pair_invariants_and_stats():
    lengths = random_lengths(3, docs=150, max_len=30)
    instances = nsp.build_instances(make_corpus(lengths), cls_id=CLS, sep_id=SEP, max_seq_length=48,
                                    short_seq_prob=0.2, seed=1, num_proc=1)
    assert instances.column_names == ["input_ids", "token_type_ids", "next_sentence_label"]
    check_pairs(instances, lengths, 48)
    stats = nsp.instance_stats(instances, 48)
    rows = instances["input_ids"]
    assert stats["instances"] == len(rows) > 500
    assert stats["random_next_fraction"] == pytest.approx(np.mean(instances["next_sentence_label"]))
    assert stats["mean_tokens"] == pytest.approx(np.mean([len(r) for r in rows]))
    assert stats["padding_fraction"] == pytest.approx(1 - sum(map(len, rows)) / (48 * len(rows)))


def test_every_sentence_used_once_when_nothing_is_truncated():
    # sentences of 5 tokens and a target of 125 = 25 sentences: chunks and random Bs end exactly at
    # the target, so nothing is truncated, and put-back must use every sentence exactly once
    lengths = [[5] * random.Random(d).randint(1, 60) for d in range(100)]
    instances = nsp.build_instances(make_corpus(lengths), cls_id=CLS, sep_id=SEP, max_seq_length=128,
                                    short_seq_prob=0.0, seed=4, num_proc=1)
    check_pairs(instances, lengths, 128)
    doc_bounds = np.cumsum([0] + [sum(d) for d in lengths])
    used: list[int] = []
    for row in instances:
        ids = row["input_ids"]
        first_sep = ids.index(SEP)
        used += ids[1:first_sep] + (ids[first_sep + 1:-1] if row["next_sentence_label"] == 0 else [])
        assert where(ids[1], doc_bounds) == where(ids[first_sep - 1], doc_bounds)
    assert sorted(used) == list(range(FIRST_ID, FIRST_ID + int(doc_bounds[-1])))


def test_random_next_fraction_is_balanced():
    # many short documents and long sentences: lots of one-sentence chunks forced to a random B
    lengths = random_lengths(5, docs=2500, max_sentences=12, max_len=60)
    corpus = make_corpus(lengths)
    instances = nsp.build_instances(corpus, cls_id=CLS, sep_id=SEP, max_seq_length=64, seed=0, num_proc=1)
    labels = np.array(instances["next_sentence_label"])
    assert len(labels) > 8000  # binomial sd < 0.0056: the bound is > 3.5 sd
    assert abs(labels.mean() - 0.5) < 0.02
    unbalanced, rng, documents = [], random.Random(0), non_empty(corpus)
    for rank in range(len(documents)):
        unbalanced += [label for *_, label in google_document(documents, rank, 64, 0.1, rng)]
    assert np.mean(unbalanced) > 0.56  # Google's rule on the same corpus: the fix is needed here
    skewed = nsp.build_instances(corpus, cls_id=CLS, sep_id=SEP, max_seq_length=64, random_next_prob=0.7,
                                 num_proc=1)
    assert abs(np.mean(skewed["next_sentence_label"]) - 0.7) < 0.02


def test_deterministic_across_num_proc_and_new_per_epoch():
    corpus = make_corpus(random_lengths(6, docs=3 * nsp.BLOCK_DOCS + 5, max_sentences=8))  # 4 blocks
    kwargs = dict(cls_id=CLS, sep_id=SEP, max_seq_length=40, seed=7)
    one = nsp.build_instances(corpus, num_proc=1, **kwargs)
    two = nsp.build_instances(corpus, num_proc=2, **kwargs)
    assert one.to_dict() == two.to_dict()
    assert one.to_dict() == nsp.build_instances(corpus, num_proc=1, **kwargs).to_dict()
    assert nsp.build_instances(corpus, num_proc=1, epoch=1, **kwargs)["input_ids"] != one["input_ids"]
    assert nsp.build_instances(corpus, num_proc=1, **{**kwargs, "seed": 8})["input_ids"] != one["input_ids"]


def test_second_build_is_served_from_cache(tmp_path, monkeypatch):
    make_corpus(random_lengths(7, docs=20)).save_to_disk(tmp_path / "docs")
    from datasets import load_from_disk

    corpus = load_from_disk(tmp_path / "docs")  # file-backed, so map results are cached beside it
    kwargs = dict(cls_id=CLS, sep_id=SEP, max_seq_length=40, seed=3, num_proc=1)
    first = nsp.build_instances(corpus, **kwargs)
    assert first.cache_files and "nsp-instances-" in first.cache_files[0]["filename"]

    def fail(*args, **kw):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(nsp, "_build_blocks", fail)
    again = nsp.build_instances(corpus, **kwargs)
    assert again.cache_files == first.cache_files and again.to_dict() == first.to_dict()
    with pytest.raises(AssertionError, match="recomputed"):
        nsp.build_instances(corpus, **{**kwargs, "epoch": 1})  # another epoch is another cache entry


def test_chunked_tokens_read_like_one_concatenated_array():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 60_000, n).astype(np.uint16) for n in (5, 0, 1, 9, 3)]
    flat, whole = encode.ChunkedTokens(chunks), np.concatenate(chunks)
    assert len(flat) == len(whole) and flat.max() == whole.max() and flat.dtype == np.uint16
    for lo in range(len(whole) + 1):
        for hi in range(len(whole) + 1):
            assert flat[lo:hi].tolist() == whole[lo:hi].tolist(), (lo, hi)
    picks = rng.integers(0, len(whole), 500)
    assert flat[picks].tolist() == whole[picks].tolist()
    assert flat[picks.reshape(20, 25)].tolist() == whole[picks.reshape(20, 25)].tolist()


@pytest.mark.parametrize("nsp_on", [True, False])
def test_instances_are_the_same_whatever_the_tokens_chunking(nsp_on):
    """The flat corpus reads the cache file's record batches in place; rows gathered across batch boundaries
    (a random B from another batch, a packed block spanning two) equal those of a single-chunk corpus."""
    import pyarrow as pa

    one = make_corpus(random_lengths(12, docs=2 * nsp.BLOCK_DOCS + 40, max_sentences=6, max_len=12))
    pieces = Dataset(pa.Table.from_batches(one.data.table.to_batches(max_chunksize=37)))  # as a cache file's batches
    assert pieces.data.table.column("tokens").num_chunks > 10
    assert encode.TokenCorpus(pieces).tokens.chunks.__len__() > 10
    kwargs = dict(cls_id=CLS, sep_id=SEP, max_seq_length=24, nsp=nsp_on, seed=4, num_proc=1)
    assert nsp.build_instances(pieces, **kwargs).to_dict() == nsp.build_instances(one, **kwargs).to_dict()


@pytest.mark.parametrize("nsp_on", [True, False])
def test_builder_keeps_epoch_0_and_the_epoch_in_use_on_disk(tmp_path, nsp_on):
    """Each epoch's rows are a cache file; a builder deletes those of the epochs between 0 (which every run and
    resume opens first) and the one it draws (rebuilt identically if needed), so the cache does not grow with the
    number of epochs. Rows read before the deletion stay readable."""
    make_corpus(random_lengths(11, docs=2 * nsp.BLOCK_DOCS + 3)).save_to_disk(tmp_path / "docs")
    from datasets import load_from_disk

    builder = epochs.InstanceBuilder(load_from_disk(tmp_path / "docs"), nsp.NSPArgs(max_seq_length=40, nsp=nsp_on,
                                  preprocessing_num_proc=2), cls_id=CLS, sep_id=SEP, seed=5)

    def instance_files():
        return {p.name for p in (tmp_path / "docs").glob("nsp-instances-*.arrow")}

    builder.for_epoch(0)
    files0 = instance_files()
    assert len(files0) == 2  # two shards, num_proc 2
    epoch1 = builder.for_epoch(1)
    rows1 = epoch1.to_dict()
    files1 = instance_files() - files0
    assert len(files1) == 2 and files0 < instance_files()
    builder.for_epoch(2)
    assert len(instance_files()) == 4 and files0 < instance_files() and not files1 & instance_files()  # epoch 1 gone
    assert epoch1.to_dict() == rows1  # still readable by whoever holds it
    builder.for_epoch(3)
    assert len(instance_files()) == 4
    # A rebuilt epoch equals the deleted one; a plain build_instances keeps what is there.
    assert nsp.build_instances(builder.tokenized, cls_id=CLS, sep_id=SEP, max_seq_length=40, nsp=nsp_on, seed=5,
                               epoch=1, num_proc=1).to_dict() == rows1
    assert len(instance_files()) == 5


def test_draw_ahead_builds_the_next_epoch_in_the_background(tmp_path, monkeypatch):
    """draw_ahead(e) builds epoch e in another thread into the cache file for_epoch(e) opens: the same rows as a
    builder that draws it when asked, no second build, and nothing deleted until for_epoch moves on."""
    import threading

    from datasets import load_from_disk

    make_corpus(random_lengths(13, docs=2 * nsp.BLOCK_DOCS + 5)).save_to_disk(tmp_path / "docs")
    make_corpus(random_lengths(13, docs=2 * nsp.BLOCK_DOCS + 5)).save_to_disk(tmp_path / "plain")
    args = nsp.NSPArgs(max_seq_length=32, preprocessing_num_proc=1)
    builder = epochs.InstanceBuilder(load_from_disk(tmp_path / "docs"), args, cls_id=CLS, sep_id=SEP, seed=3)
    plain = epochs.InstanceBuilder(load_from_disk(tmp_path / "plain"), args, cls_id=CLS, sep_id=SEP, seed=3)
    threads, build = [], nsp.build_instances

    def recording(*a, **k):
        threads.append((threading.current_thread().name, k["epoch"], k["keep_earlier_epochs"]))
        return build(*a, **k)

    monkeypatch.setattr(epochs, "build_instances", recording)
    builder.for_epoch(0)
    assert builder.draw_ahead(1) and not builder.draw_ahead(1)  # already on its way
    builder.finish()
    assert threads[-1] == ("hfssl-draw-ahead_0", 1, True)

    def no_building(*a, **k):
        raise AssertionError("epoch 1 was built again instead of read from the cache")

    with monkeypatch.context() as m:
        m.setattr(nsp, "_build_blocks", no_building)
        epoch1 = builder.for_epoch(1)
    assert threads[-1] == ("MainThread", 1, False)
    assert epoch1.to_dict() == plain.for_epoch(1).to_dict()
    files = {p.name for p in (tmp_path / "docs").glob("nsp-instances-*.arrow")}
    assert builder.draw_ahead(2)
    builder.finish()
    assert files < {p.name for p in (tmp_path / "docs").glob("nsp-instances-*.arrow")}  # epoch 1 kept while in use
    assert builder.for_epoch(2).to_dict() == plain.for_epoch(2).to_dict()
    assert len(list((tmp_path / "docs").glob("nsp-instances-*.arrow"))) == 2  # epochs 0 and 2


def test_draw_ahead_hands_its_error_to_for_epoch_and_skips_what_it_cannot_help(tmp_path, monkeypatch):
    from datasets import load_from_disk

    make_corpus(random_lengths(14, docs=12)).save_to_disk(tmp_path / "docs")
    args = nsp.NSPArgs(max_seq_length=32, preprocessing_num_proc=1)
    builder = epochs.InstanceBuilder(load_from_disk(tmp_path / "docs"), args, cls_id=CLS, sep_id=SEP, seed=3)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(nsp, "_build_blocks", broken)
        assert builder.draw_ahead(1)
        builder.finish()  # waits, does not raise
    with pytest.raises(OSError, match="No space left"):
        builder.for_epoch(1)
    assert len(builder.for_epoch(1)) > 0  # the next call builds it in the caller
    in_memory = epochs.InstanceBuilder(make_corpus(random_lengths(14, docs=12)), args, cls_id=CLS, sep_id=SEP)
    assert not in_memory.draw_ahead(1)  # no cache file to hand the rows over
    off = epochs.InstanceBuilder(load_from_disk(tmp_path / "docs"), nsp.NSPArgs(max_seq_length=32, draw_ahead=False),
                              cls_id=CLS, sep_id=SEP)
    assert not off.draw_ahead(1)


@pytest.mark.parametrize("nsp_on", [True, False])
def test_ids_above_uint16_are_kept_exactly(nsp_on):
    """A vocabulary over 65,536 ids (e.g. a multilingual one) keeps int32 instances, id for id."""
    big = Dataset.from_dict({"tokens": [[[70_000 + i for i in range(12)], [5, 6, 7]], [[65_535, 65_536, 9], [8]]]})
    instances = nsp.build_instances(big, cls_id=CLS, sep_id=SEP, max_seq_length=64, nsp=nsp_on, num_proc=1)
    assert instances.features["input_ids"].feature.dtype == "int32"
    ids = {t for row in instances["input_ids"] for t in row}
    assert {70_000, 70_011, 65_535, 65_536} <= ids and max(ids) == 70_011
    if nsp_on:  # one bit per token in the cache; the collator pads them into a long tensor of 0 / 1
        assert instances.features["token_type_ids"].feature.dtype == "bool"
        from hfssl.text.masking import MLMCollator

        class Vocab:  # the collator's view of a tokenizer of 70,012 ids
            pad_token_id, mask_token_id, all_special_ids = 0, 4, [0, 1, 2, 3, 4]

            def get_vocab(self):
                return {f"t{i}": i for i in range(70_012)}

            def __len__(self):
                return 70_012

        batch = MLMCollator(Vocab()).pad([instances[i] for i in range(len(instances))])
        for row, types in zip(instances, batch["token_type_ids"].tolist()):
            sep = row["input_ids"].index(SEP)  # [CLS] A [SEP]: 0, then B [SEP]: 1, then padding: 0
            assert types == [0] * (sep + 1) + [1] * (len(row["input_ids"]) - sep - 1) + [0] * (len(types) - len(row["input_ids"]))
        assert batch["token_type_ids"].dtype == torch.long


def test_without_nsp_documents_are_packed_full_sentences():
    """RoBERTa's FULL-SENTENCES against a brute-force reference: the documents of a block as one stream with a
    [SEP] between documents, cut into full rows; every token once; rows differ between epochs."""
    lengths = random_lengths(8, docs=40, max_len=50)
    lengths[0] = [3, 90, 2]  # a sentence longer than a row is cut, not dropped
    lengths[5] = [0]  # an empty document is skipped (no double [SEP])
    corpus = make_corpus(lengths)
    stream: list[int] = []
    for doc, row in zip(lengths, corpus["tokens"]):
        if sum(doc):
            stream += ([SEP] if stream else []) + [t for sentence in row for t in sentence]
    for epoch in (0, 1):
        instances = nsp.build_instances(corpus, cls_id=CLS, sep_id=SEP, max_seq_length=34, short_seq_prob=0.3,
                                        nsp=False, seed=2, epoch=epoch, num_proc=1)
        assert instances.column_names == ["input_ids"]  # one segment: the collator's token types are all 0
        assert instances.features["input_ids"].feature.dtype == "uint16"  # every id < 65,536
        rows = instances["input_ids"]
        assert all(r[0] == CLS and r[-1] == SEP and len(r) <= 34 for r in rows)
        assert [t for r in rows for t in r[1:-1]] == stream  # every token once, in order, [SEP] between documents
        assert all(len(r) == 34 for r in rows[1:-1])  # only the block's first and last rows are short
        if epoch == 0:
            first_cuts = [len(r) for r in rows]
    assert [len(r) for r in rows] != first_cuts  # another epoch cuts elsewhere
    assert nsp.instance_stats(instances, 34)["random_next_fraction"] is None


def test_packing_leaves_under_two_percent_padding_on_real_text():
    """The embedded Austen corpus by chapter, MLM-only rows of 64 / 128 tokens: padding <= 2 %."""
    from transformers import BertTokenizerFast  # noqa: F401  (the tokenizer class the builder sees)

    from hfssl.text.corpus import CorpusArgs, load_corpus
    from hfssl.text.tokenizer import train_wordpiece

    documents, _ = load_corpus(CorpusArgs())
    documents = documents.select(range(60))
    tok = train_wordpiece(documents, vocab_size=2000, show_progress=False)
    tokenized = encode.tokenize_documents(documents, tok, num_proc=1)
    for length in (64, 128):
        rows = nsp.build_instances(tokenized, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, max_seq_length=length,
                                   nsp=False, num_proc=1)
        assert nsp.instance_stats(rows, length)["padding_fraction"] <= 0.02


def test_errors():
    with pytest.raises(ValueError, match="at least 2 non-empty documents.*but the corpus has 1"):
        nsp.build_instances(make_corpus([[3, 4], [0]]), cls_id=CLS, sep_id=SEP, num_proc=1)
    with pytest.raises(ValueError, match="no tokens"):
        nsp.build_instances(make_corpus([[0], []]), cls_id=CLS, sep_id=SEP, nsp=False, num_proc=1)
    with pytest.raises(ValueError, match="tokenize_documents"):
        nsp.build_instances(Dataset.from_dict({"sentences": [["a"]]}), cls_id=CLS, sep_id=SEP)
    with pytest.raises(ValueError, match="max_seq_length"):
        nsp.NSPArgs(max_seq_length=4)
    with pytest.raises(ValueError, match="random_next_prob"):
        nsp.NSPArgs(random_next_prob=1.5)
    nsp.NSPArgs(max_seq_length=3, nsp=False)
    for bad, flag in [({"max_seq_length": 0}, "--max_seq_length must be at least 5"),
                      ({"short_seq_prob": -0.1}, "--short_seq_prob"), ({"preprocessing_num_proc": 0}, "--preprocessing_num_proc")]:
        with pytest.raises(ValueError, match=flag):
            nsp.NSPArgs(**bad)


def test_too_few_documents_names_the_split_and_what_to_do(bert_tokenizer):
    """A 4-document corpus whose 5 % held-out split has 1 document: the error says which split it is."""
    from hfssl.errors import UserError

    held_out = Dataset.from_dict({"sentences": [TEXTS[0]]})
    builder = epochs.InstanceBuilder.from_documents(held_out, bert_tokenizer, nsp.NSPArgs(max_seq_length=24),
                                                 name="held-out split")
    with pytest.raises(UserError) as err:
        builder.for_epoch(0)
    message = str(err.value)
    assert "the held-out split has 1" in message and "corpus" not in message.split(";")[0]
    assert "--eval_fraction" in message and "--nsp false" in message and "more documents" in message


# ------------------------------------------------------------------ tokenization
TEXTS = [
    ["Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings.",
     "She was the youngest of the two daughters of a most affectionate, indulgent father."],
    ["Café naïve résumé  double  spaces\tand\ttabs", "new\nline ﬁ ²", "中文字符 mixed中文 😀 emoji",
     "ctrl\x00\x1c\x85chars here", "form\x0cfeed and\x0bvt", "[MASK] inside x[SEP]y", "", " ", "\u00a0nbsp\u3000ideo", "x" * 130 + " y"],
    [],
    ["Mr. Knightley, a sensible man about seven or eight-and-thirty, was a very old and intimate friend."],
]


@pytest.fixture(scope="module")
def bert_tokenizer():
    from hfssl.text.tokenizer import train_wordpiece

    sentences = [s for doc in TEXTS for s in doc] * 20
    return train_wordpiece(sentences, vocab_size=300, show_progress=False)


def byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([s for doc in TEXTS for s in doc] * 10,
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="<s>", sep_token="</s>")


@pytest.mark.parametrize("kind", ["bert", "byte_level"])
def test_tokenize_documents_matches_the_tokenizer(kind, bert_tokenizer):
    tok = bert_tokenizer if kind == "bert" else byte_level_tokenizer()
    assert encode._Encoder(tok).by_word == (kind == "bert")  # both encoding paths are exercised
    tok.backend_tokenizer.enable_truncation(8)  # the caller's settings must not leak into the ids
    documents = Dataset.from_dict({"sentences": TEXTS, "title": ["a", "b", "c", "d"]})
    tokenized = encode.tokenize_documents(documents, tok, num_proc=1)
    tok.backend_tokenizer.no_truncation()
    assert tokenized.column_names == ["tokens"]  # the text is not copied into the token cache again
    expected = [[tok(s, add_special_tokens=False)["input_ids"] for s in doc] for doc in TEXTS]
    assert tokenized["tokens"] == expected
    assert any(len(s) > 8 for doc in expected for s in doc)
    if kind == "bert":  # two worker processes give the same column
        assert encode.tokenize_documents(documents, tok, num_proc=2)["tokens"] == expected


def test_instance_builder_end_to_end(bert_tokenizer):
    documents = Dataset.from_dict({"sentences": [doc for doc in TEXTS if doc] * 3})
    args = nsp.NSPArgs(max_seq_length=24, preprocessing_num_proc=1)
    builder = epochs.InstanceBuilder.from_documents(documents, bert_tokenizer, args, seed=5)
    epoch0 = builder.for_epoch(0)
    assert epoch0.to_dict() == builder.for_epoch(0).to_dict()
    assert epoch0["input_ids"] != builder.for_epoch(1)["input_ids"]
    assert all(r[0] == bert_tokenizer.cls_token_id and len(r) <= 24 for r in epoch0["input_ids"])
    corpus = builder.corpus_stats()
    assert corpus["empty_sentences_dropped"] == 3 * 2 and corpus["documents_used"] == 9
    assert builder.stats(epoch0)["instances"] == len(epoch0)
