"""Causal LM building blocks, each against an independent reference: the packed rows (brute force: the documents
joined with eos), the byte-level BPE (decode(encode(x)) == x on arbitrary bytes and scripts), the loss
(GPT2LMHeadModel's own with labels), bits per byte (a hand computation from the text), the Llama variant, the
generation helper's prompt check."""

from __future__ import annotations

import math
import random

import datasets
import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from hfssl.errors import UserError
from hfssl.methods.gpt import CausalLMPretrainer, check_prompts, clm_eval_step, clm_summary, generate_samples
from hfssl.methods.gpt_config import GPTModelArgs, causal_config, parse_overrides
from hfssl.text.bpe import END_OF_TEXT, BPEArgs, get_or_train_bpe, token_byte_lengths, train_bpe
from hfssl.text.clm import CLMArgs, CLMRowBuilder, build_clm_rows, collate_rows

WORDS = ("the of and to her she was it not be that in had for you with his as he have my at but is all so on "
         "could would very such much must been what there this no any some more than well said sister mother "
         "house walk letter party evening morning").split()


def documents(n: int = 12, seed: int = 0) -> datasets.Dataset:
    rng = random.Random(seed)
    docs = [[" ".join(rng.choices(WORDS, k=rng.randint(3, 12))).capitalize() + "."
             for _ in range(rng.randint(1, 8))] for _ in range(n)]
    if n > 3:
        docs[3] = []  # an empty document: skipped, no double eos
    return datasets.Dataset.from_dict({"sentences": docs})


@pytest.fixture(scope="module")
def tokenizer():
    texts = [" ".join(s) for s in documents(60, seed=1)["sentences"]] + ["naïve café – 東京 🙂"]
    return train_bpe(texts, vocab_size=400, min_frequency=1, model_max_length=64, show_progress=False)


def test_bpe_round_trips_arbitrary_bytes_and_unicode_without_unknown_tokens(tokenizer):
    rng = random.Random(0)
    samples = ["", " leading and trailing spaces  ", "tabs\tand\nnew\r\nlines", "Ünïcödé ÄÖÜ ß ø", "日本語のテキスト",
               "emoji 🙂🚀👩‍👩‍👧 mix", "\x00\x01 control \x7f", "a" * 300, "<|endoftext|> in text"]
    samples += ["".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(40)) for _ in range(20)]
    samples += [bytes(rng.randrange(256) for _ in range(50)).decode("utf-8", errors="replace") for _ in range(20)]
    for text in samples:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.unk_token_id is None and len(ids) <= max(len(text.encode("utf-8")), 1)
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == END_OF_TEXT
    assert tokenizer.model_max_length == 64
    # every byte is a token of its own (the 256-symbol ByteLevel alphabet)
    assert len(set(tokenizer.get_vocab()) & set(tokenizer.backend_tokenizer.pre_tokenizer.alphabet())) == 256


def test_packed_rows_are_the_documents_joined_by_eos(tokenizer):
    docs = documents()
    args = CLMArgs(max_seq_length=16)
    builder = CLMRowBuilder.from_documents(docs, tokenizer, args, seed=3)
    eos = tokenizer.eos_token_id
    # brute force: each non-empty document's text tokenized whole, eos between two documents
    stream: list[int] = []
    for sentences in docs["sentences"]:
        if sentences:
            stream += ([eos] if stream else []) + tokenizer(" ".join(sentences), add_special_tokens=False)["input_ids"]
    for epoch in (0, 1):
        rows = np.array(builder.for_epoch(epoch)["input_ids"])  # (R, 16): every row full, nothing padded
        assert rows.shape[1] == 16
        flat = rows.ravel().tolist()
        start = next(i for i in range(16) if stream[i:i + len(flat)] == flat)  # the epoch's random cut offset
        assert flat == stream[start:start + len(flat)] and len(stream) - len(flat) - start < 16
        assert tokenizer.decode(rows[0]) in tokenizer.decode(stream)
    batch = collate_rows([{"input_ids": r} for r in rows[:3].tolist()])
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (3, 16) and len(batch) == 1
    again = build_clm_rows(builder.tokenized, eos_id=eos, max_seq_length=16, seed=3, epoch=1)
    assert again["input_ids"] == builder.for_epoch(1)["input_ids"]  # deterministic per (seed, epoch)


def test_a_corpus_shorter_than_one_row_is_a_user_error(tokenizer):
    builder = CLMRowBuilder.from_documents(documents(2), tokenizer, CLMArgs(max_seq_length=4096), name="corpus")
    with pytest.raises(UserError, match=r"fewer than one training row of --max_seq_length 4096, --corpus"):
        builder.for_epoch(0)


def test_tokenizer_without_eos_is_refused(tmp_path):
    from transformers import PreTrainedTokenizerFast

    plain = train_bpe(["some text here"] * 5, vocab_size=300, min_frequency=1, show_progress=False)
    no_eos = PreTrainedTokenizerFast(tokenizer_object=plain.backend_tokenizer, model_max_length=64)
    no_eos.save_pretrained(tmp_path / "tok")
    with pytest.raises(UserError, match=r"no end-of-text \(eos\) token.*--tokenizer_name_or_path"):
        get_or_train_bpe(BPEArgs(tokenizer_name_or_path=str(tmp_path / "tok")), None, 64)


