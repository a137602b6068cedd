"""CLIP-style image-text pretraining (Radford et al. 2021, https://arxiv.org/abs/2103.00020) on a transformers
``VisionTextDualEncoderModel``: an image tower and a text tower, each followed by a linear projection, trained so
that a picture and its caption have the highest cosine similarity among all pairs of the GLOBAL batch.

Towers: new ones from small presets (``--vision_preset``, ``--text_preset``), or hfssl's own exports
(``--vision_model_name_or_path``: a ViT folder of recipes/mae.py or recipes/contrastive.py --backbone vit, or a
``clip_vision_model`` folder; ``--text_model_name_or_path``: a BERT ``OUTPUT/model`` folder with its tokenizer).
The dual encoder projects the vision model's ``pooler_output`` through a ``Linear(config.hidden_size, ...)``:
a ViT's pooler (tanh(dense(CLS))) or CLIP vision's post-layernormed CLS fit; a ResNet has no ``hidden_size`` and a
``(B, C, 1, 1)`` pooler output, so the dual encoder cannot hold it and such a folder is refused.

Loss: symmetric InfoNCE with a learnable temperature, ``logit_scale`` = log(1 / T), initialised at log(1 / 0.07)
and clamped at log(100) after every optimizer step, as in CLIP. Each process's images are scored against the
captions of every process (and the reverse) through :func:`hfssl.distributed.gather_with_grad`; its positives sit
at its rows offset by ``rank * N``. ``--lock_image_tower`` is LiT (Zhai et al. 2022, https://arxiv.org/abs/2111.07991):
the image tower frozen and in eval mode (its projection still learns); ``--lock_text_tower`` likewise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    CLIPVisionModel,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    ViTConfig,
    ViTModel,
)
from transformers.utils import ModelOutput

from hfssl.distributed import gather_with_grad, world_info
from hfssl.errors import UserError
from hfssl.text.tokenizer import load_tokenizer
from hfssl.vision.pretrained import read_model_folder

MAX_LOGIT_SCALE = math.log(100.0)
INIT_LOGIT_SCALE = math.log(1 / 0.07)
VISION_PRESETS = {"tiny": (64, 2, 2), "small": (192, 6, 3), "base": (384, 12, 6)}  # (hidden, layers, heads)
TEXT_PRESETS = {"tiny": (64, 2, 2), "small": (256, 4, 4), "base": (512, 8, 8)}  # (hidden, layers, heads)
TEXT_POSITIONS = 64  # position table of a new text tower
VISION_TYPES = {"vit": ViTModel, "clip_vision_model": CLIPVisionModel}  # pooled output of config.hidden_size
TEXT_TYPES = {"bert": BertModel}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
WHY_NOT = {"resnet": "a ResNet's pooled output is (B, C, 1, 1) and its config has no hidden_size, and "
                     "VisionTextDualEncoderModel projects the vision pooler output with Linear(hidden_size, ...)"}


@dataclass
class CLIPArgs:
    """The two towers, the projection and what is trained."""

    vision_model_name_or_path: str | None = field(default=None, metadata={
        "help": "A local ViT (recipes/mae.py, recipes/contrastive.py --backbone vit) or CLIP vision folder for the "
                "image tower; ResNet folders are refused (the dual encoder needs a pooled (B, hidden_size) output)."})
    text_model_name_or_path: str | None = field(default=None, metadata={
        "help": "A local BERT folder with its tokenizer (recipes/bert_mlm.py's OUTPUT/model) for the text tower."})
    vision_preset: str = field(default="tiny", metadata={"help": f"New image tower: {', '.join(VISION_PRESETS)}."})
    patch_size: int = field(default=4, metadata={"help": "New image tower: ViT patch size."})
    text_preset: str = field(default="tiny", metadata={"help": f"New text tower: {', '.join(TEXT_PRESETS)}."})
    projection_dim: int = field(default=64, metadata={"help": "Size of the shared image-text embedding."})
    lock_image_tower: bool = field(default=False, metadata={"help": "LiT: freeze the image tower (eval mode)."})
    lock_text_tower: bool = field(default=False, metadata={"help": "Freeze the text tower (eval mode)."})

    def __post_init__(self):
        for name, presets in (("vision_preset", VISION_PRESETS), ("text_preset", TEXT_PRESETS)):
            if getattr(self, name) not in presets:
                raise ValueError(f"--{name} {getattr(self, name)!r} is unknown; choose from {', '.join(presets)}")
        if self.projection_dim < 1 or self.patch_size < 1:
            raise ValueError(f"--projection_dim and --patch_size must be at least 1, got {self.projection_dim}, "
                             f"{self.patch_size}")


def folder_type(path: str, flag: str, supported: dict) -> str:
    """The ``model_type`` of a tower folder, refused in one line unless the dual encoder can hold it."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"{flag} {path}: no config.json there; give a local folder written by save_pretrained")
    try:
        kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise UserError(f"{flag} {folder / 'config.json'} is not a JSON object; re-create the folder") from None
    if kind not in supported:
        why = WHY_NOT.get(kind, "VisionTextDualEncoderModel is only checked with these in hfssl")
        raise UserError(f"{flag} {path} holds a model of model_type {kind!r}: {why}; give a "
                        f"{' or '.join(supported)} folder")
    return kind


