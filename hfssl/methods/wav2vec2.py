"""wav2vec 2.0 speech pretraining around transformers' ``Wav2Vec2ForPreTraining``.

A convolutional feature encoder turns 16 kHz audio into frames (20 ms with the paper's stride of 320); spans of
frames are masked (``mask_time_prob`` 0.65 of the frames start a span of ``mask_time_length`` 10, transformers'
``_compute_mask_indices``); the transformer's output at each masked frame must pick the quantized feature of that
frame (Gumbel-softmax product quantizer) among ``num_negatives`` distractors drawn from other masked frames of the
same utterance (``_sample_negative_indices``). Loss per masked frame: contrastive + 0.1 x diversity (the
codebooks' perplexity), as fairseq normalises it (Hugging Face's forward returns the sums).

``Wav2Vec2Pretrainer`` keeps Hugging Face's modules (``self.model``) and names the stages: ``encode``,
``quantize``, ``contrastive_logits``, ``forward_loss``. What the paper / fairseq add that the HF model lacks:

- the feature encoder's gradient scaled by ``feature_grad_mult`` 0.1 (:class:`GradMultiply`, a forward hook on
  the encoder's output, exactly where fairseq applies it);
- the Gumbel temperature annealed 2 -> 0.5 over the run (:func:`gumbel_temperature`, set by ``step_end``
  from the loop's ``on_step_end``; kept in a buffer so a resumed run continues with the same temperature);
- the quantizer, projections and contrastive logits computed in float32 under AMP;
- masks and negatives drawn with numpy (what transformers' functions use) seeded from the loop's per-step
  generator (:class:`Wav2Vec2Masking`), so a resume draws the same ones; the held-out set draws each clip's
  from its row (:func:`wav2vec2_eval_step`), the same at every evaluation and for any batching.

Paper: Baevski et al. 2020, wav2vec 2.0, https://arxiv.org/abs/2006.11477
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices
from transformers.utils import ModelOutput

from hfssl.audio.decode import SAMPLING_RATE
from hfssl.card import ModelCardInfo
from hfssl.errors import UserError
from hfssl.files import read_json_file
from hfssl.hub import load_folder_model, save_model_folder

_BASE_CONV = dict(conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
# tiny / small: 4 conv layers with the paper's total stride 320 (20 ms frames), so frame rates and CTC match BASE
_SMALL_CONV = dict(conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4))
PRESETS: dict[str, dict] = {
    "tiny": dict(**_SMALL_CONV, conv_dim=(128,) * 4, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
                 num_codevector_groups=2, num_codevectors_per_group=64, codevector_dim=64, proj_codevector_dim=64,
                 num_negatives=50, layerdrop=0.0),
    "small": dict(**_SMALL_CONV, conv_dim=(256,) * 4, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16,
                  num_codevector_groups=2, num_codevectors_per_group=160, codevector_dim=128,
                  proj_codevector_dim=128, num_negatives=100, layerdrop=0.0),
    # the paper's BASE (fairseq wav2vec2_base_librispeech): 95M parameters
    "base": dict(**_BASE_CONV, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, num_codevector_groups=2,
                 num_codevectors_per_group=320, codevector_dim=256, proj_codevector_dim=256, num_negatives=100,
                 layerdrop=0.05),
}
FINETUNE_MASK_PROB = 0.05  # the exported config's SpecAugment for fine-tuning (facebook/wav2vec2-base's)


@dataclass
class Wav2Vec2Args:
    """Which wav2vec 2.0 to build and its pretraining knobs (defaults: the paper's BASE recipe)."""

    preset: str | None = field(default=None, metadata={"help": f"model size, one of {', '.join(PRESETS)} "
                               "(default tiny; with --model_name_or_path: the folder's)"})
    mask_time_prob: float = field(default=0.65, metadata={"help": "Fraction of frames that start a masked span."})
    mask_time_length: int = field(default=10, metadata={"help": "Frames per masked span."})
    num_negatives: int | None = field(default=None, metadata={"help": "Distractors per masked frame (preset's)."})
    diversity_loss_weight: float = field(default=0.1, metadata={"help": "Weight of the codebook diversity loss."})
    feature_grad_mult: float = field(default=0.1, metadata={"help": "Scale of the gradient reaching the "
                                     "convolutional feature encoder (fairseq's feature_grad_mult)."})
    gumbel_temperature_start: float = field(default=2.0, metadata={"help": "Gumbel-softmax temperature at step 0."})
    gumbel_temperature_end: float = field(default=0.5, metadata={"help": "Lowest Gumbel-softmax temperature."})
    gumbel_anneal_fraction: float = field(default=0.7, metadata={"help": "Fraction of the run over which the "
                                          "temperature decays exponentially to its end value (fairseq's 0.999995 "
                                          "per step reaches 0.5 at 69 %% of BASE's 400k steps)."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a local Wav2Vec2ForPreTraining or Wav2Vec2Model folder to continue from: its config defines the "
                "model; missing parts (quantizer, projections) are initialised and listed"})

    def __post_init__(self):
        if self.preset is None and not self.model_name_or_path:
            self.preset = "tiny"
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        if not 0 < self.mask_time_prob < 1:
            raise ValueError(f"--mask_time_prob must be in (0, 1), got {self.mask_time_prob}")
        for name in ("mask_time_length", "num_negatives"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("diversity_loss_weight", "feature_grad_mult"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.gumbel_temperature_end <= self.gumbel_temperature_start:
            raise ValueError(f"--gumbel_temperature_end {self.gumbel_temperature_end} must be in (0, "
                             f"--gumbel_temperature_start {self.gumbel_temperature_start}]")
        if not 0 < self.gumbel_anneal_fraction <= 1:
            raise ValueError(f"--gumbel_anneal_fraction must be in (0, 1], got {self.gumbel_anneal_fraction}")


def wav2vec2_config(args: Wav2Vec2Args) -> Wav2Vec2Config:
    sizes = dict(PRESETS[args.preset or "tiny"])
    if args.num_negatives is not None:
        sizes["num_negatives"] = args.num_negatives
    return Wav2Vec2Config(**sizes, feat_extract_norm="group", do_stable_layer_norm=False,
                          mask_time_prob=FINETUNE_MASK_PROB, mask_time_length=args.mask_time_length,
                          diversity_loss_weight=args.diversity_loss_weight, contrastive_logits_temperature=0.1,
                          feat_quantizer_dropout=0.0, vocab_size=32)


def folder_config(args: Wav2Vec2Args, path: str) -> Wav2Vec2Config:
    """The config of a ``--model_name_or_path`` folder; a preset other than the folder's is an error."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"--model_name_or_path {path}: folder not found; give a Wav2Vec2ForPreTraining or "
                        "Wav2Vec2Model folder (e.g. the OUTPUT/model of recipes/wav2vec2.py)")
    raw = read_json_file(folder / "config.json", "--model_name_or_path config.json")
    if raw.get("model_type") != "wav2vec2":
        raise UserError(f"--model_name_or_path {path}: its model_type is {raw.get('model_type')!r}, not 'wav2vec2'; "
                        "give a Wav2Vec2ForPreTraining or Wav2Vec2Model folder")
    if args.preset is not None:
        want = PRESETS[args.preset]
        if any(raw.get(k) not in (v, list(v) if isinstance(v, tuple) else v) for k, v in want.items()
               if k in ("hidden_size", "num_hidden_layers", "conv_stride")):
            raise UserError(f"--preset {args.preset} differs from the model of --model_name_or_path {path} "
                            f"({raw.get('num_hidden_layers')} x {raw.get('hidden_size')}): the folder defines "
                            "the model; leave --preset unset")
    config = Wav2Vec2Config.from_pretrained(str(folder))
    config.mask_time_length, config.diversity_loss_weight = args.mask_time_length, args.diversity_loss_weight
    if args.num_negatives is not None:
        config.num_negatives = args.num_negatives
    return config


def frame_lengths(config: Wav2Vec2Config, samples):
    """Frames the feature encoder makes of ``samples`` (int or integer tensor / array)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        samples = (samples - kernel) // stride + 1
    return samples


def min_samples(config: Wav2Vec2Config, frames: int = 1) -> int:
    """The fewest samples that give ``frames`` frames (1: the receptive field)."""
    n = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        n = (n - 1) * stride + kernel
    return n


def required_samples(config: Wav2Vec2Config, mask_time_length: int) -> int:
    """The shortest usable clip: enough frames for two masked spans' start choices (fairseq's min_masks 2)."""
    return min_samples(config, mask_time_length + 1)


def gumbel_temperature(progress: float, start: float, end: float, anneal_fraction: float) -> float:
    """``start * (end / start) ** (progress / anneal_fraction)``, held at ``end`` afterwards (fairseq's
    exponential decay, laid over the run's progress instead of a step count)."""
    return max(start * (end / start) ** (min(progress, 1.0) / anneal_fraction), end)


class GradMultiply(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


@contextlib.contextmanager
def numpy_seeded(seed: int):
    """numpy's global RNG (what transformers' mask and negative samplers draw from) seeded for a block, and
    restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass
class Wav2Vec2Output(ModelOutput):
    loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    diversity_loss: torch.Tensor | None = None
    contrastive_accuracy: torch.Tensor | None = None
    codebook_perplexity: torch.Tensor | None = None
    gumbel_temperature: float | None = None


class Wav2Vec2Pretrainer(nn.Module):
    """``Wav2Vec2ForPreTraining`` (``self.model``) with named stages; ``forward`` returns ``.loss`` (per masked
    frame) and the metrics the loop logs."""

    def __init__(self, config: Wav2Vec2Config, args: Wav2Vec2Args | None = None):
        super().__init__()
        args = args or Wav2Vec2Args()
        self.args, self.config = args, config
        self.model = Wav2Vec2ForPreTraining(config)
        self.register_buffer("temperature", torch.tensor(float(args.gumbel_temperature_start)))
        self.model.wav2vec2.feature_extractor.register_forward_hook(self._scale_gradient)

    def _scale_gradient(self, module, inputs, output):
        if self.args.feature_grad_mult != 1.0 and torch.is_grad_enabled():
            return GradMultiply.apply(output, self.args.feature_grad_mult)
        return output

    @classmethod
    def from_folder(cls, path: str, config: Wav2Vec2Config, args: Wav2Vec2Args) -> tuple[Wav2Vec2Pretrainer, list[str]]:
        """Continue from a ``Wav2Vec2ForPreTraining`` or ``Wav2Vec2Model`` folder (float32); returns the model and
        the names of what the folder lacked (initialised)."""
        model = cls(config, args)
        loaded, info = load_folder_model(Wav2Vec2ForPreTraining, path, config=config)
        missing = set(info.get("missing_keys", []))
        model.model.load_state_dict({k: v for k, v in loaded.state_dict().items() if k not in missing}, strict=False)
        return model, sorted(missing)

    def step_end(self, step: int, total: float) -> None:
        """After each optimizer step: the temperature of the next step (from the run's progress)."""
        a = self.args
        self.temperature.fill_(gumbel_temperature(step / max(total, 1), a.gumbel_temperature_start,
                                                  a.gumbel_temperature_end, a.gumbel_anneal_fraction))

    def frame_mask(self, attention_mask: torch.Tensor | None, frames: int) -> torch.Tensor | None:
        """``(B, L)`` sample mask -> ``(B, T)`` bool frame mask."""
        if attention_mask is None:
            return None
        return self.model._get_feature_vector_attention_mask(frames, attention_mask)

    def encode(self, input_values, attention_mask, mask_time_indices):
        """Features, masked spans replaced by the learned mask embedding, transformer, projection:
        ``predicted`` ``(B, T, P)`` and the unmasked ``features`` ``(B, T, C)`` the quantizer reads."""
        out = self.model.wav2vec2(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices)
        return self.model.project_hid(out.last_hidden_state), self.model.dropout_features(out.extract_features)

    def quantize(self, features: torch.Tensor, mask_time_indices: torch.Tensor):
        """Gumbel product quantizer + projection, in float32: ``(B, T, P)`` targets, codebook perplexity."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            quantized, perplexity = self.model.quantizer(features.float(), mask_time_indices=mask_time_indices)
            return self.model.project_q(quantized.float()), perplexity

    def contrastive_logits(self, predicted, targets, negative_indices) -> torch.Tensor:
        """Cosine similarity / kappa of each frame's prediction with its target (index 0) and its distractors,
        float32 ``(B, T, 1 + K)``; a distractor equal to the target is -inf (as in Hugging Face and fairseq)."""
        with torch.autocast(device_type=predicted.device.type, enabled=False):
            batch, frames, dim = targets.shape
            negatives = targets.float().reshape(-1, dim)[negative_indices.long().reshape(-1)]
            negatives = negatives.view(batch, frames, -1, dim)  # (B, T, K, P)
            candidates = torch.cat([targets.float()[:, :, None], negatives], dim=2)  # (B, T, 1 + K, P)
            logits = torch.cosine_similarity(predicted.float()[:, :, None], candidates, dim=-1)
            logits = logits / self.config.contrastive_logits_temperature
            same = (negatives == targets.float()[:, :, None]).all(-1)  # (B, T, K)
            return torch.cat([logits[..., :1], logits[..., 1:].masked_fill(same, float("-inf"))], dim=-1)

    def forward_loss(self, logits: torch.Tensor, mask_time_indices: torch.Tensor):
        """Per example: contrastive loss summed over its masked frames ``(B,)``, frames whose target scores
        highest ``(B,)``, masked frames ``(B,)``."""
        mask = mask_time_indices.bool()
        per_frame = -torch.log_softmax(logits, dim=-1)[..., 0]  # (B, T)
        correct = (logits.argmax(-1) == 0) & mask
        return (per_frame * mask).sum(-1), correct.sum(-1), mask.sum(-1)

    def forward(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None):
        self.model.set_gumbel_temperature(float(self.temperature))
        mask = mask_time_indices.bool()
        predicted, features = self.encode(input_values, attention_mask, mask)
        targets, perplexity = self.quantize(features, mask)
        sums, correct, counts = self.forward_loss(self.contrastive_logits(predicted, targets,
                                                                          sampled_negative_indices), mask)
        masked = counts.sum().clamp(min=1)
        codes = self.config.num_codevectors_per_group * self.config.num_codevector_groups
        contrastive, diversity = sums.sum() / masked, (codes - perplexity) / codes
        return Wav2Vec2Output(loss=contrastive + self.config.diversity_loss_weight * diversity,
                              contrastive_loss=contrastive.detach(), diversity_loss=diversity.detach(),
                              contrastive_accuracy=correct.sum() / masked, codebook_perplexity=perplexity.detach(),
                              gumbel_temperature=float(self.temperature))


def draw_masks(frame_lengths_: list[int], frames: int, config: Wav2Vec2Config, mask_prob: float,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Span masks ``(B, T)`` and negative indices ``(B, T, K)`` with transformers' samplers under numpy seeded by
    ``seed``: spans only over each clip's real frames, distractors from the clip's other masked frames."""
    batch = len(frame_lengths_)
    sub_mask = torch.zeros(batch, frames, dtype=torch.long)
    for i, n in enumerate(frame_lengths_):
        sub_mask[i, :n] = 1
    with numpy_seeded(seed):
        mask = _compute_mask_indices((batch, frames), mask_prob, config.mask_time_length, attention_mask=sub_mask,
                                     min_masks=2)
        negatives = _sample_negative_indices((batch, frames), config.num_negatives, mask_time_indices=mask)
    return mask, negatives


class Wav2Vec2Masking:
    """The loop's per-step ``transform``: span masks and negatives for the batch, numpy seeded from the step's
    generator (a resumed run draws the same)."""

    def __init__(self, config: Wav2Vec2Config, mask_prob: float):
        self.config, self.mask_prob = config, mask_prob

    def __call__(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        values, attention = batch["input_values"], batch["attention_mask"]
        lengths = frame_lengths(self.config, attention.sum(-1).cpu()).tolist()
        mask, negatives = draw_masks(lengths, int(frame_lengths(self.config, values.shape[1])), self.config,
                                     self.mask_prob, seed)
        return {"input_values": values, "attention_mask": attention,
                "mask_time_indices": torch.from_numpy(mask).to(values.device),
                "sampled_negative_indices": torch.from_numpy(negatives.astype(np.int64)).to(values.device)}


def wav2vec2_eval_step(mask_prob: float, seed: int):
    """An eval step for ``hfssl.train.evaluate``: per clip, contrastive loss summed over its masked frames,
    correct frames and masked frames. Each clip's masks and negatives come from ``(seed, row)``: the same
    at every evaluation, whatever the batching or process count."""

    def step(model: Wav2Vec2Pretrainer, batch: dict, generator) -> dict[str, torch.Tensor]:
        values, attention, config = batch["input_values"], batch["attention_mask"], model.config
        frames = int(frame_lengths(config, values.shape[1]))
        masks, negatives = [], []
        for i, (row, n) in enumerate(zip(batch["row"].tolist(), frame_lengths(config, attention.sum(-1).cpu()).tolist())):
            one_seed = int(np.random.SeedSequence([seed, row]).generate_state(1)[0] & 0x7FFFFFFF)
            m, neg = draw_masks([n], frames, config, mask_prob, one_seed)
            masks.append(m[0])
            negatives.append(neg[0] + i * frames)  # index into the whole batch's (B * T) frames
        mask = torch.from_numpy(np.stack(masks)).to(values.device)
        negative = torch.from_numpy(np.stack(negatives).astype(np.int64)).to(values.device)
        predicted, features = model.encode(values, attention, mask)
        targets, _ = model.quantize(features, mask)
        sums, correct, counts = model.forward_loss(model.contrastive_logits(predicted, targets, negative), mask)
        return {"contrastive_loss": sums.double(), "correct": correct.double(), "masked": counts.double(),
                "clips": torch.ones_like(sums).double()}

    return step


def wav2vec2_summary(totals: dict[str, float]) -> dict[str, float]:
    masked = max(totals["masked"], 1.0)
    return {"contrastive_loss": totals["contrastive_loss"] / masked, "contrastive_accuracy": totals["correct"] / masked,
            "clips": totals["clips"]}


def feature_extractor() -> Wav2Vec2FeatureExtractor:
    """The processor of every exported folder: 16 kHz mono, per-clip normalisation, attention masks (the
    pretraining batches were padded with masks)."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def export_wav2vec2(model: Wav2Vec2Pretrainer, folder: str | Path, *, card: ModelCardInfo | None = None,
                    overwrite: bool = False, secrets: Iterable[str] = ()) -> Path:
    """Save the ``Wav2Vec2ForPreTraining`` (quantizer included, so it can be continued) + feature extractor:
    ``AutoModelForCTC`` / ``AutoModelForAudioClassification`` load it with only their head new."""
    inner = model.model
    inner.config.mask_time_prob = FINETUNE_MASK_PROB
    inner.config.architectures = ["Wav2Vec2ForPreTraining"]
    return save_model_folder(inner, folder, processor=feature_extractor(), card=card, overwrite=overwrite,
                             secrets=secrets)
