"""BertPretrainer against Hugging Face's BertForPreTraining: same loss, same gradients, same checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertForPreTraining,
)

from hfssl.config import parse
from hfssl.methods.bert import BertPretrainer, MaskedCrossEntropy
from hfssl.methods.bert_config import PRESETS, BertModelArgs, bert_config, parse_config_overrides

VOCAB = 300


def _tiny_config(**overrides):
    args = BertModelArgs(preset="tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         max_position_embeddings=64)
    config = bert_config(args, VOCAB)
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


def _batch(seed=0, B=6, T=24, p=0.15):
    """Pairs with padding, token types and ~15 % MLM targets (-100 elsewhere, never on padding)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (B, T), generator=g)  # (B, T)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    token_type_ids = (torch.arange(T)[None, :] >= (lengths[:, None] // 2)).long() * attention_mask
    chosen = (torch.rand(B, T, generator=g) < p) & attention_mask.bool()
    chosen[0, 1] = True  # at least one target
    labels = torch.where(chosen, torch.randint(0, VOCAB, (B, T), generator=g), -100)  # (B, T)
    nsp = torch.randint(0, 2, (B,), generator=g)
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                labels=labels, next_sentence_label=nsp)


def _pair(nsp=True, seed=0):
    torch.manual_seed(seed)
    hf = BertForPreTraining(_tiny_config())
    ours = BertPretrainer(model=copy.deepcopy(hf), nsp=nsp)
    hf.train()
    ours.train()  # dropout is 0: training mode exercises the real training path
    return hf, ours


def _assert_same_grads(hf, ours, skip=()):
    hf_params = dict(hf.named_parameters())
    ours_params = dict(ours.model.named_parameters())
    assert hf_params.keys() == ours_params.keys()
    checked = 0
    for name, p in hf_params.items():
        if any(s in name for s in skip):
            continue
        q = ours_params[name]
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=name)
        checked += 1
    assert checked > 30


def test_loss_and_gradients_match_hf_with_nsp():
    hf, ours = _pair()
    batch = _batch()
    ref = hf(**batch)
    out = ours(**batch)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    ref.loss.backward()
    out.loss.backward()
    _assert_same_grads(hf, ours)
    # the parts, recomputed by brute force from HF's dense logits
    labels, nsp = batch["labels"], batch["next_sentence_label"]
    logits = ref.prediction_logits.detach()  # (B, T, V)
    keep = labels != -100
    mlm = F.cross_entropy(logits[keep], labels[keep])
    nsp_loss = F.cross_entropy(ref.seq_relationship_logits.detach(), nsp)
    torch.testing.assert_close(out.mlm_loss, mlm, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nsp_loss, nsp_loss, atol=1e-5, rtol=0)
    correct = sum(int(logits[b, t].argmax() == labels[b, t]) for b, t in keep.nonzero().tolist())
    assert out.num_masked.item() == int(keep.sum()) > 0
    assert round(out.mlm_accuracy.item() * out.num_masked.item()) == correct
    nsp_correct = (ref.seq_relationship_logits.argmax(-1) == nsp).sum().item()
    assert out.nsp_accuracy.item() == pytest.approx(nsp_correct / len(nsp))
    assert not out.mlm_accuracy.requires_grad and not out.nsp_accuracy.requires_grad