def check_towers(data_args, args: CLIPArgs):
    """Before any data work: each tower folder's type, and that its processor and its model agree (image size;
    vocabulary; positions vs ``--max_text_length``), else one line naming both. Sets ``data_args.image_size``
    (the image tower's, else 32). Returns (the vision folder's :class:`FolderModel` or None, the text folder's
    tokenizer or None)."""
    vision = tokenizer = None
    if args.vision_model_name_or_path:
        kind = folder_type(args.vision_model_name_or_path, "--vision_model_name_or_path", VISION_TYPES)
        vision = read_model_folder(args.vision_model_name_or_path, {kind: kind}, "recipes/clip.py")
        own = vision.config.get("image_size")
        if vision.image_size is not None and vision.image_size != own:
            raise UserError(f"--vision_model_name_or_path {vision.path}: its preprocessor_config.json makes "
                            f"{vision.image_size} px images but its config.json's image_size (the position table) "
                            f"is {own}; re-export the folder so that both agree")
        if data_args.image_size not in (None, own):
            raise UserError(f"--image_size {data_args.image_size} differs from the {own} of the image tower in "
                            f"--vision_model_name_or_path {vision.path} (its position table); leave image_size unset")
        data_args.image_size = own
    if args.text_model_name_or_path:
        folder = Path(args.text_model_name_or_path).expanduser()
        folder_type(str(folder), "--text_model_name_or_path", TEXT_TYPES)
        if not any((folder / n).is_file() for n in TOKENIZER_FILES):
            raise UserError(f"--text_model_name_or_path {folder} holds no tokenizer ({', '.join(TOKENIZER_FILES)} "
                            "missing); give the OUTPUT/model folder of recipes/bert_mlm.py, which carries its tokenizer")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer = load_tokenizer(folder)
        if len(tokenizer) > config.get("vocab_size", 0):
            raise UserError(f"--text_model_name_or_path {folder}: its tokenizer has {len(tokenizer)} tokens but "
                            f"config.json's vocab_size (the embedding table) is {config.get('vocab_size')}; give a "
                            "folder whose tokenizer was saved with its model")
        positions, where = config.get("max_position_embeddings", 0), f"--text_model_name_or_path {folder}"
    else:
        positions, where = TEXT_POSITIONS, f"a new text tower (--text_preset {args.text_preset})"
    if data_args.max_text_length > positions:
        raise UserError(f"--max_text_length {data_args.max_text_length} is longer than the {positions} positions of "
                        f"{where}; lower it")
    data_args.image_size = data_args.image_size or 32
    return vision, tokenizer


def vision_tower(args: CLIPArgs, image_size: int) -> tuple[nn.Module, list[str]]:
    """The image tower (a folder's, float32; or a new ViT) and the tensors it lacked (initialised)."""
    if args.vision_model_name_or_path:
        kind = folder_type(args.vision_model_name_or_path, "--vision_model_name_or_path", VISION_TYPES)
        model, info = VISION_TYPES[kind].from_pretrained(args.vision_model_name_or_path, dtype=torch.float32,
                                                         output_loading_info=True)
        return model, sorted(info.get("missing_keys", []))
    hidden, layers, heads = VISION_PRESETS[args.vision_preset]
    if image_size % args.patch_size:
        raise UserError(f"--image_size {image_size} is not a multiple of --patch_size {args.patch_size}; change one")
    return ViTModel(ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=4 * hidden, image_size=image_size, patch_size=args.patch_size)), []


