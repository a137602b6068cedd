"""Export a pretrained MAE encoder as a plain ViT checkpoint plus its image processor.

``ViTMAEForPreTraining.save_pretrained`` writes ``model_type: vit_mae``, which
``AutoModelForImageClassification`` refuses, and ``ViTMAEModel`` keeps dropping 75 % of the patches at
inference. The encoder's modules are those of ``ViTModel`` (same names, same computation when no patch
is dropped; MAE's fixed sin-cos position table becomes ViT's learnable one), so the export copies the
tensors key by key into a ``ViTModel`` without pooler and saves that. transformers writes the file in
the classic ViT layout (``encoder.layer.N.attention.attention.query.weight`` ...), so any transformers
version loads it: ``AutoModel``, ``AutoModelForImageClassification`` (only the new head, ``classifier.*``,
is initialised; ``AutoModel`` also adds an untrained pooler), and ``pipeline("image-classification")``
once fine-tuned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import ViTConfig, ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining, ViTModel
from transformers.image_utils import PILImageResampling

from hfssl.hub import ModelCardInfo, save_model_folder
from hfssl.methods.mae import MAEPretrainer

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


def vit_image_processor(image_size: int, mean: Sequence[float], std: Sequence[float]) -> ViTImageProcessor:
    """The processor that turns any image into what the encoder was trained on: RGB (transparency on
    white), bilinear resize to ``image_size`` square, 0..1 scale, ``(x - mean) / std``."""
    return ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                             resample=PILImageResampling.BILINEAR, do_rescale=True, rescale_factor=1 / 255,
                             do_normalize=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True)


def export_vit(model: MAEPretrainer | ViTMAEForPreTraining, folder: str | Path, *, mean: Sequence[float],
               std: Sequence[float], card: ModelCardInfo | None = None, overwrite: bool = False,
               secrets: Iterable[str] = ()) -> Path:
    """Save the encoder as a ViT folder (safetensors + config + preprocessor config + card). Main process only."""
    vit = mae_encoder_as_vit(model)
    processor = vit_image_processor(vit.config.image_size, mean, std)
    return save_model_folder(vit, folder, processor=processor, card=card, overwrite=overwrite, secrets=secrets)


def export_backbone(backbone, folder: str | Path, *, image_size: int, mean: Sequence[float], std: Sequence[float],
                    card: ModelCardInfo | None = None, overwrite: bool = False, secrets: Iterable[str] = ()) -> Path:
    """Save a contrastive method's ``ResNetModel`` / ``ViTModel`` with the processor that feeds it what it
    was trained on: images resized to the side the backbone really sees (``config.hfssl_upsample_to`` for a
    small-image ResNet, which training reached by upsampling; else ``image_size``). Main process only."""
    side = getattr(backbone.config, "hfssl_upsample_to", None) or image_size
    processor = vit_image_processor(side, mean, std)
    return save_model_folder(backbone, folder, processor=processor, card=card, overwrite=overwrite, secrets=secrets)
