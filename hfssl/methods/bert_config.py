"""BERT model configuration: size presets, ``BertModelArgs``, typed ``key=value`` overrides, and the config of
an existing BERT folder to continue pretraining from (checked before any data work)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import BertConfig, PretrainedConfig

from hfssl.errors import UserError
from hfssl.files import check_model_folder

PRESETS: dict[str, dict[str, int]] = {  # BERT family sizes (Turc et al. 2019, "Well-Read Students")
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}

# Set from the tokenizer, never from an override string: a mismatch breaks the embeddings.
_NOT_OVERRIDABLE = {"vocab_size", "pad_token_id"}


@dataclass
class BertModelArgs:
    """Which BERT to train: a size preset built from scratch, or an existing folder to continue from."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a local BERT folder to continue pretraining from (BertForPreTraining, BertForMaskedLM or "
                "BertModel weights, config.json, tokenizer files: e.g. a copy of the Hub's bert-base-uncased); "
                "its config and tokenizer are used, missing heads are initialised and listed"})
    preset: str | None = field(default=None, metadata={
        "help": f"model size when training from scratch, one of {', '.join(PRESETS)} (default tiny)"})
    hidden_dropout_prob: float | None = field(
        default=None, metadata={"help": "dropout on hidden states; None keeps BERT's 0.1"}
    )
    attention_probs_dropout_prob: float | None = field(
        default=None, metadata={"help": "dropout on attention probabilities; None keeps BERT's 0.1"}
    )
    finetune_dropout: float | None = field(default=None, metadata={
        "help": "dropout written into the exported config (hidden and attention), what fine-tuning then uses, "
                "e.g. BERT's 0.1; None (default) keeps the pretraining values: 0.1 cost a tiny BERT 3 points "
                "on a 300-step fine-tuning (docs/results.md)"})
    max_position_embeddings: int | None = field(default=None, metadata={
        "help": "longest sequence the model accepts (from scratch; default 512)"})
    sinusoidal_positions: float = field(
        default=0.0,
        metadata={"help": "if > 0, initialise the (learned, standard) position embeddings with sinusoids of "
                          "this standard deviation instead of random values: an init only, the architecture "
                          "and checkpoint format stay BERT's"},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "extra BertConfig fields as 'key=value,key=value' (e.g. 'hidden_act=gelu_new'), applied last"},
    )

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "finetune_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"--{name} {value} must be in [0, 1)")
        if self.max_position_embeddings is not None and self.max_position_embeddings < 1:
            raise ValueError(f"--max_position_embeddings {self.max_position_embeddings} must be positive")
        if self.sinusoidal_positions < 0:
            raise ValueError(f"--sinusoidal_positions {self.sinusoidal_positions} must be >= 0")
        parse_config_overrides(self.config_overrides)  # fail at argument parsing, not after data loading

    @property
    def positions(self) -> int:
        """The position-table size of a model built from these args (512 unless set)."""
        return self.max_position_embeddings or 512


def parse_override_value(key: str, raw: str, default: object) -> object:
    """Convert ``raw`` (a ``--config_overrides`` value) to the type of the config field's ``default`` for ``key``."""
    low = raw.strip().lower()
    try:
        if isinstance(default, bool):
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return low in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, str):
            return raw.strip()
    except ValueError as err:
        raise ValueError(
            f"config_overrides: {key}={raw!r} is not a valid {type(default).__name__} ({err})"
        ) from None
    # The default is None (e.g. classifier_dropout): take the most specific literal.
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw.strip()


