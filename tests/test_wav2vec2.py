"""hfssl.methods.wav2vec2 against references: Hugging Face's Wav2Vec2ForPreTraining loss, a brute-force
contrastive accuracy, the unscaled gradient, fairseq's temperature values; masks fixed by the step generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hfssl.methods.wav2vec2 import (
    Wav2Vec2Args,
    Wav2Vec2Masking,
    Wav2Vec2Pretrainer,
    frame_lengths,
    gumbel_temperature,
    min_samples,
    required_samples,
    wav2vec2_config,
    wav2vec2_eval_step,
)


def batch_and_model(seed=0, grad_mult=0.1):
    torch.manual_seed(seed)
    args = Wav2Vec2Args(feature_grad_mult=grad_mult)
    config = wav2vec2_config(args)
    config.hidden_dropout = config.attention_dropout = config.activation_dropout = config.feat_proj_dropout = 0.0
    model = Wav2Vec2Pretrainer(config, args)
    values = torch.randn(2, 12_000)
    mask = torch.ones(2, 12_000, dtype=torch.long)
    mask[1, 9_000:] = 0
    return model, Wav2Vec2Masking(config, 0.65)({"input_values": values, "attention_mask": mask},
                                                torch.Generator().manual_seed(7))


def test_frame_lengths_match_hugging_face_and_min_samples_inverts_them():
    config = wav2vec2_config(Wav2Vec2Args())
    model = Wav2Vec2Pretrainer(config).model
    n = torch.arange(300, 20_000, 137)
    assert torch.equal(frame_lengths(config, n), model._get_feat_extract_output_lengths(n))
    for frames in (1, 11, 40):
        need = min_samples(config, frames)
        assert frame_lengths(config, need) == frames and frame_lengths(config, need - 1) == frames - 1
    assert required_samples(config, 10) == min_samples(config, 11)


def test_masks_and_negatives_are_a_function_of_the_step_generator():
    _, a = batch_and_model()
    _, b = batch_and_model()
    assert torch.equal(a["mask_time_indices"], b["mask_time_indices"])
    assert torch.equal(a["sampled_negative_indices"], b["sampled_negative_indices"])
    config = wav2vec2_config(Wav2Vec2Args())
    other = Wav2Vec2Masking(config, 0.65)({k: a[k] for k in ("input_values", "attention_mask")},
                                          torch.Generator().manual_seed(8))
    assert not torch.equal(a["mask_time_indices"], other["mask_time_indices"])
    state = np.random.get_state()[1].copy()
    Wav2Vec2Masking(config, 0.65)({k: a[k] for k in ("input_values", "attention_mask")}, torch.Generator())
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global RNG left as it was


def test_masks_stay_on_real_frames_and_negatives_on_other_masked_frames_of_the_clip():
    model, batch = batch_and_model()
    mask, neg = batch["mask_time_indices"], batch["sampled_negative_indices"]
    frames = mask.shape[1]
    real = int(frame_lengths(model.config, torch.tensor(9_000)))
    assert not mask[1, real:].any() and mask.sum(-1).min() >= 11  # two spans of 10 at least
    for b in range(2):
        for t in mask[b].nonzero().flatten().tolist():
            idx = neg[b, t] - b * frames
            assert mask[b, idx].all() and (idx != t).all()


def test_loss_is_hugging_faces_per_masked_frame():
    model, batch = batch_and_model()
    model.eval()
    with torch.no_grad():
        ours, ref = model(**batch), model.model(**batch)
    masked = batch["mask_time_indices"].sum()
    torch.testing.assert_close(ours.contrastive_loss * masked, ref.contrastive_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.diversity_loss * masked, ref.diversity_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.loss * masked, ref.loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.codebook_perplexity, ref.codevector_perplexity)


def test_contrastive_accuracy_against_brute_force():
    model, batch = batch_and_model(seed=3)
    model.eval()
    with torch.no_grad():
        out = model(**batch)
        predicted, features = model.encode(batch["input_values"], batch["attention_mask"], batch["mask_time_indices"])
        targets, _ = model.quantize(features, batch["mask_time_indices"])
    flat, hits, total = targets.reshape(-1, targets.shape[-1]), 0, 0
    for b in range(2):
        for t in batch["mask_time_indices"][b].nonzero().flatten().tolist():
            positive = F.cosine_similarity(predicted[b, t], targets[b, t], dim=0)
            others = [flat[i] for i in batch["sampled_negative_indices"][b, t].tolist()
                      if not torch.equal(flat[i], targets[b, t])]
            hits += all(positive >= F.cosine_similarity(predicted[b, t], o, dim=0) for o in others)
            total += 1
    assert total > 20
    assert math.isclose(float(out.contrastive_accuracy), hits / total, abs_tol=1e-6)


def test_eval_step_sums_match_the_forward_and_are_fixed_per_row():
    model, batch = batch_and_model()
    model.eval()
    step = wav2vec2_eval_step(0.65, seed=5)
    with torch.no_grad():
        a = step(model, {**batch, "row": torch.tensor([4, 9])}, None)
        b = step(model, {k: v[1:] for k, v in batch.items() if k in ("input_values", "attention_mask")}
                 | {"row": torch.tensor([9])}, None)
    assert a["masked"][1] == b["masked"][0] > 0
    # the padded clip alone (its padding trimmed by the encoder's mask) scores like it does in the batch
    torch.testing.assert_close(a["contrastive_loss"][1], b["contrastive_loss"][0], rtol=1e-4, atol=1e-3)


def test_the_feature_encoder_gets_a_tenth_of_the_gradient():
    grads = {}
    for mult in (1.0, 0.1):
        model, batch = batch_and_model(grad_mult=mult)
        model.train()
        torch.manual_seed(11)  # the same Gumbel noise in both runs
        model(**batch).loss.backward()
        grads[mult] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    conv = [n for n in grads[1.0] if ".feature_extractor." in n]
    rest = [n for n in grads[1.0] if "feature_projection.projection.weight" in n or "quantizer.weight_proj" in n]
    assert conv and rest
    for n in conv:
        scale = float(grads[1.0][n].abs().max())  # float sums: tolerance relative to the tensor, not each element
        torch.testing.assert_close(grads[0.1][n], 0.1 * grads[1.0][n], rtol=1e-4, atol=1e-5 * scale)
    for n in rest:
        torch.testing.assert_close(grads[0.1][n], grads[1.0][n], rtol=1e-4, atol=1e-5 * float(grads[1.0][n].abs().max()))


def test_gumbel_schedule_values_and_step_end():
    assert gumbel_temperature(0.0, 2.0, 0.5, 0.7) == 2.0
    assert math.isclose(gumbel_temperature(0.35, 2.0, 0.5, 0.7), 1.0)  # halfway through the decay: sqrt(2 * 0.5)
    assert gumbel_temperature(0.7, 2.0, 0.5, 0.7) == pytest.approx(0.5)
    assert gumbel_temperature(0.95, 2.0, 0.5, 0.7) == 0.5
    model, batch = batch_and_model()
    model.step_end(35, 100)
    assert float(model.temperature) == pytest.approx(1.0)
    assert model(**batch).gumbel_temperature == pytest.approx(1.0)
    assert model.model.quantizer.temperature == pytest.approx(1.0)
    assert "temperature" in model.state_dict()  # saved with checkpoints: a resume continues the schedule


def test_quantizer_and_logits_stay_float32_under_bf16_autocast():
    model, batch = batch_and_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        predicted, features = model.encode(batch["input_values"], batch["attention_mask"], batch["mask_time_indices"])
        targets, _ = model.quantize(features, batch["mask_time_indices"])
        logits = model.contrastive_logits(predicted, targets, batch["sampled_negative_indices"])
        loss = model(**batch).loss
    assert predicted.dtype == torch.bfloat16 and targets.dtype == torch.float32 and logits.dtype == torch.float32
    assert torch.isfinite(loss)
