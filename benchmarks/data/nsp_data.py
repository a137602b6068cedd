"""Raw text -> BERT sentence-pair instances: hfssl's pipeline, cold and warm, against Google's script.

    hfssl   load_documents (read, sentences) -> tokenize_documents -> build_instances   (datasets cache)
    plain   the tokenize stage the plain Hugging Face way, side by side:
            documents.map(lambda b: {"tokens": [tokenizer(s, add_special_tokens=False)["input_ids"] ...]})
    Google  create_pretraining_data.py's instance creation, measured earlier on this kind of machine
            (quoted below, not rerun: it needs TensorFlow)

Documents are the novels' chapters (DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS), max_seq_length 128. The
tokenizer is trained once beforehand (not timed) unless --tokenizer gives one. "Cold" uses a fresh
datasets cache; "warm" repeats the same calls, which the cache serves (target < 1 s).

    python benchmarks/data/nsp_data.py                         # ../shared/data/text/austen, 4.0 MB
    python benchmarks/data/nsp_data.py --data corpus/ --tokenizer my_tokenizer/ --num_proc 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import datasets  # noqa: E402
import transformers  # noqa: E402

from hfssl.text import encode, nsp  # noqa: E402
from hfssl.text.corpus import DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS, load_documents  # noqa: E402
from hfssl.text.tokenizer import load_tokenizer, train_wordpiece  # noqa: E402

# Reference measured earlier, not rerun: Google's create_pretraining_data.py core (sentences ->
# tokens -> instances, dupe_factor 1, masking excluded) on the Austen novels, 2 cores of this machine.
GOOGLE_SECONDS, GOOGLE_MB_PER_S, GOOGLE_INSTANCES_PER_S = 5.9, 0.68, 1500
TARGET_SPEEDUP = 5.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "text" / "austen"),
                   help="corpus: .txt/.jsonl files or a folder of them")
    p.add_argument("--document_separator", default=DEFAULT_SEPARATOR_FOR_DEFAULT_CORPUS,
                   help="regex of the line that starts a document ('' for one document per file)")
    p.add_argument("--tokenizer", default=None, help="a saved tokenizer folder (default: train one, untimed)")
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--num_proc", type=int, default=None, help="processes (default: hfssl's automatic choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_plain", action="store_true", help="do not time the plain tokenize stage")
    return p.parse_args(argv)


def run_pipeline(args, tokenizer, cache_dir: str) -> tuple[dict, datasets.Dataset, object]:
    """The timed part: raw files -> instances. Returns seconds per stage, instances, corpus report."""
    seconds, cpu = {}, _cpu_seconds()
    t = time.perf_counter()
    documents, report = load_documents(args.data, document_separator=args.document_separator or None,
                                       cache_dir=cache_dir, num_proc=args.num_proc)
    seconds["read + sentences"] = time.perf_counter() - t
    t = time.perf_counter()
    tokenized = encode.tokenize_documents(documents, tokenizer, num_proc=args.num_proc)
    seconds["tokenize"] = time.perf_counter() - t
    t = time.perf_counter()
    instances = nsp.build_instances(tokenized, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                                    max_seq_length=args.max_seq_length, seed=args.seed, num_proc=args.num_proc)
    seconds["instances"] = time.perf_counter() - t
    seconds["total"] = sum(seconds.values())
    seconds["cpu"] = _cpu_seconds() - cpu
    return seconds, instances, report


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and its finished workers: a load-independent figure."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def plain_tokenize(documents: datasets.Dataset, tokenizer) -> float:
    """The tokenize stage as a plain ``datasets.map`` with the tokenizer's own call, one list per document."""
    def tokenize(batch):
        return {"tokens": [tokenizer(s, add_special_tokens=False)["input_ids"] if s else []
                           for s in batch["sentences"]]}

    t = time.perf_counter()
    documents.map(tokenize, batched=True, keep_in_memory=True, load_from_cache_file=False)
    return time.perf_counter() - t


def get_tokenizer(args, scratch: str):
    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    documents, _ = load_documents(args.data, document_separator=args.document_separator or None,
                                  cache_dir=os.path.join(scratch, "tokenizer-corpus"))
    return train_wordpiece(documents, vocab_size=args.vocab_size, model_max_length=args.max_seq_length,
                           show_progress=False)


def main(argv=None) -> None:
    args = parse_args(argv)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()  # the plain call warns about sentences > 128 tokens
    with tempfile.TemporaryDirectory(prefix="hfssl-nsp-bench-") as scratch:
        tokenizer = get_tokenizer(args, scratch)  # not timed
        cache_dir = os.path.join(scratch, "cache")  # fresh: the first run is cold
        cold, instances, report = run_pipeline(args, tokenizer, cache_dir)
        warm, warm_instances, _ = run_pipeline(args, tokenizer, cache_dir)
        assert warm_instances.to_dict() == instances.to_dict(), "the cache served different instances"
        plain = None if args.skip_plain else plain_tokenize(load_documents(
            args.data, document_separator=args.document_separator or None, cache_dir=cache_dir)[0], tokenizer)
    stats = nsp.instance_stats(instances, args.max_seq_length)
    mb = report.bytes / 1e6
    mb_s, inst_s = mb / cold["total"], stats["instances"] / cold["total"]
    print(f"{report}")
    print(f"instances           {stats['instances']:,}   random-B fraction {stats['random_next_fraction']:.3f}   "
          f"mean tokens {stats['mean_tokens']:.1f}   padding fraction at {args.max_seq_length}: "
          f"{stats['padding_fraction']:.3f}")
    print("cold (fresh cache)  " + "   ".join(f"{k} {v:.2f} s" for k, v in cold.items()))
    print(f"                    {mb_s:.2f} MB/s of raw text, {inst_s:,.0f} instances/s "
          f"({mb / cold['cpu']:.2f} MB/s per CPU-second)")
    print("warm (cache)        " + "   ".join(f"{k} {v:.2f} s" for k, v in warm.items())
          + ("   (target < 1 s: met)" if warm["total"] < 1 else "   (target < 1 s: MISSED)"))
    if plain is not None:
        print(f"tokenize stage      hfssl {cold['tokenize']:.2f} s   plain HF map + tokenizer call {plain:.2f} s   "
              f"ratio {plain / cold['tokenize']:.1f}x")
    print(f'reference measured earlier, not rerun: "Google create_pretraining_data.py core: '
          f'{GOOGLE_SECONDS} s = {GOOGLE_MB_PER_S} MB/s, {GOOGLE_INSTANCES_PER_S:,} instances/s"')
    speedup = mb_s / GOOGLE_MB_PER_S
    print(f"ratio vs reference  {speedup:.1f}x MB/s, {inst_s / GOOGLE_INSTANCES_PER_S:.1f}x instances/s   "
          f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if speedup >= TARGET_SPEEDUP else 'MISSED'}; "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