def test_mlm_only_matches_hf_dense_loss_and_freezes_nsp_parts():
    hf, ours = _pair(nsp=False)
    batch = _batch(seed=1)
    nsp_label = batch.pop("next_sentence_label")
    ref = hf(**{k: v for k, v in batch.items() if k != "labels"})
    V = ref.prediction_logits.shape[-1]
    ref_loss = F.cross_entropy(ref.prediction_logits.reshape(-1, V), batch["labels"].reshape(-1), ignore_index=-100)
    out = ours(**batch)
    assert out.nsp_loss is None and out.nsp_accuracy is None
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-5, rtol=0)
    ref_loss.backward()
    out.loss.backward()
    _assert_same_grads(hf, ours, skip=("pooler", "seq_relationship"))
    frozen = [*ours.model.bert.pooler.parameters(), *ours.model.cls.seq_relationship.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    with pytest.raises(ValueError, match="nsp=False"):
        ours(**batch, next_sentence_label=nsp_label)


def test_bf16_autocast_training_step_stays_close_to_hf():
    hf, ours = _pair()
    batch = _batch(seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = hf(**batch).loss
        out = ours(**batch)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref, atol=2e-2, rtol=0)
    out.loss.backward()
    grads = [p.grad for p in ours.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_training_batch_without_nsp_labels_is_refused_when_nsp_is_on():
    _, ours = _pair(nsp=True)
    batch = _batch()
    batch.pop("next_sentence_label")
    with pytest.raises(ValueError, match="next_sentence_label"):
        ours(**batch)
    ours.eval()
    with torch.no_grad():
        assert ours(**batch).nsp_loss is None  # evaluation without NSP labels is fine


def test_batch_without_masked_positions_gives_zero_loss_and_finite_grads():
    _, ours = _pair()
    batch = _batch()
    batch["labels"].fill_(-100)
    out = ours(**batch)
    assert out.num_masked.item() == 0 and out.mlm_loss.item() == 0.0
    out.loss.backward()
    decoder_grad = ours.model.cls.predictions.transform.dense.weight.grad
    assert decoder_grad is not None and torch.count_nonzero(decoder_grad) == 0
    assert torch.isfinite(ours.model.bert.embeddings.word_embeddings.weight.grad).all()


def test_save_pretrained_loads_back_with_standard_keys(tmp_path):
    _, ours = _pair()
    ours.model.save_pretrained(tmp_path)
    loaded, info = BertForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, p in ours.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], p, atol=0, rtol=0, msg=name)
    mlm, info = AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    # BertForMaskedLM has no pooler / NSP classifier; everything else is used.
    assert info["unexpected_keys"] == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                       "cls.seq_relationship.weight", "cls.seq_relationship.bias"}
    batch = _batch()
    mlm.eval()
    ours.eval()
    with torch.no_grad():
        dense = mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"]).logits  # (B, T, V)
        keep = batch["labels"] != -100
        acc = (dense[keep].argmax(-1) == batch["labels"][keep]).float().mean()
        torch.testing.assert_close(ours(**batch).mlm_accuracy, acc)
    _, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True, num_labels=3)
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_masked_cross_entropy_matches_torch(dtype):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(9, 13, generator=g) * 4).to(dtype).requires_grad_()
    target = torch.randint(0, 13, (9,), generator=g)
    ref_logits = logits.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_logits, target, reduction="sum") / 9
    (3 * ref).backward()  # a gradient other than 1 reaches the loss
    loss, pred = MaskedCrossEntropy.apply(logits, target, torch.tensor(9))
    (3 * loss).backward()
    torch.testing.assert_close(loss, ref.detach(), atol=1e-6, rtol=1e-6)
    assert logits.grad.dtype == dtype and not pred.requires_grad
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(logits.grad.float(), ref_logits.grad, atol=tol, rtol=tol)
    assert torch.equal(pred, logits.detach().float().argmax(-1))
    loss, _ = MaskedCrossEntropy.apply(logits, target, torch.tensor(9))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


def _expected_params(c, V, P):
    """BERT parameter count by hand (decoder weight tied to the word embeddings)."""
    H, inter, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    emb = (V + P + 2) * H + 2 * H
    layer = 4 * (H * H + H) + 2 * H + (H * inter + inter) + (inter * H + H) + 2 * H
    heads = (H * H + H) + (H * H + H + 2 * H) + V + (2 * H + 2)  # pooler, transform, bias, NSP
    return emb + L * layer + heads


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_with_the_right_sizes(preset):
    config = bert_config(BertModelArgs(preset=preset, max_position_embeddings=128), vocab_size=50, pad_token_id=3)
    expected = PRESETS[preset]
    for key, value in expected.items():
        assert getattr(config, key) == value
    assert config._attn_implementation == "sdpa" and config.pad_token_id == 3
    assert config.hidden_dropout_prob == 0.1 == config.attention_probs_dropout_prob
    if preset in ("tiny", "mini"):
        model = BertPretrainer(config).model
        assert len(model.bert.encoder.layer) == expected["num_hidden_layers"]
        assert model.bert.encoder.layer[0].intermediate.dense.weight.shape == (
            expected["intermediate_size"], expected["hidden_size"])
        assert sum(p.numel() for p in model.parameters()) == _expected_params(expected, 50, 128)


def test_dropout_fields_and_overrides_reach_the_config():
    args = BertModelArgs(preset="mini", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.05,
                         config_overrides="hidden_act=gelu_new, layer_norm_eps=1e-6,type_vocab_size=3,"
                                          "use_cache=false,classifier_dropout=0.2,num_hidden_layers=2")
    c = bert_config(args, vocab_size=100)
    assert (c.hidden_dropout_prob, c.attention_probs_dropout_prob) == (0.0, 0.05)
    assert c.hidden_act == "gelu_new" and c.layer_norm_eps == 1e-6 and c.type_vocab_size == 3
    assert c.use_cache is False and c.classifier_dropout == 0.2 and c.num_hidden_layers == 2
    assert isinstance(c.type_vocab_size, int) and isinstance(c.layer_norm_eps, float)
    assert parse_config_overrides("hidden_dropout_prob=0") == {"hidden_dropout_prob": 0.0}


