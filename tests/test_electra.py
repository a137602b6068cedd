"""ELECTRA (hfssl/methods/electra.py, recipes/electra.py), each part against an independent reference:
replaced-token labels by a loop, sampling by frequencies, the loss by transformers' dense heads, gradients
that stop at the generator, shared embeddings, the exported folders in the Auto classes, and exact resume."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_inputs import assert_user_error, run_in_process

from hfssl.methods.electra import (
    ElectraPretrainer,
    add_sample_noise,
    binned_auc,
    electra_eval_step,
    electra_summary,
    logit_histograms,
    pad_with_noise,
    replace_tokens,
    sample_replacements,
)
from hfssl.methods.electra_config import ElectraModelArgs

ROOT = Path(__file__).resolve().parents[1]
VOCAB, PAD = 90, 0
TINY = dict(embedding_size=32, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            generator_size=1 / 3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)


def tiny_model(seed: int = 0, **objective) -> ElectraPretrainer:
    torch.manual_seed(seed)
    return ElectraPretrainer.from_args(ElectraModelArgs(**TINY), VOCAB, PAD, **objective)


def masked_batch(seed: int = 1):
    """(input_ids with [MASK]=4 at chosen positions, attention_mask, token_type_ids, labels, noise): row 0 padded."""
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(5, VOCAB, (3, 16), generator=g)
    attention = torch.ones_like(original)
    attention[0, 11:] = 0
    original[0, 11:] = PAD
    chosen = torch.zeros_like(original, dtype=torch.bool)
    chosen[:, [2, 5, 9]] = True
    chosen[1, 13] = True
    labels = torch.where(chosen, original, torch.full_like(original, -100))
    inputs = original.masked_fill(chosen, 4)
    inputs[2, 9] = 7  # BERT's 10 % random replacement: the original is the label, not the input
    types = torch.zeros_like(original)
    types[:, 8:] = 1
    return inputs, attention, types, labels, torch.rand(original.shape, generator=g), original


def test_replaced_labels_are_sample_differs_from_original_on_real_tokens():
    inputs, attention, _, labels, _, original = masked_batch()
    masked = labels != -100
    samples = original[masked].clone()
    samples[::2] = torch.arange(5, 5 + samples[::2].numel()) % VOCAB  # some differ, the others equal the original
    replaced, disc_labels = replace_tokens(inputs, labels, samples, attention)
    k = 0
    for b in range(inputs.shape[0]):  # reference: a plain loop over positions, in row-major order
        for t in range(inputs.shape[1]):
            if masked[b, t]:
                assert replaced[b, t] == samples[k]
                expect = float(samples[k] != original[b, t])
                k += 1
            else:
                assert replaced[b, t] == original[b, t]
                expect = 0.0
            assert disc_labels[b, t] == (expect if attention[b, t] else 0.0), (b, t)
    assert disc_labels.sum() > 0 and disc_labels[masked].sum() < masked.sum()  # both kinds occur
    assert replaced[2, 9] == original[2, 9]  # a random-replaced input counts against its original


def test_inverse_cdf_sampling_follows_the_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0, -30.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    n = 40_000
    noise = torch.rand(2 * n, generator=torch.Generator().manual_seed(0))
    samples = sample_replacements(logits.repeat_interleave(n, 0), noise).view(2, n)
    for row in range(2):
        freq = torch.bincount(samples[row], minlength=5).float() / n
        assert torch.allclose(freq, logits[row].softmax(-1), atol=0.01), (row, freq)
    assert (samples[0] != 4).all()  # a ~0 probability is never drawn
    assert torch.equal(sample_replacements(logits, torch.tensor([0.3, 0.9])),
                       sample_replacements(logits, torch.tensor([0.3, 0.9])))


def test_loss_equals_transformers_dense_heads():
    model = tiny_model()
    inputs, attention, types, labels, noise, original = masked_batch()
    out = model(inputs, attention, types, labels, noise)
    # reference: the dense heads of transformers over every position, their own masked CE / masked BCE
    reference_labels = ((out.replaced_input_ids != original) & attention.bool()).float()
    assert torch.equal(out.discriminator_labels, reference_labels)
    gen = model.generator(input_ids=inputs, attention_mask=attention, token_type_ids=types, labels=labels)
    disc = model.discriminator(input_ids=out.replaced_input_ids, attention_mask=attention, token_type_ids=types,
                               labels=reference_labels.long())
    reference = gen.loss + 50.0 * disc.loss
    assert out.generator_loss.item() == pytest.approx(gen.loss.item(), abs=1e-5)
    assert out.discriminator_loss.item() == pytest.approx(disc.loss.item(), abs=1e-5)
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-6, abs=1e-5)
    active = attention.bool()
    assert out.replaced_fraction.item() == pytest.approx(reference_labels[active].mean().item())
    hits = ((disc.logits > 0).float() == reference_labels)[active].float().mean()
    assert out.discriminator_accuracy.item() == pytest.approx(hits.item())
    # the same gradients as the dense reference
    grads = torch.autograd.grad(out.loss, list(model.parameters()))
    reference_grads = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    for (name, _), g, r in zip(model.named_parameters(), grads, reference_grads):
        assert torch.allclose(g, torch.zeros_like(g) if r is None else r, atol=1e-5), name


def test_cls_bow_loss_equals_a_brute_force_bag_of_words_on_the_discriminator_cls_state():
    """--cls_bow_weight: the discriminator's last-layer [CLS] state (what ElectraClassificationHead reads), through
    dense + GELU + LayerNorm and the shared token table, predicts the row's original words (masked positions with
    their labels; specials and padding left out). Reference: transformers' own discriminator on the replaced ids,
    the head written out by hand, the words counted one by one."""
    torch.manual_seed(0)
    special = (0, 1, 2, 3, 4)
    model = ElectraPretrainer.from_args(ElectraModelArgs(**TINY), VOCAB, PAD, cls_bow_weight=0.5, special_ids=special)
    inputs, attention, types, labels, noise, original = masked_batch()
    inputs[:, 0] = original[:, 0] = 2  # a [CLS] in front, a special token that must not count
    original[1, 4] = 3  # a [SEP] inside, likewise
    inputs[1, 4] = 3
    out = model(inputs, attention, types, labels, noise)
    gen = model.generator(input_ids=inputs, attention_mask=attention, token_type_ids=types, labels=labels)
    disc = model.discriminator(input_ids=out.replaced_input_ids, attention_mask=attention, token_type_ids=types,
                               labels=out.discriminator_labels.long(), output_hidden_states=True)
    cls_state = disc.hidden_states[-1][:, 0]  # (B, H) the [CLS] last hidden state
    head = model.cls_bow_head
    h = cls_state @ head.dense.weight.T + head.dense.bias
    h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))  # exact GELU
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-12)
    h = h * head.norm.weight + head.norm.bias
    logits = h @ model.discriminator.electra.embeddings.word_embeddings.weight.T + head.bias  # (B, V)
    logp = torch.log_softmax(logits, -1)
    losses = []
    for b in range(inputs.shape[0]):
        words = [int(original[b, t]) for t in range(inputs.shape[1])
                 if attention[b, t] and int(original[b, t]) not in special]
        losses.append(-sum(logp[b, w] for w in words) / len(words))
    bow = torch.stack(losses).mean()
    assert out.cls_bow_loss.item() == pytest.approx(bow.item(), abs=1e-5)
    assert out.loss.item() == pytest.approx((gen.loss + 50.0 * disc.loss + 0.5 * bow).item(), rel=1e-6, abs=1e-5)
    # it trains the discriminator (encoder, shared embeddings, its own head) and nothing of the generator's own
    out.cls_bow_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert model.discriminator.electra.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0
    assert model.discriminator.electra.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    shared = {id(p) for p in model.discriminator.parameters()}
    assert all(p.grad is None or not p.grad.any() for p in model.generator.parameters() if id(p) not in shared)
    # the per-row values of the eval step are the same loss
    with torch.no_grad():
        sums = electra_eval_step()(model.eval(), {"input_ids": inputs, "attention_mask": attention,
                                                  "token_type_ids": types, "labels": labels, "sample_noise": noise},
                                   torch.Generator().manual_seed(0))
    assert electra_summary({k: float(v.sum()) for k, v in sums.items()})["cls_bow_loss"] == pytest.approx(
        bow.item(), abs=1e-5)


def test_without_cls_bow_the_pretrainer_has_no_extra_parameters():
    torch.manual_seed(0)
    model = ElectraPretrainer.from_args(ElectraModelArgs(**TINY), VOCAB, PAD)
    assert model.cls_bow_head is None and not any(k.startswith("cls_bow") for k in model.state_dict())
    inputs, attention, types, labels, noise, _ = masked_batch()
    assert model(inputs, attention, types, labels, noise).cls_bow_loss is None
    with pytest.raises(ValueError, match="cls_bow_weight"):
        ElectraPretrainer.from_args(ElectraModelArgs(**TINY), VOCAB, PAD, cls_bow_weight=-1.0)


def test_discriminator_loss_reaches_the_shared_embeddings_but_not_the_generator():
    model = tiny_model()
    inputs, attention, types, labels, noise, _ = masked_batch()
    model(inputs, attention, types, labels, noise).discriminator_loss.backward()
    shared = {id(p) for p in model.discriminator.parameters()}
    generator_only = [(n, p) for n, p in model.generator.named_parameters() if id(p) not in shared]
    assert generator_only  # the generator's encoder and head
    for name, p in generator_only:
        assert p.grad is None or not p.grad.any(), name
    embeddings = model.discriminator.electra.embeddings
    assert embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert embeddings.position_embeddings.weight.grad.abs().sum() > 0


def test_embeddings_are_one_module_and_the_saved_folders_agree(tmp_path):
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    model = tiny_model()
    disc, gen = model.discriminator.electra.embeddings, model.generator.electra.embeddings
    assert gen is disc
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        assert getattr(gen, table).weight is getattr(disc, table).weight
    assert model.generator.generator_lm_head.weight is disc.word_embeddings.weight
    assert model.generator.config.hidden_size == 16 and model.discriminator.config.hidden_size == 48
    model.discriminator.save_pretrained(tmp_path / "d")
    model.generator.save_pretrained(tmp_path / "g")
    d = ElectraForPreTraining.from_pretrained(tmp_path / "d").electra.embeddings
    g = ElectraForMaskedLM.from_pretrained(tmp_path / "g").electra.embeddings
    for name, value in disc.state_dict().items():
        assert torch.equal(d.state_dict()[name], value) and torch.equal(g.state_dict()[name], value), name


def test_sinusoidal_positions_fill_the_one_shared_table():
    """--sinusoidal_positions: the shared position table holds the Transformer's sinusoids (written out here
    from the formula), scaled to the asked standard deviation, and both towers read that one table."""
    import math

    torch.manual_seed(0)
    model = ElectraPretrainer.from_args(ElectraModelArgs(**TINY, sinusoidal_positions=0.05), VOCAB, PAD)
    shared = model.discriminator.electra.embeddings.position_embeddings.weight
    assert model.generator.electra.embeddings.position_embeddings.weight is shared
    table = shared.detach()  # (P, E)
    positions, dim = table.shape
    reference = torch.tensor([[math.sin(p / 10_000 ** (i / dim)) if i % 2 == 0
                               else math.cos(p / 10_000 ** ((i - 1) / dim)) for i in range(dim)]
                              for p in range(positions)])
    assert table.std().item() == pytest.approx(0.05, rel=1e-4)
    assert torch.allclose(table, reference * (0.05 / reference.std()), atol=1e-6)
    torch.manual_seed(0)
    plain = ElectraPretrainer.from_args(ElectraModelArgs(**TINY), VOCAB, PAD)  # the default: the normal init
    plain_std = plain.discriminator.electra.embeddings.position_embeddings.weight.std().item()
    assert plain_std == pytest.approx(0.02, rel=0.05)


def test_eval_step_sums_and_summary():
    model = tiny_model().eval()
    inputs, attention, types, labels, _, _ = masked_batch()
    with torch.no_grad():
        sums = electra_eval_step()(model, {"input_ids": inputs, "attention_mask": attention, "token_type_ids": types,
                                           "labels": labels}, torch.Generator().manual_seed(0))
    assert all(v.shape == (3,) for v in sums.values())
    totals = {k: float(v.sum()) for k, v in sums.items()}
    assert totals["generator_count"] == (labels != -100).sum() and totals["discriminator_count"] == attention.sum()
    metrics = electra_summary(totals)
    assert 0 <= metrics["discriminator_accuracy"] <= 1 and 0 <= metrics["replaced_fraction"] <= 1
    with torch.no_grad():
        gen = model.generator(input_ids=inputs, attention_mask=attention, token_type_ids=types, labels=labels)
    assert metrics["generator_loss"] == pytest.approx(gen.loss.item(), abs=1e-5)


def test_fixed_eval_noise_makes_eval_sums_independent_of_batching():
    """The held-out set's noise is fixed per row, so per-example sums do not depend on how rows fall into
    batches (or processes), nor on the eval generator."""
    from datasets import Dataset

    from hfssl.text.masking import MLMCollator

    class Tok:  # the few tokenizer fields MLMCollator reads
        pad_token_id, mask_token_id, all_special_ids = PAD, 4, [0, 1, 2, 3, 4]

        def get_vocab(self):
            return {f"t{i}": i for i in range(VOCAB)}

        def __len__(self):
            return VOCAB

    g = torch.Generator().manual_seed(5)
    rows = Dataset.from_dict({"input_ids": [[2, *torch.randint(5, VOCAB, (n,), generator=g).tolist(), 3]
                                            for n in (12, 7, 14, 9)]})
    collator = MLMCollator(Tok())
    from hfssl.methods.bert import premask

    rows = add_sample_noise(premask(rows, collator, seed=1), seed=1)
    collate, step = pad_with_noise(collator.pad), electra_eval_step()
    model = tiny_model(cls_bow_weight=1.0, special_ids=Tok.all_special_ids).eval()
    with torch.no_grad():
        whole = step(model, collate(list(rows)), torch.Generator().manual_seed(0))
        parts = [step(model, collate(list(rows.select(ix))), torch.Generator().manual_seed(9)) for ix in ([0, 1, 2], [3])]
    for key, value in whole.items():
        assert torch.allclose(value, torch.cat([p[key] for p in parts]), atol=1e-6), key
    assert whole["replaced"].sum() > 0 and (whole["cls_bow_loss"] > 0).all()


def test_binned_auc_equals_pair_counting():
    pos, neg = [0, 2, 1, 3], [4, 1, 2, 0]  # counts per ascending bin; pairs in one bin are ties
    wins = sum(p * n * (1.0 if i > j else 0.5 if i == j else 0.0)
               for i, p in enumerate(pos) for j, n in enumerate(neg))
    assert binned_auc(pos, neg) == pytest.approx(wins / (sum(pos) * sum(neg)))


def test_held_out_auc_resolves_a_weak_discriminator():
    """The eval step's logit histograms give the AUC of pair counting (exact, ties 1/2) to 0.01 even when a
    weak discriminator's logits all sit within one unit of the base-rate log-odds, as after the plateau
    (bins of 1/2 read such a discriminator as ~0.5)."""
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(8, 64, generator=g) < 0.15).float()  # (B, T)
    logits = -1.7 + 0.3 * torch.randn(8, 64, generator=g) + 0.25 * labels  # replaced a little higher
    active = torch.ones_like(labels)
    active[0, 40:] = 0  # padding does not count
    pos, neg = logit_histograms(logits, labels, active)
    assert pos.shape == neg.shape == (8, pos.shape[1]) and pos.sum() + neg.sum() == active.sum()
    binned = binned_auc(pos.sum(0).tolist(), neg.sum(0).tolist())
    keep = active.bool()
    s1, s0 = logits[keep & (labels == 1)], logits[keep & (labels == 0)]
    exact = ((s1[:, None] > s0[None]).double() + 0.5 * (s1[:, None] == s0[None]).double()).mean().item()
    assert exact > 0.6 and binned == pytest.approx(exact, abs=0.01)


@pytest.mark.parametrize("flags, culprits", [
    (["--generator_size", "2.0"], ["--generator_size 2.0", "larger than the discriminator"]),
    (["--num_attention_heads", "3"], ["--hidden_size 128", "--num_attention_heads 3"]),
    (["--preset", "base", "--generator_size", "0.3"], ["--generator_size 0.3", "230", "3 attention heads"]),
    (["--nsp", "true"], ["--nsp true", "--nsp false"]),
])
def test_bad_model_flags_are_one_line(flags, culprits, tmp_path, capsys):
    proc = run_in_process("electra.py", ["--output_dir", tmp_path / "run", *flags], capsys)
    assert_user_error(proc, *culprits)
    assert not (tmp_path / "run").exists()


def test_a_bert_folder_is_refused_in_one_line(tmp_path, capsys):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert")
    proc = run_in_process("electra.py", ["--output_dir", tmp_path / "run", "--model_name_or_path",
                                         tmp_path / "bert"], capsys)
    assert_user_error(proc, "--model_name_or_path", "'bert'", "recipes/bert_mlm.py")


# --- the recipe end to end ---------------------------------------------------------------------------------
SMALL = ["--vocab_size", "600", "--max_seq_length", "32", "--per_device_train_batch_size", "8",
         "--per_device_eval_batch_size", "32", "--embedding_size", "32", "--hidden_size", "64",
         "--intermediate_size", "128", "--max_position_embeddings", "64", "--logging_steps", "2", "--eval_steps", "0",
         "--eval_fraction", "0.15", "--seed", "3", "--max_steps", "6", "--save_steps", "3",
         "--hidden_dropout_prob", "0.1"]


def run_recipe(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/electra.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Six chapters of Persuasion, 6 steps with a checkpoint at 3 (dropout on, so resume checks the RNG too)."""
    corpus = tmp_path_factory.mktemp("electra_corpus")
    text = gzip.open(ROOT / "hfssl/data/austen/persuasion.txt.gz", "rt", encoding="utf-8").read()
    for i, chapter in enumerate(text.split("\nChapter ")[1:7]):
        (corpus / f"ch{i:02d}.txt").write_text(chapter.split("\n", 1)[1], encoding="utf-8")
    out = tmp_path_factory.mktemp("run") / "electra"
    proc = run_recipe("--corpus", corpus, "--output_dir", out, *SMALL)
    assert f"saved the pretrained discriminator to {out / 'model'}" in proc.stdout
    # the [CLS] check ran on the held-out rows; its card note appears exactly when it warned
    (line,) = [x for x in proc.stdout.splitlines() if "[CLS] state of" in x]
    assert "held-out rows" in line and str(out / "model") in line
    assert line.startswith("warning:") == ("`[CLS]` state this model exports" in (out / "model/README.md").read_text())
    return out


