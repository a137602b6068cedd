"""BERT pretraining step: hfssl's sparse MLM head against plain Hugging Face, side by side.

One training step = forward + backward + AdamW step + zero_grad(set_to_none), on the same config,
the same initial weights and the same random batches (15 % of the positions carry an MLM label,
-100 elsewhere; NSP labels on every pair):

    hf     BertForPreTraining(**batch).loss   (vocabulary logits for every token)
    hfssl  BertPretrainer(**batch).loss       (vocabulary logits for the masked tokens only)

Steps of the two are interleaved and the median step time is reported, so load from other users
of the machine hits both alike. CPU (default) and CUDA:

    python benchmarks/speed/bert_pretrain.py                                    # tiny + mini, CPU fp32
    python benchmarks/speed/bert_pretrain.py --device cuda --dtype bf16 --presets base --batch_size 256

With --device cuda the model FLOPs utilisation is printed too:
    model FLOPs / token = 6 * N_nonembedding + 12 * L * T * H (attention scores and mixing)
                          + 6 * H * V * mask_prob (vocabulary projection of the masked tokens)
the same useful work for both, divided by --peak_flops (default on cuda 989e12: H100 SXM bf16 dense).
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
from transformers import BertForPreTraining

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from hfssl.methods.bert import BertPretrainer  # noqa: E402
from hfssl.methods.bert_config import BertModelArgs, bert_config  # noqa: E402

CLS, SEP, MASK = 2, 3, 4  # ids of the special tokens in the random batches (any ids < 5 would do)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "mini"], help="BERT sizes to measure")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--vocab_size", type=int, default=30522)
    p.add_argument("--mask_prob", type=float, default=0.15, help="share of positions with an MLM label")
    p.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (interleaved)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast, fp32 weights")
    p.add_argument("--adamw", choices=["fused", "foreach", "loop"], default="fused", help="AdamW implementation")
    p.add_argument("--compile", action="store_true", help="also measure both with the encoder torch.compile'd")
    p.add_argument("--peak_flops", type=float, default=None,
                   help="peak FLOP/s for the MFU; default 989e12 (H100 SXM bf16 dense) on cuda, no MFU on cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.peak_flops is None and args.device.startswith("cuda"):
        args.peak_flops = 989e12
    return args


def make_batches(n: int, B: int, T: int, V: int, mask_prob: float, device, seed: int) -> list[dict]:
    """``n`` random sentence-pair batches shaped like BERT pretraining data (no padding)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(5, V, (B, T), generator=g)  # (B, T)
        split = torch.randint(T // 4, 3 * T // 4, (B,), generator=g)  # end of sentence A
        pos = torch.arange(T)[None, :]  # (1, T)
        ids[:, 0] = CLS
        ids[pos == split[:, None]] = SEP
        ids[:, -1] = SEP
        special = (ids == CLS) | (ids == SEP)
        chosen = (torch.rand(B, T, generator=g) < mask_prob) & ~special  # (B, T)
        labels = torch.where(chosen, ids, -100)
        batch = dict(
            input_ids=ids.masked_fill(chosen, MASK),
            attention_mask=torch.ones(B, T, dtype=torch.long),
            token_type_ids=(pos > split[:, None]).long(),
            labels=labels,
            next_sentence_label=torch.randint(0, 2, (B,), generator=g),
        )
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


def make_optimizer(model: torch.nn.Module, kind: str) -> torch.optim.Optimizer:
    """AdamW with BERT's usual settings, in the requested implementation."""
    params = [p for p in model.parameters() if p.requires_grad]
    flags = {"fused": dict(fused=True), "foreach": dict(foreach=True), "loop": dict(foreach=False)}[kind]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **flags)


