"""Causal LM configuration: size presets for GPT-2 and Llama, ``GPTModelArgs``, typed ``key=value`` overrides, the
config of a local causal LM folder to continue from (checked before any data work), and the card's samples."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, GPT2Config, LlamaConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hfssl.errors import UserError
from hfssl.methods.bert_config import parse_overrides as parse_config_fields

# layers x width, heads; GPT-2's MLP is 4x wide, Llama's SwiGLU ~8/3x (rounded up to a multiple of 32: as many
# parameters as the 4x GELU MLP). "gpt2" is GPT-2 small (124M with its 50,257-token vocabulary).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(layers=2, hidden=128, heads=2),
    "mini": dict(layers=4, hidden=256, heads=4),
    "small": dict(layers=6, hidden=512, heads=8),
    "gpt2": dict(layers=12, hidden=768, heads=12),
}
ARCHITECTURES = ("gpt2", "llama")
DEFAULT_POSITIONS = 1024  # GPT-2's context; Llama's RoPE has no table, this is only its max_position_embeddings
_NOT_OVERRIDABLE = {"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"}  # set from the tokenizer
_CONFIGS = {"gpt2": GPT2Config, "llama": LlamaConfig}


@dataclass
class GPTModelArgs:
    """Which causal LM to train: a size preset built from scratch, or an existing folder to continue from."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a local causal LM folder to continue pretraining from (save_pretrained: config.json, weights, "
                "tokenizer; e.g. a copy of the Hub's gpt2); its config and tokenizer are used"})
    architecture: str | None = field(default=None, metadata={
        "help": f"from scratch: {' or '.join(ARCHITECTURES)} (default gpt2: GPT2LMHeadModel, learned positions, "
                "LayerNorm, GELU; llama: LlamaForCausalLM, RoPE, RMSNorm, SwiGLU), at the same presets"})
    preset: str | None = field(default=None, metadata={
        "help": f"model size from scratch, one of {', '.join(PRESETS)} (default tiny; gpt2 = GPT-2 small)"})
    n_positions: int | None = field(default=None, metadata={
        "help": f"longest sequence the model accepts (from scratch; default {DEFAULT_POSITIONS})"})
    dropout: float | None = field(default=None, metadata={
        "help": "dropout on embeddings, residuals and attention (from scratch; None keeps GPT-2's 0.1, Llama's 0)"})
    config_overrides: str | None = field(default=None, metadata={
        "help": "extra GPT2Config / LlamaConfig fields as 'key=value,key=value' (e.g. 'activation_function=gelu'), "
                "applied last"})

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        if self.architecture is not None and self.architecture not in ARCHITECTURES:
            raise ValueError(f"--architecture {self.architecture!r} is unknown; choose one of {', '.join(ARCHITECTURES)}")
        if self.n_positions is not None and self.n_positions < 2:
            raise ValueError(f"--n_positions {self.n_positions} must be at least 2")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout {self.dropout} must be in [0, 1)")
        parse_overrides(self.config_overrides, _CONFIGS[self.architecture or "gpt2"])  # fail at parsing time

    @property
    def positions(self) -> int:
        return self.n_positions or DEFAULT_POSITIONS


@dataclass
class SampleArgs:
    """Text the model card shows: greedy continuations of fixed prompts (deterministic)."""

    sample_prompts: str = field(default="It is a truth universally acknowledged|She had never|The weather was",
                                metadata={"help": "prompts for the model card's samples, separated by '|' ('' none)"})
    sample_new_tokens: int = field(default=40, metadata={"help": "tokens generated per sample (greedy)"})

    def __post_init__(self):
        if self.sample_new_tokens < 1:
            raise ValueError(f"--sample_new_tokens must be at least 1, got {self.sample_new_tokens}")

    @property
    def prompts(self) -> list[str]:
        return [p for p in self.sample_prompts.split("|") if p.strip()]


def parse_overrides(text: str | None, config_class: type[PretrainedConfig]) -> dict[str, object]:
    """:func:`hfssl.methods.bert_config.parse_overrides` for a causal LM config (vocabulary size and the special
    token ids come from the tokenizer)."""
    return parse_config_fields(text, config_class, _NOT_OVERRIDABLE)


def causal_config(args: GPTModelArgs, vocab_size: int, eos_token_id: int):
    """The ``GPT2Config`` / ``LlamaConfig`` for ``args`` (preset < dropout < overrides), SDPA attention, tied input
    and output embeddings, bos = eos = the tokenizer's end-of-text. ``pad_token_id`` stays unset while training
    (rows are never padded; with it set, every forward checks the rows' ends for it, a device sync, and warns about
    padding at the eos between documents): the recipe writes it into the exported config."""
    if args.model_name_or_path:
        raise ValueError("causal_config builds a new model; a --model_name_or_path folder's config is folder_config()")
    size = PRESETS[args.preset or "tiny"]
    special = dict(vocab_size=vocab_size, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                   tie_word_embeddings=True)
    if (args.architecture or "gpt2") == "gpt2":
        kwargs = dict(n_layer=size["layers"], n_embd=size["hidden"], n_head=size["heads"], n_positions=args.positions)
        if args.dropout is not None:
            kwargs.update(resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout)
        config_class = GPT2Config
    else:
        kwargs = dict(num_hidden_layers=size["layers"], hidden_size=size["hidden"], num_attention_heads=size["heads"],
                      num_key_value_heads=size["heads"], intermediate_size=-(-8 * size["hidden"] // 3 // 32) * 32,
                      max_position_embeddings=args.positions, rms_norm_eps=1e-5)
        if args.dropout is not None:
            kwargs.update(attention_dropout=args.dropout)
        config_class = LlamaConfig
    kwargs.update(parse_overrides(args.config_overrides, config_class))
    config = config_class(attn_implementation="sdpa", **special, **kwargs)
    hidden, heads = (config.n_embd, config.n_head) if config_class is GPT2Config else (config.hidden_size,
                                                                                       config.num_attention_heads)
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")
    return config


def folder_config(args: GPTModelArgs) -> PretrainedConfig:
    """The config of the ``--model_name_or_path`` folder (read from its config.json before any data work), with
    ``--dropout`` applied. A folder that is not a causal LM, or settings that would change its shapes (preset,
    architecture, overrides, another position count), are errors naming both values."""
    path = Path(args.model_name_or_path)
    if not (path / "config.json").is_file():
        raise UserError(f"--model_name_or_path {path}: no config.json there; give a local folder written by "
                        "save_pretrained (hfssl loads models from local folders only)")
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"--model_name_or_path {path}: config.json is not valid JSON ({err}); re-create the folder") from None
    if raw.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UserError(f"--model_name_or_path {path} holds a {raw.get('model_type')!r} model, not a causal LM; "
                        "recipes/gpt_clm.py continues a causal LM folder (e.g. model_type 'gpt2' or 'llama')")
    for name in ("preset", "architecture", "config_overrides"):
        if getattr(args, name) is not None:
            raise UserError(f"--{name} {getattr(args, name)} conflicts with --model_name_or_path {path}: the folder's "
                            f"config defines the model; leave {name} unset")
    config = AutoConfig.from_pretrained(str(path), attn_implementation="sdpa")
    if args.n_positions is not None and args.n_positions != config.max_position_embeddings:
        raise UserError(f"--n_positions {args.n_positions} differs from the {config.max_position_embeddings} positions "
                        f"of --model_name_or_path {path}; leave it unset")
    if args.dropout is not None:  # no change of shapes: applied to the folder's config, as BERT's dropout fields
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout"):
            if hasattr(config, name):
                setattr(config, name, args.dropout)
    return config