def test_exported_discriminator_loads_in_auto_classes_with_only_the_head_new(trained):
    import json

    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        ElectraForPreTraining,
    )

    folder = trained / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "electra" and config["hidden_dropout_prob"] == 0.1  # --finetune_dropout
    assert "electra" in (folder / "README.md").read_text()
    heads = {AutoModelForSequenceClassification: "classifier.", AutoModelForQuestionAnswering: "qa_outputs.",
             AutoModelForTokenClassification: "classifier."}
    for auto, head in heads.items():
        model, info = auto.from_pretrained(folder, output_loading_info=True)
        assert info["missing_keys"] and all(k.startswith(head) for k in info["missing_keys"]), (auto, info)
        assert not info["mismatched_keys"]
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_discriminator_auc" in m for m in metrics) and any("replaced_fraction" in m for m in metrics)
    assert any("cls_bow_loss" in m for m in metrics) and any("eval_cls_bow_loss" in m for m in metrics)
    # the [CLS] bag-of-words head stays out of the export: a plain ElectraForPreTraining folder
    _, info = ElectraForPreTraining.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_exported_generator_fills_masks_and_shares_the_embedding_values(trained):
    from safetensors.torch import load_file
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(trained / "generator"))
    answers = fill(f"she was {fill.tokenizer.mask_token} to see him.")
    assert len(answers) == 5 and all("token_str" in a for a in answers)
    disc, gen = load_file(trained / "model/model.safetensors"), load_file(trained / "generator/model.safetensors")
    tables = [k for k in disc if k.startswith("electra.embeddings.")]
    assert len(tables) >= 4
    for key in tables:
        assert torch.equal(disc[key], gen[key]), key


