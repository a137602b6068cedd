"""Preparing a corpus for MLM pretraining: hfssl's data path against what transformers' run_mlm.py does, same corpus,
same tokenizer, same process count, side by side.

    python benchmarks/data/prep_vs_run_mlm.py --work_dir /tmp/prep --sizes_mb 126 --num_proc 2

The corpus is data_scale.py's (real documents from ../shared/data repeated to the size, as jsonl). One WordPiece
vocabulary (30,522 entries, trained by hfssl on a tenth of the text) is trained first and saved; both sides load it, so
vocabulary training is left out of both figures. Then each side runs in a fresh subprocess with an empty `datasets`
cache (cold), and again on its cache (cached):

- **plain** (run_mlm.py without --line_by_line, its default): ``load_dataset("json")`` with the first 5 % of rows as
  the validation split (``--validation_split_percentage 5``), ``tokenizer(text, return_special_tokens_mask=True)``
  in a batched ``map`` with ``num_proc`` processes, then ``group_texts`` (concatenate, cut into rows of
  ``--max_seq_length``) in a second ``map``, on both splits. Masking happens in its collator during training.
- **hfssl** (``recipes/bert_mlm.py``): read + sentence split (``load_corpus``), held-out split by document, tokenize
  and build the rows of epoch 0 and of the held-out split (``InstanceBuilder``), with ``--nsp false`` (rows packed full
  across documents, what run_mlm.py's ``group_texts`` makes) and with the default ``--nsp true`` (BERT sentence pairs,
  more work). Held-out masking is left out (run_mlm.py masks during evaluation).

Printed: seconds and MB/s of corpus per side and run, and the ratio plain / hfssl (> 1: hfssl faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_scale import make_corpus  # noqa: E402 (benchmarks/data/data_scale.py)

SIDES = ("plain", "hfssl --nsp false", "hfssl --nsp true")


def plain(corpus: str, cache: str, tokenizer_dir: str, num_proc: int, max_seq_length: int) -> dict:
    """run_mlm.py's preparation (its default path, not --line_by_line), stage by stage."""
    from itertools import chain

    from datasets import load_dataset
    from transformers import AutoTokenizer

    times, t = {}, time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = {"validation": load_dataset("json", data_files=corpus, split="train[:5%]", cache_dir=cache),
           "train": load_dataset("json", data_files=corpus, split="train[5%:]", cache_dir=cache)}
    times["load_dataset"] = time.perf_counter() - t
    t = time.perf_counter()

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = {k: v.map(tokenize_function, batched=True, num_proc=num_proc, remove_columns=v.column_names)
                 for k, v in raw.items()}
    times["tokenize"] = time.perf_counter() - t
    t = time.perf_counter()

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = len(concatenated[list(examples.keys())[0]]) // max_seq_length * max_seq_length
        return {k: [v[i: i + max_seq_length] for i in range(0, total, max_seq_length)] for k, v in concatenated.items()}

    grouped = {k: v.map(group_texts, batched=True, num_proc=num_proc) for k, v in tokenized.items()}
    times["group_texts"] = time.perf_counter() - t
    return {"seconds": times, "rows": len(grouped["train"]) + len(grouped["validation"])}


