"""Masked autoencoder (MAE) pretraining of a ViT, around transformers' ``ViTMAEForPreTraining``.

The image is cut into patches, 75 % of them are dropped at random, the encoder sees only the visible
quarter (plus the [CLS] token) and a light decoder predicts the pixels of the dropped patches; the loss
is the mean squared error on those patches only, per-patch normalised pixels as target by default.

``MAEPretrainer`` keeps Hugging Face's modules and parameter names but names the stages
(``patchify``, ``random_masking``, ``forward_encoder``, ``forward_decoder``, ``forward_loss``) and takes
the masking ``noise`` from the batch, drawn by :class:`MAEBatchTransform` from the loop's per-step
generator, so a resumed run masks exactly the same patches.

Trap (transformers 5.x): a freshly built ``ViTMAEForPreTraining`` leaves its fixed sin-cos position
embeddings, encoder *and* decoder, at zero (``ViTMAEEmbeddings.initialize_weights`` returns early once
the patch projection is marked initialised, and ``_init_weights`` zeroes the decoder's), and they are
frozen: the model never learns where a patch is. :func:`init_mae_weights` redoes MAE's initialisation.

Export: ``ViTMAEForPreTraining.save_pretrained`` writes ``model_type: vit_mae``, which
``AutoModelForImageClassification`` refuses, and ``ViTMAEModel`` keeps dropping 75 % of the patches at
inference. The encoder's modules are those of ``ViTModel`` (same names, same computation when no patch
is dropped; MAE's fixed sin-cos position table becomes ViT's learnable one), so :func:`export_vit` copies
the tensors key by key into a ``ViTModel`` without pooler and saves that in the classic ViT layout:
``AutoModel``, ``AutoModelForImageClassification`` (only ``classifier.*`` new) and
``pipeline("image-classification")`` once fine-tuned.

Paper: He et al. 2021, Masked Autoencoders Are Scalable Vision Learners, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch import nn
from transformers import ViTConfig, ViTMAEConfig, ViTMAEForPreTraining, ViTModel
from transformers.utils import ModelOutput

from hfssl.card import ModelCardInfo
from hfssl.errors import UserError
from hfssl.hub import load_folder_model, save_model_folder
from hfssl.vision.export import vit_image_processor
from hfssl.vision.pretrained import FolderModel, check_preset
from hfssl.vision.transforms import ImageViews

PRESETS: dict[str, dict[str, int]] = {
    # CPU sizes for 32x32 images, then MAE's ViT-Base (encoder 768 x 12, decoder 512 x 8) for GPUs.
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                 decoder_hidden_size=96, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                 decoder_intermediate_size=384),
    "small": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768,
                  decoder_hidden_size=128, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                  decoder_intermediate_size=512),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 decoder_hidden_size=512, decoder_num_hidden_layers=8, decoder_num_attention_heads=16,
                 decoder_intermediate_size=2048),
}


@dataclass
class MAEArgs:
    """Which MAE to build (a size preset plus MAE's knobs) and its learning-rate rule."""

    preset: str | None = field(default=None, metadata={"help": f"model size, one of {', '.join(PRESETS)} "
                               "(default tiny; with --model_name_or_path: the folder's)"})
    patch_size: int | None = field(default=None, metadata={"help": "Patch side in pixels (image_size must be a "
                                   "multiple; default 4; with --model_name_or_path: the folder's)."})
    mask_ratio: float = field(default=0.75, metadata={"help": "Fraction of patches hidden from the encoder."})
    norm_pix_loss: bool = field(default=True, metadata={"help": "Target: pixels normalised within each patch."})
    decoder_hidden_size: int | None = field(default=None, metadata={"help": "Override the preset's decoder width."})
    decoder_num_hidden_layers: int | None = field(default=None, metadata={"help": "Override the decoder depth."})
    base_learning_rate: float = field(default=1.5e-4, metadata={"help": "MAE's rule: learning_rate = base_learning_rate"
                                      " x total batch / 256 (0: use --learning_rate as given)."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a local ViTMAEForPreTraining folder to continue from (the Hub's facebook/vit-mae-base layout): its "
                "config defines the model, its processor the image size and normalisation; missing parts are "
                "initialised and listed"})

    def __post_init__(self):
        if not self.model_name_or_path:  # from scratch: the defaults; a folder defines its own shapes
            self.preset = "tiny" if self.preset is None else self.preset
            self.patch_size = 4 if self.patch_size is None else self.patch_size
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio={self.mask_ratio} must be in [0, 1)")
        if self.patch_size is not None and self.patch_size < 1:
            raise ValueError(f"--patch_size must be at least 1, got {self.patch_size}")
        if not self.base_learning_rate >= 0:
            raise ValueError(f"--base_learning_rate must be >= 0 (0: use --learning_rate), got {self.base_learning_rate}")
        for name in ("decoder_hidden_size", "decoder_num_hidden_layers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 (or unset for the preset's), got {getattr(self, name)}")


def mae_config(args: MAEArgs, image_size: int) -> ViTMAEConfig:
    """The ``ViTMAEConfig`` of ``args`` for square RGB images of side ``image_size``."""
    patch_size = args.patch_size or 4
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    sizes = dict(PRESETS[args.preset or "tiny"])
    for key in ("decoder_hidden_size", "decoder_num_hidden_layers"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    for width, heads in ((sizes["hidden_size"], sizes["num_attention_heads"]),
                         (sizes["decoder_hidden_size"], sizes["decoder_num_attention_heads"])):
        if width % heads or width % 4:
            raise ValueError(f"width {width} must be a multiple of 4 and of its {heads} attention heads")
    return ViTMAEConfig(**sizes, image_size=image_size, patch_size=patch_size, num_channels=3,
                        mask_ratio=args.mask_ratio, norm_pix_loss=args.norm_pix_loss, layer_norm_eps=1e-6)


MAE_FOLDER_TYPES = {"vit_mae": "ViTMAEForPreTraining"}


def folder_mae_config(args: MAEArgs, folder: FolderModel, image_size: int | None) -> ViTMAEConfig:
    """The ``ViTMAEConfig`` of a ``--model_name_or_path`` folder (:func:`hfssl.vision.pretrained.read_model_folder`)
    with this run's ``mask_ratio`` and ``norm_pix_loss`` (training choices, not shapes). A preset, patch size,
    decoder size or image size other than the folder's is an error naming both values."""
    raw = folder.config
    shapes = {k: raw.get(k) for k in PRESETS["tiny"]}
    check_preset(args.preset, PRESETS, shapes, folder, f"encoder {raw.get('num_hidden_layers')} x "
                 f"{raw.get('hidden_size')}, decoder {raw.get('decoder_num_hidden_layers')} x {raw.get('decoder_hidden_size')}")
    for name, value in (("patch_size", args.patch_size), ("decoder_hidden_size", args.decoder_hidden_size),
                        ("decoder_num_hidden_layers", args.decoder_num_hidden_layers), ("image_size", image_size)):
        if value is not None and value != raw.get(name):
            raise UserError(f"--{name} {value} differs from the {raw.get(name)} of --model_name_or_path "
                            f"{folder.path}: the folder defines the model; leave {name} unset")
    config = ViTMAEConfig.from_pretrained(str(folder.path))
    config.mask_ratio, config.norm_pix_loss = args.mask_ratio, args.norm_pix_loss
    return config


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding ``(1 + grid * grid, dim)``, a zero row first for [CLS]; the layout
    ``[sin_w | cos_w | sin_h | cos_h]`` of MAE's code (and of Hugging Face's pretrained checkpoints)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (D/4,)
    h, w = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                          indexing="ij")  # (G, G) each, rows outer
    ew, eh = w.flatten()[:, None] * omega, h.flatten()[:, None] * omega  # (G*G, D/4)
    table = torch.cat([ew.sin(), ew.cos(), eh.sin(), eh.cos()], dim=1)  # (G*G, D)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


@torch.no_grad()
def init_mae_weights(model: ViTMAEForPreTraining) -> None:
    """MAE's initialisation: xavier-uniform linear layers and patch projection, N(0, 0.02) [CLS] and mask
    tokens, unit LayerNorms, and the fixed sin-cos position embeddings that transformers leaves at zero."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    embeddings, decoder = model.vit.embeddings, model.decoder
    grid = int(embeddings.patch_embeddings.num_patches**0.5)
    projection = embeddings.patch_embeddings.projection
    nn.init.xavier_uniform_(projection.weight.view(projection.weight.shape[0], -1))
    nn.init.zeros_(projection.bias)
    nn.init.normal_(embeddings.cls_token, std=0.02)
    nn.init.normal_(decoder.mask_token, std=0.02)
    embeddings.position_embeddings.copy_(sincos_position_embedding(grid, embeddings.position_embeddings.shape[-1]))
    decoder.decoder_pos_embed.copy_(sincos_position_embedding(grid, decoder.decoder_pos_embed.shape[-1]))


@dataclass
class MAEOutput(ModelOutput):
    loss: torch.Tensor | None = None


class MAEPretrainer(nn.Module):
    """``ViTMAEForPreTraining`` (as ``self.model``) with named stages; ``forward`` returns ``.loss``."""

    def __init__(self, config: ViTMAEConfig):
        super().__init__()
        self.config = config
        self.model = ViTMAEForPreTraining(config)
        init_mae_weights(self.model)

    @classmethod
    def from_folder(cls, path, config: ViTMAEConfig) -> tuple[MAEPretrainer, list[str]]:
        """Continue from a ``ViTMAEForPreTraining`` (or encoder-only ``ViTMAEModel``) folder, in float32: every
        tensor the folder holds is loaded; what it lacks keeps MAE's initialisation (:func:`init_mae_weights`,
        not transformers' zeroed position tables). Returns the model and the names of the parts it lacked."""
        model = cls(config)
        loaded, info = load_folder_model(ViTMAEForPreTraining, path, config=config)
        missing = set(info.get("missing_keys", []))
        model.model.load_state_dict({k: v for k, v in loaded.state_dict().items() if k not in missing}, strict=False)
        return model, sorted(missing)

    @property
    def num_patches(self) -> int:
        return self.model.vit.embeddings.patch_embeddings.num_patches

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, L, p * p * C)``."""
        return self.model.patchify(pixel_values)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, L, p * p * C)`` -> ``(B, C, H, W)``."""
        return self.model.unpatchify(patches)

    def random_masking(self, sequence: torch.Tensor, noise: torch.Tensor):
        """Keep the ``(1 - mask_ratio) L`` patches with the lowest ``noise`` ``(B, L)``: returns the kept
        ``(B, K, D)``, ``mask`` ``(B, L)`` (1 = dropped) and ``ids_restore`` ``(B, L)``."""
        return self.model.vit.embeddings.random_masking(sequence, noise)

    def forward_encoder(self, pixel_values: torch.Tensor, noise: torch.Tensor):
        """Embed, mask (``random_masking``), encode the visible patches: ``latent`` ``(B, 1 + K, H)``
        ([CLS] first), ``mask`` ``(B, L)``, ``ids_restore`` ``(B, L)``."""
        out = self.model.vit(pixel_values, noise=noise)
        return out.last_hidden_state, out.mask, out.ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Mask tokens back in place, decoder blocks, pixel prediction per patch: ``(B, L, p * p * C)``."""
        return self.model.decoder(latent, ids_restore).logits

    def patch_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, L, p * p * C)`` targets: patches, normalised by their own mean / std with norm_pix_loss."""
        target = self.patchify(pixel_values)
        if self.config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, pixel_values, pred, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared error per dropped patch, summed per image ``(B,)``, and the dropped count ``(B,)``."""
        per_patch = ((pred.float() - self.patch_targets(pixel_values).float()) ** 2).mean(dim=-1)  # (B, L)
        return (per_patch * mask).sum(-1), mask.sum(-1)

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None) -> MAEOutput:
        """MAE loss (the mean over all dropped patches of the batch, as Hugging Face computes it)."""
        latent, mask, ids_restore = self.forward_encoder(pixel_values, noise)
        sums, counts = self.forward_loss(pixel_values, self.forward_decoder(latent, ids_restore), mask)
        return MAEOutput(loss=sums.sum() / counts.sum())

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted images ``(B, C, H, W)`` in the input's pixel space (per-patch normalisation undone
        with the true patch statistics) and the mask as an image ``(B, 1, H, W)`` (1 = dropped)."""
        latent, mask, ids_restore = self.forward_encoder(pixel_values, noise)
        pred = self.forward_decoder(latent, ids_restore).float()  # (B, L, D)
        if self.config.norm_pix_loss:
            patches = self.patchify(pixel_values).float()
            pred = pred * (patches.var(-1, keepdim=True) + 1.0e-6) ** 0.5 + patches.mean(-1, keepdim=True)
        mask_image = self.unpatchify(mask[..., None].expand_as(pred).contiguous())[:, :1]
        return self.unpatchify(pred), mask_image


