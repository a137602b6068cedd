"""ELECTRA model configuration: the paper's size presets, ``ElectraModelArgs`` (checked before any data
work), the generator and discriminator ``ElectraConfig`` pair, and the refusal of a folder to continue from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import ElectraConfig

from hfssl.errors import UserError

# The paper's Table 6 (small, base) and a CPU-size tiny. generator_size: generator hidden / discriminator hidden.
PRESETS: dict[str, dict] = {
    "tiny": dict(embedding_size=128, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, generator_size=0.25),
    "small": dict(embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                  intermediate_size=1024, generator_size=0.25),
    "base": dict(embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, generator_size=1 / 3),
}
SIZE_FIELDS = ("embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


@dataclass
class ElectraModelArgs:
    """Which ELECTRA to train: a preset, any size field overriding it, the generator's relative size."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "continued ELECTRA pretraining is not supported yet; a folder here is refused with an explanation"})
    preset: str | None = field(default=None, metadata={"help": f"model size, one of {', '.join(PRESETS)} "
                                                               "(default tiny); the fields below override it"})
    embedding_size: int | None = field(default=None, metadata={"help": "embedding width (shared by both models)"})
    hidden_size: int | None = field(default=None, metadata={"help": "discriminator hidden size"})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "layers (generator and discriminator)"})
    num_attention_heads: int | None = field(default=None, metadata={"help": "discriminator attention heads"})
    intermediate_size: int | None = field(default=None, metadata={"help": "discriminator feed-forward size"})
    generator_size: float | None = field(default=None, metadata={
        "help": "generator hidden size as a fraction of the discriminator's (paper: 1/4 small, 1/3 base); the "
                "generator has one attention head per 64 hidden units (at least one) and a 4x feed-forward"})
    disc_weight: float = field(default=50.0, metadata={"help": "lambda: weight of the discriminator loss"})
    sinusoidal_positions: float = field(default=0.0, metadata={
        "help": "if > 0, initialise the shared (learned) position table with sinusoids of this standard deviation "
                "(as recipes/bert_mlm.py's --sinusoidal_positions); 0 keeps the normal init"})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "positions (default 512)"})
    hidden_dropout_prob: float | None = field(default=None, metadata={"help": "dropout on hidden states (0.1)"})
    attention_probs_dropout_prob: float | None = field(default=None, metadata={"help": "attention dropout (0.1)"})
    finetune_dropout: float | None = field(default=0.1, metadata={
        "help": "dropout written into the exported configs; None keeps the pretraining values"})

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        for name in (*SIZE_FIELDS, "max_position_embeddings"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} {value} must be positive")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "finetune_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"--{name} {value} must be in [0, 1)")
        if not self.sinusoidal_positions >= 0:
            raise ValueError(f"--sinusoidal_positions {self.sinusoidal_positions} must be >= 0")
        if not self.disc_weight > 0:
            raise ValueError(f"--disc_weight {self.disc_weight} must be positive (the paper uses 50)")
        size = self.sizes
        if size["hidden_size"] % size["num_attention_heads"]:
            raise ValueError(f"--hidden_size {size['hidden_size']} is not divisible by --num_attention_heads "
                             f"{size['num_attention_heads']}; choose sizes where the heads divide the hidden size")
        fraction = size["generator_size"]
        if not fraction > 0:
            raise ValueError(f"--generator_size {fraction} must be positive (the paper's best: 0.25-0.33)")
        hidden, heads = self.generator_hidden_and_heads
        if fraction > 1:
            raise ValueError(f"--generator_size {fraction} makes the generator (hidden {hidden}) larger than the "
                             f"discriminator (hidden {size['hidden_size']}); ELECTRA needs a generator no larger "
                             "than the discriminator: use 0.25-0.33 (at most 1)")
        if hidden % heads:
            raise ValueError(f"--generator_size {fraction} gives a generator hidden size {hidden} (of "
                             f"--hidden_size {size['hidden_size']}) not divisible by its {heads} attention heads "
                             "(one per 64); choose a generator_size giving a multiple of 64 or a size below 128")

    @property
    def sizes(self) -> dict:
        """The preset with every set field applied."""
        out = dict(PRESETS[self.preset or "tiny"])
        out.update({k: getattr(self, k) for k in (*SIZE_FIELDS, "generator_size") if getattr(self, k) is not None})
        return out

    @property
    def generator_hidden_and_heads(self) -> tuple[int, int]:
        """The generator's hidden size (rounded) and heads (one per 64 units, as the paper's code)."""
        hidden = max(1, int(round(self.sizes["hidden_size"] * self.sizes["generator_size"])))
        return hidden, max(1, hidden // 64)

    @property
    def positions(self) -> int:
        return self.max_position_embeddings or 512


def refuse_folder(path: str | None) -> None:
    """ELECTRA trains from scratch (no continued pretraining yet): a ``--model_name_or_path`` is a one-line error
    naming what the folder holds and what to do instead; read before any data work."""
    if not path:
        return
    config = Path(path) / "config.json"
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    except ValueError:
        kind = "unreadable"
    if kind != "electra":
        raise UserError(f"--model_name_or_path {path} holds {f'a {kind!r} model' if kind else 'no config.json'}; "
                        "recipes/electra.py trains ELECTRA from scratch (continue a BERT with recipes/bert_mlm.py)")
    raise UserError(f"--model_name_or_path {path}: continued ELECTRA pretraining is not supported yet; "
                    "leave it unset to train from scratch")


def electra_configs(args: ElectraModelArgs, vocab_size: int, pad_token_id: int = 0) -> tuple[ElectraConfig, ElectraConfig]:
    """(discriminator, generator) configs: same embeddings and depth, the generator narrower."""
    size = args.sizes
    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, max_position_embeddings=args.positions,
                  embedding_size=size["embedding_size"], num_hidden_layers=size["num_hidden_layers"],
                  attn_implementation="sdpa")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if getattr(args, name) is not None:
            common[name] = getattr(args, name)
    disc = ElectraConfig(hidden_size=size["hidden_size"], num_attention_heads=size["num_attention_heads"],
                         intermediate_size=size["intermediate_size"], **common)
    hidden, heads = args.generator_hidden_and_heads
    gen = ElectraConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=4 * hidden, **common)
    return disc, gen