def test_resume_from_a_checkpoint_reaches_the_same_weights(trained, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "electra"
    shutil.copytree(trained, out)
    shutil.rmtree(out / "checkpoints/step-6")
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "generator")
    corpus = next((trained.parent.parent).glob("electra_corpus*"))  # the fixture's own corpus
    proc = run_recipe("--corpus", corpus, "--output_dir", out, *SMALL, "--resume")
    assert "resumed from" in proc.stdout and "step-3" in proc.stdout
    for folder in ("model", "generator"):
        straight, resumed = load_file(trained / folder / "model.safetensors"), load_file(out / folder / "model.safetensors")
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (folder, key)


@pytest.mark.slow
def test_two_processes_train_and_evaluate_exactly_as_one(trained, tmp_path):
    """torchrun with 1 and 2 CPU processes (gloo, DDP over the shared embeddings), learning rate 0: the same
    held-out metrics, since the held-out masks and sampling noise are fixed before sharding."""
    import json

    corpus = next((trained.parent.parent).glob("electra_corpus*"))  # the fixture's own corpus
    metrics = []
    for n in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
               str(29600 + n + os.getpid() % 1000), str(ROOT / "recipes/electra.py"), "--corpus", str(corpus),
               "--output_dir", str(tmp_path / f"p{n}"), *SMALL, "--learning_rate", "0", "--max_steps", "2",
               "--per_device_eval_batch_size", "7", "--tokenizer_name_or_path", str(trained / "tokenizer")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-4000:]
        lines = [json.loads(x) for x in (tmp_path / f"p{n}/metrics.jsonl").read_text().splitlines()]
        metrics.append(next(x for x in lines if "eval_discriminator_loss" in x))
    for key in ("eval_examples", "eval_generator_loss", "eval_generator_accuracy", "eval_discriminator_loss",
                "eval_discriminator_accuracy", "eval_discriminator_auc", "eval_replaced_fraction"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-6, abs=1e-9), key