class MAEBatchTransform:
    """The loop's per-step ``transform``: augment + normalise the uint8 batch, then draw the masking
    noise, both from the step's generator (in that order)."""

    def __init__(self, views: ImageViews, num_patches: int):
        self.views, self.num_patches = views, num_patches

    def __call__(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = self.views(batch["pixel_values"], generator)  # (B, 3, S, S) float
        noise = torch.rand(len(pixels), self.num_patches, generator=generator, device=generator.device)  # (B, L)
        return {"pixel_values": pixels, "noise": noise.to(pixels.device)}


def with_fixed_noise(ds: datasets.Dataset, num_patches: int, seed: int) -> datasets.Dataset:
    """Add a ``noise`` column drawn once: every evaluation, on any number of processes, scores the same
    images with the same patches dropped."""
    noise = torch.rand(len(ds), num_patches, generator=torch.Generator().manual_seed(seed))  # (N, L)
    feature = datasets.Sequence(datasets.Value("float32"), length=num_patches)
    return ds.add_column("noise", noise.tolist(), feature=feature)


def mae_eval_step(views: ImageViews):
    """An eval step for ``hfssl.train.evaluate``: per-image squared-error sums on the dropped patches of
    an un-augmented, pre-noised batch (see :func:`with_fixed_noise`)."""

    def step(model: MAEPretrainer, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = views(batch["pixel_values"])  # (B, 3, S, S)
        latent, mask, ids_restore = model.forward_encoder(pixels, batch["noise"].float())
        sums, counts = model.forward_loss(pixels, model.forward_decoder(latent, ids_restore), mask)
        return {"loss": sums.double(), "masked_patches": counts.double(), "examples": torch.ones_like(sums).double()}

    return step


def mae_summary(totals: dict[str, float]) -> dict[str, float]:
    """Mean squared error over every dropped patch of the evaluation set."""
    return {"loss": totals["loss"] / max(totals["masked_patches"], 1.0), "examples": totals["examples"]}


# --- export: the encoder as a plain ViT folder -----------------------------------------------------

_SHARED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                  "image_size", "patch_size", "num_channels", "qkv_bias")


def vit_config_from_mae(config: ViTMAEConfig, **overrides) -> ViTConfig:
    """The ``ViTConfig`` of an MAE's encoder (architecture fields only; no decoder, no mask ratio)."""
    return ViTConfig(**{k: getattr(config, k) for k in _SHARED_FIELDS}, **overrides)


def mae_encoder_as_vit(model: MAEPretrainer | ViTMAEForPreTraining) -> ViTModel:
    """A ``ViTModel`` (no pooler) holding copies of the MAE encoder's tensors; fails on any mismatch."""
    mae = model.model if isinstance(model, MAEPretrainer) else model
    vit = ViTModel(vit_config_from_mae(mae.config), add_pooling_layer=False)
    state = {k: v.detach().clone() for k, v in mae.vit.state_dict().items()}  # the module trees match name for name
    vit.load_state_dict(state, strict=True)  # every tensor mapped, none left over
    return vit.to(next(mae.parameters()).device).eval()


def export_vit(model: MAEPretrainer | ViTMAEForPreTraining, folder: str | Path, *, mean: Sequence[float],
               std: Sequence[float], card: ModelCardInfo | None = None, overwrite: bool = False,
               secrets: Iterable[str] = ()) -> Path:
    """Save the encoder as a ViT folder (safetensors + config + preprocessor config + card). Main process only."""
    vit = mae_encoder_as_vit(model)
    processor = vit_image_processor(vit.config.image_size, mean, std)
    return save_model_folder(vit, folder, processor=processor, card=card, overwrite=overwrite, secrets=secrets)
