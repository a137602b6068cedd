"""Causal language modelling (GPT): a transformers causal LM trained to predict each next token of packed rows.

``CausalLMPretrainer`` wraps an unmodified ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` (``self.model``: same
modules, same parameter names, the same ``save_pretrained`` folder) and computes the same loss as
``model(input_ids, labels=input_ids).loss`` (tested): the vocabulary projection runs on the ``T - 1`` positions
that have a next token (the last position predicts nothing in a training row), and the cross-entropy is
:class:`hfssl.methods.bert.MaskedCrossEntropy`, which writes the gradient of the logits in the forward pass over
its one fp32 buffer and gives the argmax (next-token accuracy) for free. Rows are packed full, so there is no
attention mask and no padding (:mod:`hfssl.text.clm`).

Held-out metrics (:func:`clm_eval_step`, :func:`clm_summary`): loss in nats per predicted token, perplexity, and
bits per byte = total nats / (ln 2 x UTF-8 bytes of the text the predicted tokens stand for): a number that
compares across tokenizers. The end-of-text token between documents is predicted (it counts in the loss) but
stands for no text (0 bytes).

Paper: Radford et al. 2019, GPT-2, https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from hfssl.errors import UserError
from hfssl.hub import load_folder_model
from hfssl.methods.bert import MaskedCrossEntropy
from hfssl.methods.gpt_config import GPTModelArgs, causal_config


@dataclass
class CausalLMOutput(ModelOutput):
    """Loss (mean nats per predicted token) and next-token accuracy of one batch (detached)."""

    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None


class CausalLMPretrainer(nn.Module):
    """A transformers causal LM (``self.model``) with the training loss on the positions that have a next token."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_args(cls, args: GPTModelArgs, vocab_size: int, eos_token_id: int) -> CausalLMPretrainer:
        """A fresh ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` for :class:`GPTModelArgs`."""
        config = causal_config(args, vocab_size, eos_token_id)
        return cls(AutoModelForCausalLM.from_config(config, attn_implementation="sdpa"))

    @classmethod
    def from_folder(cls, path, config: PretrainedConfig) -> tuple[CausalLMPretrainer, list[str]]:
        """Continue from a causal LM folder (``config`` from :func:`hfssl.methods.gpt_config.folder_config`), in
        float32 whatever the file's precision; returns the model and the weights the folder lacked."""
        model, info = load_folder_model(AutoModelForCausalLM, path, config=config)
        return cls(model), sorted(info.get("missing_keys", []))

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    def next_token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T - 1, V) logits of the positions that have a next token."""
        hidden = self.model.base_model(input_ids, attention_mask=attention_mask, use_cache=False,
                                       return_dict=True).last_hidden_state  # (B, T, H)
        return self.model.get_output_embeddings()(hidden[:, :-1])  # (B, T - 1, V)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> CausalLMOutput:
        """input_ids: (B, T) packed rows; every token but the first of a row is predicted from those before it."""
        logits = self.next_token_logits(input_ids, attention_mask)  # (B, T - 1, V)
        targets = input_ids[:, 1:].reshape(-1)  # (B * (T - 1),)
        flat = logits.reshape(-1, logits.shape[-1])
        if attention_mask is not None:  # padded rows (not hfssl's): predict only real next tokens
            keep = attention_mask[:, 1:].reshape(-1).bool()
            flat, targets = flat[keep], targets[keep]
        denom = torch.tensor(max(targets.numel(), 1), dtype=torch.float32, device=input_ids.device)
        loss, pred = MaskedCrossEntropy.apply(flat, targets, denom)
        return CausalLMOutput(loss=loss, accuracy=(pred == targets).float().mean().detach())


# --- evaluation: per-example sums for hfssl.train.evaluate, gathered exactly across processes ----------

def clm_eval_step(token_bytes: Sequence[int] | torch.Tensor) -> Callable:
    """An eval step for :class:`CausalLMPretrainer`: per row, the summed nats of its predicted tokens, their count,
    the hits of the argmax and the UTF-8 bytes they stand for (``token_bytes``: (V,) bytes per token id, from
    :func:`hfssl.text.bpe.token_byte_lengths`)."""
    table = torch.as_tensor(token_bytes, dtype=torch.float64)

    def step(model: CausalLMPretrainer, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]  # (B, T)
        logits = model.next_token_logits(ids).float()  # (B, T - 1, V)
        targets = ids[:, 1:]  # (B, T - 1)
        nats = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T - 1)
        return {"nats": nats.double().sum(-1),
                "predicted": torch.full((ids.shape[0],), targets.shape[1], dtype=torch.float64, device=ids.device),
                "correct": (logits.argmax(-1) == targets).double().sum(-1),
                "bytes": table.to(ids.device)[targets].sum(-1)}

    return step


def clm_summary(totals: dict[str, float]) -> dict[str, float]:
    """Held-out loss (nats per token), perplexity, next-token accuracy, bits per byte, predicted tokens (the metric
    is not named "tokens": the model card leaves out keys that look like credentials)."""
    tokens = max(totals.get("predicted", 0.0), 1.0)
    loss = totals["nats"] / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": totals["correct"] / tokens,
            "bits_per_byte": totals["nats"] / (math.log(2) * max(totals["bytes"], 1.0)), "predicted": totals["predicted"]}


# --- samples for the model card ------------------------------------------------------------------------

def check_prompts(tokenizer, prompts: Sequence[str], new_tokens: int, positions: int) -> list[list[int]]:
    """The prompts' ids; a prompt whose tokens plus ``new_tokens`` exceed the model's ``positions`` is a
    :class:`UserError`."""
    encoded = [tokenizer(p, add_special_tokens=False, verbose=False)["input_ids"] for p in prompts]
    for prompt, ids in zip(prompts, encoded):
        if not ids or len(ids) + new_tokens > positions:
            raise UserError(f"the sample prompt {prompt[:40]!r} is {len(ids)} tokens; with --sample_new_tokens "
                            f"{new_tokens} it needs 1 to {positions - new_tokens} to fit the model's {positions} "
                            "positions, --sample_prompts; shorten it or lower --sample_new_tokens")
    return encoded


@torch.no_grad()
def generate_samples(model: PreTrainedModel, tokenizer, prompts: Sequence[str], new_tokens: int = 40) -> list[str]:
    """Greedy continuations (deterministic) of ``prompts`` with ``model.generate`` and its KV cache; the prompt
    plus the generated text, decoded."""
    positions = model.config.max_position_embeddings
    encoded = check_prompts(tokenizer, prompts, new_tokens, positions)
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    out = []
    try:
        for ids in encoded:
            generated = model.generate(torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids),
                                       dtype=torch.long, device=device), max_new_tokens=new_tokens,
                                       do_sample=False, pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.decode(generated[0], skip_special_tokens=False))
    finally:
        model.train(was_training)
    return out