def hfssl(corpus: str, cache: str, tokenizer_dir: str, num_proc: int, max_seq_length: int, nsp: bool) -> dict:
    """recipes/bert_mlm.py's preparation up to its first step, with the vocabulary loaded instead of trained."""
    from hfssl.text.corpus import CorpusArgs, EvalSplitArgs, load_corpus, split_documents
    from hfssl.text.epochs import InstanceBuilder
    from hfssl.text.nsp import NSPArgs
    from hfssl.text.tokenizer import TokenizerArgs, get_or_train_tokenizer

    times, t = {}, time.perf_counter()
    documents, _ = load_corpus(CorpusArgs(corpus=corpus, cache_dir=cache, num_proc=num_proc))
    times["read + split sentences"] = time.perf_counter() - t
    t = time.perf_counter()
    split = split_documents(documents, EvalSplitArgs(eval_fraction=0.05), seed=0)
    tokenizer = get_or_train_tokenizer(TokenizerArgs(tokenizer_name_or_path=tokenizer_dir), split["train"], 512)
    times["held-out split + tokenizer load"] = time.perf_counter() - t
    t = time.perf_counter()
    args = NSPArgs(max_seq_length=max_seq_length, preprocessing_num_proc=num_proc, nsp=nsp)
    rows = len(InstanceBuilder.from_documents(split["train"], tokenizer, args, seed=0).for_epoch(0))
    times["training rows (epoch 0)"] = time.perf_counter() - t
    t = time.perf_counter()
    rows += len(InstanceBuilder.from_documents(split["test"], tokenizer, args, seed=1, name="held-out split").for_epoch(0))
    times["held-out rows"] = time.perf_counter() - t
    return {"seconds": times, "rows": rows}


def train_vocabulary(corpus: Path, folder: Path, num_proc: int) -> None:
    """hfssl's default vocabulary for the corpus (30,522 entries, a tenth of the text), saved for both sides."""
    from hfssl.text.corpus import CorpusArgs, load_corpus
    from hfssl.text.tokenizer import TokenizerArgs, corpus_tokenizer, save_tokenizer

    with tempfile.TemporaryDirectory() as cache:
        documents, _ = load_corpus(CorpusArgs(corpus=str(corpus), cache_dir=cache, num_proc=num_proc))
        save_tokenizer(corpus_tokenizer(TokenizerArgs(vocab_size=30522), documents, 512), folder)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/hfssl_prep_vs_run_mlm"))
    p.add_argument("--sizes_mb", type=float, nargs="+", default=[126])
    p.add_argument("--num_proc", type=int, default=2)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--one", nargs=4, metavar=("SIDE", "CORPUS", "CACHE", "TOKENIZER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        side, corpus, cache, tok = args.one
        common = (corpus, cache, tok, args.num_proc, args.max_seq_length)
        result = plain(*common) if side == "plain" else hfssl(*common, nsp=side.endswith("true"))
        print("RESULT " + json.dumps(result), flush=True)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    table = []
    for mb in args.sizes_mb:
        corpus = args.work_dir / f"corpus_{mb:g}mb.jsonl"
        size = make_corpus(corpus, mb) / 1e6
        tok = args.work_dir / f"tokenizer_{mb:g}mb"
        if not tok.is_dir():
            train_vocabulary(corpus, tok, args.num_proc)
        seconds = {}
        for side in SIDES:
            cache = args.work_dir / f"cache_{mb:g}mb_{side.replace(' ', '_')}"
            shutil.rmtree(cache, ignore_errors=True)
            for mode in ("cold", "cached"):
                proc = subprocess.run([sys.executable, __file__, "--one", side, str(corpus), str(cache), str(tok),
                                       "--num_proc", str(args.num_proc), "--max_seq_length", str(args.max_seq_length)],
                                      capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                result = json.loads(proc.stdout.split("RESULT ", 1)[1])
                total = sum(result["seconds"].values())
                seconds[side, mode] = total
                stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
                print(f"{size:7.1f} MB {side:18s} {mode:6s} {total:7.1f} s ({size / total:.1f} MB/s), "
                      f"{result['rows']} rows: {stages}", flush=True)
        for side in SIDES[1:]:
            for mode in ("cold", "cached"):
                table.append((size, side, mode, seconds["plain", mode], seconds[side, mode]))
    print(f"\n{args.num_proc} processes, rows of {args.max_seq_length} tokens, vocabulary training left out of both\n")
    print("| corpus | hfssl | run | run_mlm.py's preparation | hfssl's | plain / hfssl |\n| --- | --- | --- | --- | --- | --- |")
    for size, side, mode, theirs, ours in table:
        print(f"| {size:.0f} MB | `{side}` | {mode} | {theirs:.1f} s ({size / theirs:.1f} MB/s) | "
              f"{ours:.1f} s ({size / ours:.1f} MB/s) | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