def make_step(model: torch.nn.Module, optimizer, autocast):
    """A closure running one full training step; returns the loss (a tensor, not synced)."""

    def step(batch: dict) -> torch.Tensor:
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def build_variants(args, preset: str) -> tuple[dict, object]:
    """name -> step closure, all starting from the same weights; and the config."""
    model_args = BertModelArgs(preset=preset, hidden_dropout_prob=args.dropout,
                               attention_probs_dropout_prob=args.dropout, max_position_embeddings=max(512, args.seq_len))
    config = bert_config(model_args, args.vocab_size)
    torch.manual_seed(args.seed)
    hf = BertForPreTraining(config).to(args.device).train()
    ours = BertPretrainer(model=copy.deepcopy(hf)).train()
    if args.dtype == "bf16":
        def autocast():
            return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    else:
        autocast = nullcontext
    models = {"hf": hf, "hfssl": ours}
    if args.compile:
        for name in ("hf", "hfssl"):
            twin = copy.deepcopy(models[name])
            bert = twin.model.bert if name == "hfssl" else twin.bert
            bert.compile()  # the encoder only: the masked gather has a data-dependent shape
            models[name + "+compile"] = twin
    steps = {name: make_step(m, make_optimizer(m, args.adamw), autocast) for name, m in models.items()}
    return steps, config


def time_steps(args, steps: dict, batches: list[dict]) -> tuple[dict, dict]:
    """Median seconds per step for each variant (steps interleaved) and the first loss of each."""
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    first = {name: step(batches[0]).item() for name, step in steps.items()}
    for i in range(1, args.warmup):
        for step in steps.values():
            step(batches[i % len(batches)])
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step(batches[i % len(batches)])
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, first


def flops_per_token(config, seq_len: int, mask_prob: float) -> float:
    """Model FLOPs of one training token (forward + backward), see the module docstring."""
    hf = BertForPreTraining(config)  # counted on a throwaway CPU copy
    emb = hf.bert.embeddings
    n_emb = sum(p.numel() for m in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings)
                for p in m.parameters())
    n_nonemb = sum(p.numel() for p in hf.parameters()) - n_emb
    H, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    return 6 * n_nonemb + 12 * L * seq_len * H + 6 * H * V * mask_prob


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokens = args.batch_size * args.seq_len
    batches = make_batches(max(2, min(4, args.warmup + args.steps)), args.batch_size, args.seq_len,
                           args.vocab_size, args.mask_prob, args.device, args.seed)
    print(f"# device={args.device} dtype={args.dtype} batch={args.batch_size} seq={args.seq_len} "
          f"vocab={args.vocab_size} threads={args.threads} adamw={args.adamw} torch={torch.__version__}")
    rows = []
    for preset in args.presets:
        steps, config = build_variants(args, preset)
        seconds, first = time_steps(args, steps, batches)
        rate = {name: tokens / s for name, s in seconds.items()}
        line = f"{preset:<7} hf {rate['hf']:,.0f} tok/s  hfssl {rate['hfssl']:,.0f} tok/s  " \
               f"ratio {rate['hfssl'] / rate['hf']:.2f}"
        for name in rate:
            if name.endswith("+compile"):
                line += f"  {name} {rate[name]:,.0f} tok/s ({rate[name] / rate['hf']:.2f}x hf)"
        mfu = {}
        if args.peak_flops:
            fpt = flops_per_token(config, args.seq_len, args.mask_prob)
            mfu = {name: r * fpt / args.peak_flops for name, r in rate.items()}
            line += f"  MFU hf {mfu['hf']:.1%} hfssl {mfu['hfssl']:.1%}"
        print(line + "  (first loss " + ", ".join(f"{n} {v:.3f}" for n, v in first.items()) + ")", flush=True)
        rows.append((preset, rate, mfu))
        del steps
    print_table(args, rows)


def print_table(args, rows) -> None:
    """The results as a markdown table for the README."""
    names = list(rows[0][1])
    head = ["preset", "device", "dtype", "batch x seq"] + [f"{n} tok/s" for n in names] + ["hfssl / hf"]
    if rows[0][2]:
        head += [f"MFU {n}" for n in names]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for preset, rate, mfu in rows:
        cells = [preset, args.device, args.dtype, f"{args.batch_size} x {args.seq_len}"]
        cells += [f"{rate[n]:,.0f}" for n in names] + [f"{rate['hfssl'] / rate['hf']:.2f}"]
        cells += [f"{mfu[n]:.1%}" for n in names] if mfu else []
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
