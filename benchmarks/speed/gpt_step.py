"""Causal LM training step: hfssl's recipe path against a plain transformers ``Trainer`` (what run_clm.py runs),
side by side in one process, on the same GPT-2 config, the same initial weights and the same packed rows.

    hfssl    rows from hfssl.text.clm (packed, eos between documents) -> collate_rows (input_ids only) ->
             CausalLMPretrainer(**batch).loss (vocabulary projection on the T - 1 predicted positions, the
             cross-entropy writing its gradient in the forward pass) -> backward -> clip -> hfssl.optim's AdamW
             (fused where torch has the kernel) -> zero_grad(set_to_none); the step fit() runs
    trainer  the same rows as run_clm.py's group_texts gives them (input_ids, attention_mask, labels) ->
             default_data_collator -> Trainer.train() on GPT2LMHeadModel (HF's loss: logits of every position,
             shifted labels), Trainer's own optimizer and clipping

Both use SDPA attention and no padding. The Trainer's step is timed by a callback from on_step_begin to
on_step_end (its data loading falls outside); hfssl's from a collated batch to the end of zero_grad. The median
step of each gives tokens/s; hfssl runs before and after the Trainer, so load from other users of the machine hits
both alike. The texts are random documents of words (the tokenizer and the row layout are the recipe's).

    python benchmarks/speed/gpt_step.py --threads 2 --preset tiny --steps 30
    python benchmarks/speed/gpt_step.py --preset mini --seq_len 256 --batch_size 16
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from hfssl.methods.gpt import CausalLMPretrainer  # noqa: E402
from hfssl.methods.gpt_config import GPTModelArgs  # noqa: E402
from hfssl.optim import build_optimizer  # noqa: E402
from hfssl.text.bpe import train_bpe  # noqa: E402
from hfssl.text.clm import CLMArgs, CLMRowBuilder, collate_rows  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["tiny", "mini", "small", "gpt2"], default="tiny")
    p.add_argument("--architecture", choices=["gpt2", "llama"], default="gpt2")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
    p.add_argument("--steps", type=int, default=20, help="timed steps per side (hfssl: half before, half after)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast, fp32 weights")
    p.add_argument("--trainer_dtype", choices=["fp32", "bf16"], default=None,
                   help="the Trainer's precision (default: --dtype; fp32 is run_clm.py without --bf16)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.trainer_dtype = args.trainer_dtype or args.dtype
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return args


def packed_rows(args):
    """A byte-level BPE and packed rows made by the recipe's code from random documents of words."""
    import datasets

    rng = random.Random(args.seed)
    words = [("".join(rng.choices("etaoinshrdlucmfwyp", k=rng.randint(1, 9)))) for _ in range(3000)]
    need = args.batch_size * (args.warmup + args.steps + 2) * args.seq_len
    docs, n = [], 0
    while n < need * 1.3:  # words ~1.3 tokens each is plenty; the surplus covers the cut pieces
        sentences = [" ".join(rng.choices(words, k=rng.randint(5, 20))) + "." for _ in range(rng.randint(3, 30))]
        docs.append(sentences)
        n += sum(s.count(" ") + 1 for s in sentences)
    documents = datasets.Dataset.from_dict({"sentences": docs})
    tokenizer = train_bpe(documents, vocab_size=args.vocab_size, min_frequency=2, model_max_length=1024,
                          show_progress=False)
    rows = CLMRowBuilder.from_documents(documents, tokenizer, CLMArgs(max_seq_length=args.seq_len)).for_epoch(0)
    return tokenizer, rows


class StepTimer(TrainerCallback):
    """Records the wall time of each of the Trainer's optimizer steps."""

    def __init__(self, device):
        self.device, self.times, self.start = device, [], None

    def _sync(self):
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self.start)


def hfssl_steps(model, batches, n: int, args, autocast) -> list[float]:
    optimizer = build_optimizer(model, 1e-4, 0.01)
    times = []
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for i in range(n):
        batch = {k: v.to(args.device) for k, v in batches[i % len(batches)].items()}
        sync()
        start = time.perf_counter()
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
    return times


def trainer_steps(model, rows, n: int, args, tmp: str) -> tuple[list[float], str]:
    from transformers import Trainer, TrainingArguments, default_data_collator

    data = rows.map(lambda b: {"attention_mask": [[1] * len(r) for r in b["input_ids"]], "labels": b["input_ids"]},
                    batched=True)  # run_clm.py's group_texts: labels = input_ids
    timer = StepTimer(args.device)
    targs = TrainingArguments(output_dir=tmp, max_steps=n, per_device_train_batch_size=args.batch_size,
                              learning_rate=1e-4, weight_decay=0.01, report_to="none", save_strategy="no",
                              logging_steps=10**9, use_cpu=args.device == "cpu", bf16=args.trainer_dtype == "bf16",
                              dataloader_num_workers=0, seed=args.seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=default_data_collator,
                      callbacks=[timer])
    trainer.train()
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    flags = {k: optimizer.defaults.get(k) for k in ("fused", "foreach")}
    return timer.times, f"{type(optimizer).__name__} {flags}"


def main(argv=None) -> None:
    import tempfile

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer, rows = packed_rows(args)
    torch.manual_seed(args.seed)
    model_args = GPTModelArgs(preset=args.preset, architecture=args.architecture, dropout=0.0,
                              n_positions=max(1024, args.seq_len))
    ours = CausalLMPretrainer.from_args(model_args, len(tokenizer), tokenizer.eos_token_id).to(args.device).train()
    plain = copy.deepcopy(ours.model)  # the same initial weights
    batches = [collate_rows([rows[j] for j in range(i, i + args.batch_size)])
               for i in range(0, len(rows) - args.batch_size + 1, args.batch_size)][: args.warmup + args.steps]
    autocast = (lambda: torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)) \
        if args.dtype == "bf16" else nullcontext
    tokens = args.batch_size * args.seq_len
    print(f"# device={args.device} dtype={args.dtype} trainer_dtype={args.trainer_dtype} preset={args.preset} arch={args.architecture} "
          f"batch={args.batch_size} seq={args.seq_len} vocab={len(tokenizer)} threads={args.threads} "
          f"torch={torch.__version__} params={sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M", flush=True)
    half = args.steps // 2
    before = hfssl_steps(ours, batches, args.warmup + half, args, autocast)[args.warmup:]
    with tempfile.TemporaryDirectory() as tmp:
        plain_times, optimizer = trainer_steps(plain, rows, args.warmup + args.steps, args, tmp)
    after = hfssl_steps(ours, batches, args.warmup + args.steps - half, args, autocast)[args.warmup:]
    rate = {"hfssl": tokens / statistics.median(before + after),
            "trainer": tokens / statistics.median(plain_times[args.warmup:])}
    print(f"trainer optimizer: {optimizer}")
    print(f"\n| preset | device | hfssl / Trainer precision | batch x seq | hfssl tok/s | Trainer tok/s | hfssl / Trainer |"
          f"\n|---|---|---|---|---|---|---|\n| {args.preset} ({args.architecture}) | {args.device} | {args.dtype} / "
          f"{args.trainer_dtype} | {args.batch_size} x {args.seq_len} | "
          f"{rate['hfssl']:,.0f} | {rate['trainer']:,.0f} | {rate['hfssl'] / rate['trainer']:.2f} |")


if __name__ == "__main__":
    main()