def parse_overrides(text: str | None, config_class: type[PretrainedConfig],
                    fixed: set[str] = _NOT_OVERRIDABLE) -> dict[str, object]:
    """``"key=value,..."`` -> typed keyword arguments of ``config_class``'s own fields (types from their defaults).
    An unknown key, a key in ``fixed`` (set from the tokenizer) or an item without ``=`` raises ``ValueError``
    naming it."""
    if not text or not text.strip():
        return {}
    own = set(config_class.__annotations__) - fixed
    defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.name in own}
    out: dict[str, object] = {}
    for item in filter(str.strip, text.split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"config_overrides: item {item!r} is not key=value")
        if key in fixed:
            raise ValueError(f"config_overrides: {key!r} is set from the tokenizer and cannot be overridden")
        if key not in defaults:
            raise ValueError(f"config_overrides: unknown {config_class.__name__} key {key!r}; valid keys: "
                             f"{', '.join(sorted(defaults))}")
        out[key] = parse_override_value(key, raw, defaults[key])
    return out


def parse_config_overrides(text: str | None) -> dict[str, object]:
    """:func:`parse_overrides` for ``BertConfig`` (``vocab_size`` and ``pad_token_id`` come from the tokenizer)."""
    return parse_overrides(text, BertConfig)


def bert_config(args: BertModelArgs, vocab_size: int, pad_token_id: int = 0) -> BertConfig:
    """The ``BertConfig`` for ``args`` (preset < dropout fields < overrides), with SDPA attention."""
    if vocab_size < 1 or not 0 <= pad_token_id < vocab_size:
        raise ValueError(f"need vocab_size >= 1 and 0 <= pad_token_id < vocab_size, got {vocab_size}, {pad_token_id}")
    if args.model_name_or_path:
        raise ValueError("bert_config builds a new model; a --model_name_or_path folder's config is folder_config()")
    kwargs: dict[str, object] = dict(PRESETS[args.preset or "tiny"])
    kwargs.update(vocab_size=vocab_size, pad_token_id=pad_token_id, max_position_embeddings=args.positions)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    kwargs.update(parse_config_overrides(args.config_overrides))
    config = BertConfig(attn_implementation="sdpa", **kwargs)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size={config.hidden_size} is not a multiple of num_attention_heads={config.num_attention_heads}"
        )
    return config


def folder_config(args: BertModelArgs) -> BertConfig:
    """The ``BertConfig`` of the ``--model_name_or_path`` folder (read from its config.json only), with the
    dropout fields of ``args`` applied. A folder that is not a BERT, or settings that would change its shapes
    (preset, overrides, a position table of another size, a sinusoidal init), are errors naming both values."""
    path = Path(args.model_name_or_path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"--model_name_or_path {path}: no config.json there; give a local folder written by "
                        "save_pretrained (hfssl loads models from local folders only)")
    check_model_folder(path)  # every file it holds: empty, truncated, not safetensors, not UTF-8 (no tensor read)
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"--model_name_or_path {path}: config.json is not valid JSON ({err}); re-create the folder") from None
    if raw.get("model_type") != "bert":
        raise UserError(f"--model_name_or_path {path} holds a {raw.get('model_type')!r} model; continued "
                        "pretraining with recipes/bert_mlm.py needs a BERT folder (model_type 'bert')")
    shape = f"{raw.get('num_hidden_layers')} layers x {raw.get('hidden_size')}"
    if args.preset is not None:
        raise UserError(f"--preset {args.preset} conflicts with --model_name_or_path {path} ({shape}): the folder "
                        "defines the model; drop --preset (the flag, or preset: in your --config)")
    if args.config_overrides:
        raise UserError(f"--config_overrides {args.config_overrides!r} conflicts with --model_name_or_path {path}: "
                        "the folder's config defines the model; leave it unset")
    if args.sinusoidal_positions:
        raise UserError(f"--sinusoidal_positions {args.sinusoidal_positions} is an initialisation and "
                        f"--model_name_or_path {path} is already trained; set it to 0 (or use bert_continue.yaml)")
    folder_positions = raw.get("max_position_embeddings", 512)
    if args.max_position_embeddings is not None and args.max_position_embeddings != folder_positions:
        raise UserError(f"--max_position_embeddings {args.max_position_embeddings} differs from the "
                        f"{folder_positions} positions of --model_name_or_path {path}; leave it unset")
    config = BertConfig.from_pretrained(str(path), attn_implementation="sdpa")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    return config
