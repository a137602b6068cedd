"""transformers ResNet / ViT backbones for contrastive pretraining, and their pooled feature size.

The backbone is a plain ``ResNetModel`` / ``ViTModel`` so its ``save_pretrained`` folder loads with
``AutoModelForImageClassification`` (only ``classifier.*`` new). The feature size is read from the config
(``hidden_sizes[-1]`` / ``hidden_size``), never from a layer such as ``fc.in_features`` that a method may
have replaced.

Small images: transformers' ResNet stem is hard-coded (``ResNetEmbeddings``: a 7x7 stride-2 conv then a
stride-2 max-pool, whatever the config says; ``downsample_in_first_stage`` only concerns stage 1 and
``embedding_size`` only the stem's width). A CIFAR-style 3x3 stride-1 stem is therefore impossible within
``ResNetConfig``. Instead, with ``small_image_stem`` and images of at most 64 px, the pixels are upsampled
(bilinear) to :func:`input_size` = 4 x image_size before the stem, so the stem's output is as large as the
original image (what a CIFAR stem gives). Fine-tuning must feed the same size: the exported image
processor should resize to :func:`input_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from hfssl.errors import UserError
from hfssl.hub import load_folder_model
from hfssl.vision.pretrained import FolderModel, check_preset

RESNET_PRESETS = {  # (layer_type, hidden_sizes, depths, embedding_size)
    "tiny": ("basic", [16, 32, 64, 128], [1, 1, 1, 1], 16),
    "small": ("basic", [32, 64, 128, 256], [1, 1, 1, 1], 32),
    "resnet18": ("basic", [64, 128, 256, 512], [2, 2, 2, 2], 64),
    "resnet34": ("basic", [64, 128, 256, 512], [3, 4, 6, 3], 64),
    "resnet50": ("bottleneck", [256, 512, 1024, 2048], [3, 4, 6, 3], 64),
}
VIT_PRESETS = {  # (hidden_size, num_hidden_layers, num_attention_heads, patch_size)
    "tiny": (192, 12, 3, 16),
    "small": (384, 12, 6, 16),
    "base": (768, 12, 12, 16),
    "test": (32, 2, 2, 4),
}
SMALL_IMAGE = 64  # images up to this size count as small
SMALL_IMAGE_UPSAMPLE = 4  # upsampling that undoes the stem's stride 4 (conv stride 2 + max-pool stride 2)


@dataclass
class BackboneArgs:
    """Which transformers encoder to pretrain."""

    backbone: str = field(default="resnet", metadata={"help": "resnet or vit."})
    preset: str | None = field(default=None, metadata={"help": f"resnet: {', '.join(RESNET_PRESETS)}; vit: "
                               f"{', '.join(VIT_PRESETS)} (default small; with --model_name_or_path: the folder's)."})
    small_image_stem: bool = field(default=True, metadata={
        "help": "ResNet on images <= 64 px: upsample before the fixed 7x7/2 + max-pool stem."})
    small_image_upsample: int = field(default=SMALL_IMAGE_UPSAMPLE, metadata={
        "help": "The upsampling factor of small_image_stem: 4 undoes the stem's stride; 2 costs 4x less."})
    vit_pooling: str = field(default="cls", metadata={"help": "ViT features: cls token or mean of patches."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a local ResNetModel / ResNetForImageClassification / ViTModel folder to continue from (the Hub's "
                "microsoft/resnet-50 layout): it defines the backbone, its processor the image size and "
                "normalisation; the heads are new (listed), a classifier in the folder is left out"})

    def __post_init__(self):
        presets = {"resnet": RESNET_PRESETS, "vit": VIT_PRESETS}.get(self.backbone)
        if presets is None:
            raise ValueError(f"backbone must be resnet or vit, not {self.backbone!r}")
        if self.preset is None and not self.model_name_or_path:
            self.preset = "small"
        if self.preset is not None and self.preset not in presets:
            raise ValueError(f"unknown {self.backbone} preset {self.preset!r}; choose from {', '.join(presets)}")
        if self.vit_pooling not in ("cls", "mean"):
            raise ValueError(f"vit_pooling must be cls or mean, not {self.vit_pooling!r}")
        if self.small_image_upsample < 1:
            raise ValueError(f"small_image_upsample must be >= 1, got {self.small_image_upsample}")


def input_size(args: BackboneArgs, image_size: int) -> int:
    """The side the backbone actually sees for images of ``image_size``: that, or ``small_image_upsample`` x
    (default 4) for a small-image ResNet."""
    small = args.backbone == "resnet" and args.small_image_stem and image_size <= SMALL_IMAGE
    return image_size * args.small_image_upsample if small else image_size


def build_backbone(args: BackboneArgs, image_size: int) -> PreTrainedModel:
    """A randomly initialised ``ResNetModel`` or ``ViTModel`` (no classification head) for square images of
    ``image_size`` pixels (the data's size; a ViT's position table depends on it)."""
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if args.model_name_or_path:
        raise ValueError("build_backbone builds a new backbone; a --model_name_or_path folder's is load_backbone()")
    if args.backbone == "resnet":
        layer_type, hidden_sizes, depths, embedding_size = RESNET_PRESETS[args.preset]
        config = ResNetConfig(layer_type=layer_type, hidden_sizes=hidden_sizes, depths=depths,
                              embedding_size=embedding_size, downsample_in_first_stage=False)
        model = ResNetModel(config)
    else:
        hidden, layers, heads, patch = VIT_PRESETS[args.preset]
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the ViT patch size {patch}")
        config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=4 * hidden, image_size=image_size, patch_size=patch)
        model = ViTModel(config, add_pooling_layer=False)
    # saved with the config and read by features(): the side to upsample small images to (None: never)
    side = input_size(args, image_size)
    model.config.hfssl_upsample_to = side if side != image_size else None
    model.config.hfssl_vit_pooling = args.vit_pooling
    return model


BACKBONE_FOLDER_TYPES = {"resnet": "ResNetModel / ResNetForImageClassification",
                         "vit": "ViTModel / ViTForImageClassification"}


def check_backbone_folder(args: BackboneArgs, folder: FolderModel, image_size: int | None) -> None:
    """Before any data work: a backbone kind, preset or ViT image size other than the ``--model_name_or_path``
    folder's (read by :func:`hfssl.vision.pretrained.read_model_folder`) is an error naming both values."""
    kind, raw = folder.model_type, folder.config
    if args.backbone != kind:
        raise UserError(f"--backbone {args.backbone} conflicts with --model_name_or_path {folder.path}, a {kind} "
                        f"folder; set --backbone {kind}")
    if kind == "resnet":
        shapes = (raw.get("layer_type"), raw.get("hidden_sizes"), raw.get("depths"), raw.get("embedding_size"))
        check_preset(args.preset, RESNET_PRESETS, shapes, folder,
                     f"{shapes[0]} blocks, depths {shapes[2]}, widths {shapes[1]}")
        return
    shapes = (raw.get("hidden_size"), raw.get("num_hidden_layers"), raw.get("num_attention_heads"), raw.get("patch_size"))
    check_preset(args.preset, VIT_PRESETS, shapes, folder, f"{shapes[1]} layers x {shapes[0]}, patch {shapes[3]}")
    if image_size is not None and image_size != raw.get("image_size"):
        raise UserError(f"--image_size {image_size} differs from the {raw.get('image_size')} of the ViT in "
                        f"--model_name_or_path {folder.path} (its position table); leave image_size unset")