@pytest.mark.parametrize("overrides, message", [
    ("hiden_size=64", "unknown BertConfig key 'hiden_size'"),
    ("vocab_size=10", "'vocab_size' is set from the tokenizer"),
    ("hidden_size", "not key=value"),
    ("num_hidden_layers=two", "num_hidden_layers='two' is not a valid int"),
    ("use_cache=maybe", "use_cache='maybe'"),
])
def test_bad_overrides_fail_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        BertModelArgs(config_overrides=overrides)


def test_bad_args_fail_clearly():
    with pytest.raises(ValueError, match="--preset 'huge' is unknown"):
        BertModelArgs(preset="huge")
    with pytest.raises(ValueError, match="hidden_dropout_prob"):
        BertModelArgs(hidden_dropout_prob=1.5)
    with pytest.raises(ValueError, match="not a multiple"):
        bert_config(BertModelArgs(config_overrides="num_attention_heads=3"), vocab_size=100)
    with pytest.raises(ValueError, match="pad_token_id"):
        bert_config(BertModelArgs(), vocab_size=100, pad_token_id=100)


def test_args_parse_from_the_command_line():
    (args,) = parse(BertModelArgs, args=["--preset", "mini", "--hidden_dropout_prob", "0",
                                         "--config_overrides", "hidden_act=relu"])
    assert args.preset == "mini" and args.hidden_dropout_prob == 0.0
    assert args.attention_probs_dropout_prob is None
    assert bert_config(args, vocab_size=100).hidden_act == "relu"


def test_sinusoidal_position_init_is_the_transformer_table_and_keeps_the_format(tmp_path):
    import math

    from transformers import BertForPreTraining

    from hfssl.methods.bert import BertPretrainer
    from hfssl.methods.bert_config import BertModelArgs

    args = BertModelArgs(preset="tiny", sinusoidal_positions=0.05, max_position_embeddings=64)
    model = BertPretrainer.from_args(args, vocab_size=100)
    table = model.model.bert.embeddings.position_embeddings.weight.detach()  # (64, 128)
    assert abs(float(table.std()) - 0.05) < 1e-6
    # brute force: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...), up to one global scale
    scale = float(table[1, 0]) / math.sin(1.0)
    for p in (0, 1, 7, 63):
        for i in (0, 5, 63):
            angle = p / 10_000 ** (2 * i / 128)
            assert float(table[p, 2 * i]) == pytest.approx(scale * math.sin(angle), abs=1e-5)
            assert float(table[p, 2 * i + 1]) == pytest.approx(scale * math.cos(angle), abs=1e-5)
    model.model.save_pretrained(tmp_path)
    _, info = BertForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    plain = BertPretrainer.from_args(BertModelArgs(preset="tiny", max_position_embeddings=64), vocab_size=100)
    assert float(plain.model.bert.embeddings.position_embeddings.weight.detach().std()) < 0.03  # BERT's N(0, 0.02)


def test_cls_bag_of_words_loss_matches_a_brute_force_count():
    """[CLS] bag of words: HF's own pooler + MLM head on the [CLS] state, scored against the instance's
    original words (masked positions count with their labels; specials and padding do not)."""
    hf, _ = _pair(nsp=False)
    special = (0, 1, 2, 3, 4)
    ours = BertPretrainer(model=copy.deepcopy(hf), nsp=False, cls_bow_weight=0.5, special_ids=special)
    batch = _batch(seed=2)
    batch.pop("next_sentence_label")
    batch["input_ids"][:, 0] = 2  # a [CLS] in front, a special token that must not count
    out = ours(**batch)
    ref = hf(**{k: v for k, v in batch.items() if k != "labels"})
    hidden = hf.bert(batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"]).pooler_output  # (B, H)
    logp = F.log_softmax(hf.cls.predictions(hidden), -1)  # (B, V)
    losses = []
    for b in range(batch["input_ids"].shape[0]):
        words = []
        for t in range(batch["input_ids"].shape[1]):
            if not batch["attention_mask"][b, t]:
                continue
            tok = int(batch["labels"][b, t]) if batch["labels"][b, t] != -100 else int(batch["input_ids"][b, t])
            if tok not in special:
                words.append(tok)
        losses.append(-sum(logp[b, w] for w in words) / len(words))
    bow = torch.stack(losses).mean()
    V = ref.prediction_logits.shape[-1]
    mlm = F.cross_entropy(ref.prediction_logits.reshape(-1, V), batch["labels"].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.bow_loss, bow, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, mlm + 0.5 * bow, atol=1e-5, rtol=0)
    out.loss.backward()  # the pooler now learns (MLM-only would freeze it); the NSP classifier stays frozen
    assert all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0
               for p in ours.model.bert.pooler.parameters())
    assert all(not p.requires_grad for p in ours.model.cls.seq_relationship.parameters())
