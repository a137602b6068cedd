"""ELECTRA pretraining step: hfssl's ElectraPretrainer against plain transformers, side by side.

One training step = generator forward on the masked input, sampling one replacement per masked position
from the generator's softmax (no gradient), discriminator forward on the replaced input, loss =
generator MLM + 50 * replaced-token detection, backward, AdamW step, zero_grad(set_to_none). Same configs,
same initial weights (shared embeddings in both), same random batches (15 % of the positions masked):

    plain  ElectraForMaskedLM(ids, labels=labels).loss  (vocabulary logits for every token) ->
           torch.multinomial on the masked positions -> ElectraForPreTraining(replaced, labels=...).loss
    hfssl  ElectraPretrainer(**batch).loss              (generator head on the masked positions only,
           inverse-CDF sampling, the discriminator's BCE computed once)

Steps of the two are interleaved and the median step time is reported, so load from other users of the
machine hits both alike.

    python benchmarks/speed/electra_step.py                                  # tiny + small, CPU fp32
    python benchmarks/speed/electra_step.py --device cuda --dtype bf16 --presets small base --batch_size 128
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from hfssl.methods.electra import ElectraPretrainer  # noqa: E402
from hfssl.methods.electra_config import ElectraModelArgs  # noqa: E402

CLS, SEP, MASK = 2, 3, 4


class PlainElectra(nn.Module):
    """ELECTRA as written with transformers' own heads and losses (dense logits over every position)."""

    def __init__(self, pretrainer: ElectraPretrainer):
        super().__init__()
        self.generator, self.discriminator = pretrainer.generator, pretrainer.discriminator
        self.disc_weight = pretrainer.disc_weight

    def forward(self, input_ids, attention_mask, token_type_ids, labels, **_):
        gen = self.generator(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             labels=labels)  # logits (B, T, V)
        masked = labels != -100  # (B, T)
        with torch.no_grad():
            probs = gen.logits[masked].float().softmax(-1)  # (M, V)
            samples = torch.multinomial(probs, 1).squeeze(1)  # (M,)
        original = torch.where(masked, labels, input_ids)
        replaced = original.masked_scatter(masked, samples)
        disc_labels = (replaced != original).long()
        disc = self.discriminator(replaced, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                  labels=disc_labels)
        return gen.loss + self.disc_weight * disc.loss


def make_batches(n: int, B: int, T: int, V: int, mask_prob: float, device, seed: int) -> list[dict]:
    """``n`` random MLM batches shaped like packed pretraining rows ([CLS] ... [SEP], no padding)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, V, (B, T), generator=g)  # (B, T)
        ids[:, 0], ids[:, -1] = CLS, SEP
        chosen = torch.rand(B, T, generator=g) < mask_prob
        chosen[:, 0] = chosen[:, -1] = False
        batch = dict(input_ids=ids.masked_fill(chosen, MASK), attention_mask=torch.ones(B, T, dtype=torch.long),
                     token_type_ids=torch.zeros(B, T, dtype=torch.long), labels=torch.where(chosen, ids, -100),
                     sample_noise=torch.rand(B, T, generator=g))
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def make_step(model: nn.Module, plain: bool, autocast):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)

    def step(batch: dict) -> torch.Tensor:
        with autocast():
            loss = model(**batch) if plain else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--vocab_size", type=int, default=30522)
    p.add_argument("--mask_prob", type=float, default=0.15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    autocast = (lambda: torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)) \
        if args.dtype == "bf16" else nullcontext
    batches = make_batches(4, args.batch_size, args.seq_len, args.vocab_size, args.mask_prob, args.device, args.seed)
    tokens = args.batch_size * args.seq_len
    print(f"# device={args.device} dtype={args.dtype} batch={args.batch_size} seq={args.seq_len} "
          f"vocab={args.vocab_size} threads={args.threads} torch={torch.__version__}")
    rows = []
    for preset in args.presets:
        torch.manual_seed(args.seed)
        model_args = ElectraModelArgs(preset=preset, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
        ours = ElectraPretrainer.from_args(model_args, args.vocab_size).to(args.device).train()
        plain = PlainElectra(copy.deepcopy(ours)).train()
        steps = {"plain": make_step(plain, True, autocast), "hfssl": make_step(ours, False, autocast)}
        for i in range(args.warmup):
            for step in steps.values():
                step(batches[i % len(batches)])
        times = {name: [] for name in steps}
        for i in range(args.steps):
            for name, step in steps.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step(batches[i % len(batches)])
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        rate = {name: tokens / statistics.median(t) for name, t in times.items()}
        print(f"{preset:<6} plain {rate['plain']:,.0f} tok/s  hfssl {rate['hfssl']:,.0f} tok/s  "
              f"ratio {rate['hfssl'] / rate['plain']:.2f}", flush=True)
        rows.append((preset, rate))
    print("\n| preset | device | dtype | batch x seq | plain tok/s | hfssl tok/s | hfssl / plain |\n|---|---|---|---|---|---|---|")
    for preset, rate in rows:
        print(f"| {preset} | {args.device} | {args.dtype} | {args.batch_size} x {args.seq_len} | {rate['plain']:,.0f} | "
              f"{rate['hfssl']:,.0f} | {rate['hfssl'] / rate['plain']:.2f} |")


if __name__ == "__main__":
    main()