def text_tower(args: CLIPArgs, vocab_size: int, pad_id: int) -> tuple[nn.Module, list[str]]:
    """The text tower (a BERT folder's, float32; or a new BERT over ``vocab_size`` pieces)."""
    if args.text_model_name_or_path:
        folder_type(args.text_model_name_or_path, "--text_model_name_or_path", TEXT_TYPES)
        model, info = BertModel.from_pretrained(args.text_model_name_or_path, dtype=torch.float32,
                                                output_loading_info=True)
        return model, sorted(info.get("missing_keys", []))
    hidden, layers, heads = TEXT_PRESETS[args.text_preset]
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, intermediate_size=4 * hidden, pad_token_id=pad_id,
                                max_position_embeddings=TEXT_POSITIONS)), []


def build_dual_encoder(args: CLIPArgs, image_size: int, vocab_size: int, pad_id: int):
    """``VisionTextDualEncoderModel`` over the two towers -> (model, names of the tensors newly initialised)."""
    vision, v_missing = vision_tower(args, image_size)
    text, t_missing = text_tower(args, vocab_size, pad_id)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision.config, text.config, projection_dim=args.projection_dim, logit_scale_init_value=INIT_LOGIT_SCALE)
    model = VisionTextDualEncoderModel(config, vision_model=vision, text_model=text)
    new = [f"vision_model.{k}" for k in v_missing] + [f"text_model.{k}" for k in t_missing]
    return model, new + ["visual_projection.weight", "text_projection.weight", "logit_scale"]


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
              gather: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE over the global batch -> (loss, image->text accuracy of the local rows).

    ``image_embeds``, ``text_embeds``: ``(N, D)`` of the LOCAL pairs (row i of each is a pair), normalised here;
    ``logit_scale``: log(1 / T), used as ``exp(min(logit_scale, log 100))``. The local images are scored
    against the captions of every process (``(N, M)``, M = world * N) and the local captions against every
    image; the positive of local row i is global row ``rank * N + i``. Mean of the two cross-entropies.
    """
    image_embeds, text_embeds = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)  # (N, D)
    all_images = gather_with_grad(image_embeds) if gather else image_embeds  # (M, D)
    all_texts = gather_with_grad(text_embeds) if gather else text_embeds  # (M, D)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    rank = world_info().rank if gather else 0
    labels = torch.arange(image_embeds.shape[0], device=image_embeds.device) + rank * image_embeds.shape[0]
    per_image = scale * image_embeds @ all_texts.T  # (N, M)
    per_text = scale * text_embeds @ all_images.T  # (N, M)
    loss = (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
    return loss, (per_image.argmax(-1) == labels).float().mean()


@dataclass
class CLIPOutput(ModelOutput):
    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None  # in-batch image->caption accuracy (global batch as candidates)
    temperature: torch.Tensor | None = None


class CLIPPretrainer(nn.Module):
    """The dual encoder (``self.model``, what is exported) + hfssl's global-batch loss and tower locking."""

    def __init__(self, model: VisionTextDualEncoderModel, lock_image_tower: bool = False, lock_text_tower: bool = False):
        super().__init__()
        self.model = model
        self.locked = [m for m, lock in ((model.vision_model, lock_image_tower), (model.text_model, lock_text_tower))
                       if lock]
        for tower in self.locked:
            tower.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        for tower in self.locked:  # LiT: a locked tower keeps its eval-mode behaviour (dropout off, BN frozen)
            tower.eval()
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> projected image embeddings ``(B, D)`` (not normalised)."""
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def encode_texts(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """``(B, T)`` token ids -> projected caption embeddings ``(B, D)`` (not normalised)."""
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask,
                                            token_type_ids=token_type_ids).pooler_output

    def forward(self, pixel_values, input_ids, attention_mask=None, token_type_ids=None, **_) -> CLIPOutput:
        images = self.encode_images(pixel_values)  # (N, D)
        texts = self.encode_texts(input_ids, attention_mask, token_type_ids)  # (N, D)
        loss, accuracy = clip_loss(images.float(), texts.float(), self.model.logit_scale.float())
        return CLIPOutput(loss=loss, accuracy=accuracy, temperature=1 / self.model.logit_scale.detach().exp())

    @torch.no_grad()
    def step_end(self, step: int = 0, total: int = 0) -> None:
        """After each optimizer step: clamp log(1 / T) to [0, log 100] (CLIP), so the export holds it too."""
        self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