def load_backbone(args: BackboneArgs, folder: FolderModel, image_size: int) -> tuple[PreTrainedModel, list, list]:
    """The ``ResNetModel`` / ``ViTModel`` of a ``--model_name_or_path`` folder, in float32, set up like
    :func:`build_backbone` (checked by :func:`check_backbone_folder` first). Returns (model, tensors it lacked,
    initialised; tensors of the folder left out, such as a classifier)."""
    check_backbone_folder(args, folder, image_size)
    if folder.model_type == "resnet":
        model, info = load_folder_model(ResNetModel, folder.path)
    else:
        model, info = load_folder_model(ViTModel, folder.path, add_pooling_layer=False)
    side = input_size(args, image_size)
    model.config.hfssl_upsample_to = side if side != image_size else None
    model.config.hfssl_vit_pooling = args.vit_pooling
    return model, sorted(info.get("missing_keys", [])), sorted(info.get("unexpected_keys", []))


def feature_dim(model: PreTrainedModel) -> int:
    """The size of :func:`features`, from the config: ResNet ``hidden_sizes[-1]``, ViT ``hidden_size``."""
    config = model.config
    if config.model_type == "resnet":
        return int(config.hidden_sizes[-1])
    if hasattr(config, "hidden_size"):
        return int(config.hidden_size)
    raise ValueError(f"no feature size known for model_type {config.model_type!r}")


def features(model: PreTrainedModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` normalised pixels -> pooled features ``(B, feature_dim(model))``.

    ResNet: images are first upsampled to ``config.hfssl_upsample_to`` when set (small images, see the
    module docstring) and made channels-last; then the global-average ``pooler_output`` ``(B, D, 1, 1)`` flattened. ViT: the final-layernormed
    CLS token, or the mean of the patch tokens (``config.hfssl_vit_pooling``).
    """
    size = getattr(model.config, "hfssl_upsample_to", None)
    if model.config.model_type == "resnet":
        if size is not None and pixel_values.shape[-1] != size:
            pixel_values = F.interpolate(pixel_values, size=(size, size), mode="bilinear", align_corners=False)
        # channels-last input: oneDNN / cuDNN convolutions then run NHWC, 1.45x faster forward + backward for the
        # small ResNet on this CPU (fp32 and bf16); the weights and every value stay the same
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return model(pixel_values=pixel_values).pooler_output.flatten(1)  # (B, D)
    hidden = model(pixel_values=pixel_values).last_hidden_state  # (B, 1 + P, D)
    if getattr(model.config, "hfssl_vit_pooling", "cls") == "mean":
        return hidden[:, 1:].mean(1)  # (B, D)
    return hidden[:, 0]  # (B, D)