def tiny(arch: str = "gpt2", vocab: int = 400, eos: int = 0) -> CausalLMPretrainer:
    torch.manual_seed(0)
    args = GPTModelArgs(architecture=arch, dropout=0.0, config_overrides="n_embd=32,n_head=2" if arch == "gpt2"
                        else "hidden_size=32,num_attention_heads=2,num_key_value_heads=2,intermediate_size=96")
    return CausalLMPretrainer.from_args(args, vocab, eos)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loss_and_gradients_equal_hugging_face_causal_lm_loss(arch):
    model = tiny(arch)
    assert isinstance(model.model, GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM)
    ids = torch.randint(0, 400, (3, 20), generator=torch.Generator().manual_seed(0))
    ours = model(input_ids=ids)
    ours.loss.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.model.named_parameters()}
    model.model.zero_grad()
    reference = model.model(input_ids=ids, labels=ids).loss  # HF shifts the labels itself
    reference.backward()
    assert torch.allclose(ours.loss, reference, atol=1e-5)
    for name, p in model.model.named_parameters():
        assert torch.allclose(ours_grads[name], p.grad, atol=1e-5, rtol=1e-4), name
    logits = model.model(input_ids=ids).logits[:, :-1]
    assert torch.isclose(ours.accuracy, (logits.argmax(-1) == ids[:, 1:]).float().mean())


def test_llama_preset_uses_rope_rmsnorm_swiglu_and_trains_a_step():
    config = causal_config(GPTModelArgs(architecture="llama"), 500, 0)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.hidden_act) == ("llama", 2, 128, "silu")
    assert config.intermediate_size == 352 and config.tie_word_embeddings  # ~8/3 x 128, a multiple of 32
    model = CausalLMPretrainer.from_args(GPTModelArgs(architecture="llama"), 500, 0)
    assert "RMSNorm" in type(model.model.model.norm).__name__ and hasattr(model.model.model, "rotary_emb")
    assert not any("position" in n for n, _ in model.model.named_parameters())  # RoPE: no position table
    ids = torch.randint(0, 500, (2, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model(input_ids=ids).loss.item()
    for _ in range(3):
        model(input_ids=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model(input_ids=ids).loss.item() < before


def test_presets_and_overrides():
    config = causal_config(GPTModelArgs(preset="gpt2"), 50257, 50256)
    model = GPT2LMHeadModel(config)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small
    assert config.pad_token_id is None and config.eos_token_id == config.bos_token_id == 50256
    assert parse_overrides("n_layer=3,activation_function=gelu,scale_attn_weights=false", type(config)) == \
        dict(n_layer=3, activation_function="gelu", scale_attn_weights=False)
    for bad in ("vocab_size=3", "nope=1", "n_layer"):
        with pytest.raises(ValueError, match="config_overrides"):
            GPTModelArgs(config_overrides=bad)


def test_bits_per_byte_is_total_nats_over_the_text_bytes(tokenizer):
    text = "She walked to the house, naïve and café-bound 🙂. Well said!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    row = torch.tensor([ids + [tokenizer.eos_token_id] + ids[:5]])  # (1, T): an eos inside the row
    model = tiny(vocab=len(tokenizer))
    with torch.no_grad():  # as hfssl.train.evaluate calls it
        sums = clm_eval_step(token_byte_lengths(tokenizer))(model, {"input_ids": row}, None)
        # by hand: the nats of every predicted token (HF's loss x count), and the UTF-8 bytes of the text they spell
        total_nats = model.model(input_ids=row, labels=row).loss.item() * (row.shape[1] - 1)
    predicted_text = tokenizer.decode(ids[1:]) + tokenizer.decode(ids[:5])  # the eos stands for no text
    metrics = clm_summary({k: float(v.sum()) for k, v in sums.items()})
    assert metrics["predicted"] == row.shape[1] - 1
    assert math.isclose(metrics["bits_per_byte"], total_nats / (math.log(2) * len(predicted_text.encode("utf-8"))),
                        rel_tol=1e-5)
    assert math.isclose(metrics["loss"], total_nats / (row.shape[1] - 1), rel_tol=1e-5)
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]), rel_tol=1e-9)


def test_generation_helper_is_greedy_and_refuses_prompts_longer_than_the_context(tokenizer):
    model = tiny(vocab=len(tokenizer)).model
    first = generate_samples(model, tokenizer, ["She was", "the house"], new_tokens=8)
    assert first == generate_samples(model, tokenizer, ["She was", "the house"], new_tokens=8)
    assert first[0].startswith("She was") and len(first) == 2
    with pytest.raises(UserError, match="--sample_prompts"):
        check_prompts(tokenizer, ["word " * 1100], 8, model.config.max_position_embeddings)
