"""Export an image backbone as a plain transformers folder plus the image processor that feeds it.

The processor turns any image into what the encoder was trained on (RGB, resize, 0..1, normalise), so
``AutoModel`` / ``AutoModelForImageClassification`` and ``pipeline(...)`` see the training distribution.
MAE's encoder export (a ``ViTMAEForPreTraining`` -> plain ``ViTModel``) lives beside MAE in
:mod:`hfssl.methods.mae`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import ViTImageProcessor
from transformers.image_utils import PILImageResampling

from hfssl.card import ModelCardInfo
from hfssl.hub import save_model_folder


def vit_image_processor(image_size: int, mean: Sequence[float], std: Sequence[float]) -> ViTImageProcessor:
    """The processor that turns any image into what the encoder was trained on: RGB (transparency on
    white), bilinear resize to ``image_size`` square, 0..1 scale, ``(x - mean) / std``."""
    return ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                             resample=PILImageResampling.BILINEAR, do_rescale=True, rescale_factor=1 / 255,
                             do_normalize=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True)


def export_backbone(backbone, folder: str | Path, *, image_size: int, mean: Sequence[float], std: Sequence[float],
                    card: ModelCardInfo | None = None, overwrite: bool = False, secrets: Iterable[str] = ()) -> Path:
    """Save a contrastive method's ``ResNetModel`` / ``ViTModel`` with the processor that feeds it what it
    was trained on: images resized to the side the backbone really sees (``config.hfssl_upsample_to`` for a
    small-image ResNet, which training reached by upsampling; else ``image_size``). Main process only."""
    side = getattr(backbone.config, "hfssl_upsample_to", None) or image_size
    processor = vit_image_processor(side, mean, std)
    return save_model_folder(backbone, folder, processor=processor, card=card, overwrite=overwrite, secrets=secrets)
