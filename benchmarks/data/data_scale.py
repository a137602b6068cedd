"""How text preparation scales: every stage of recipes/bert_mlm.py's data path, timed on corpora of growing size.

    python benchmarks/data/data_scale.py --work_dir /tmp/scale --sizes_mb 12 126 1260 [--num_proc 2]

For each size a corpus is made by repeating real text (../shared/data: BBC articles, Austen, WordNet glosses,
as jsonl documents; each copy's documents get a copy number so no two are identical), then each size runs
twice in a fresh subprocess: **cold** (empty datasets cache) and **cached** (the same cache again). Stages, as
the recipe runs them: read + sentence split (``load_corpus``), held-out split, WordPiece training,
tokenization and instances of the training split (``InstanceBuilder``), the held-out instances and their
masking, then what happens during training: the redraw of epoch 1 in the background (``draw_ahead``, as the
loop starts it once epoch 0 has begun) and the wait when epoch 1 is opened at its boundary. Printed per stage:
seconds and MB/s of corpus; per run: the time before step 1 and its MB/s, peak RSS (the largest of the process
and its ``num_proc`` workers, memory-mapped cache pages included) and peak anonymous memory (the same without
those pages), cache bytes per corpus byte at the cache's peak during training (epoch 0, the epoch in use and
the next one, drawn ahead; a run deletes the epochs in between). The tokenizer is the recipe's
(:func:`hfssl.text.tokenizer.corpus_tokenizer`): trained on ``--tokenizer_sample_mb`` of text (the recipe's
``--tokenizer_train_mb``; unset, its default: a tenth of the text within 16-1,000 MB; whole documents in runs spread
over the corpus) and reused from the cache on the cached run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOUNDARY = "epoch 1 opened at its boundary"
DURING_TRAINING = ("redraw (epoch 1)", BOUNDARY)
DATA = ROOT.parent / "shared" / "data" / "text"


def source_documents() -> list[str]:
    """Real documents to repeat: BBC articles, Austen chapters, WordNet glosses in groups of 50."""
    docs = [json.loads(x)["text"] for x in (DATA / "bbc_news/bbc_news.jsonl").read_text().splitlines()]
    for novel in sorted((DATA / "austen").glob("*.txt")):
        docs += [c for c in novel.read_text(encoding="utf-8").split("\nCHAPTER ") if c.strip()]
    glosses = [json.loads(x)["text"] for x in (DATA / "wordnet/noun_glosses.jsonl").read_text().splitlines()]
    docs += [" ".join(glosses[i:i + 50]) for i in range(0, len(glosses), 50)]
    return docs


def make_corpus(path: Path, megabytes: float) -> int:
    """A .jsonl corpus of about ``megabytes`` MB of repeated documents; returns its size in bytes."""
    if path.is_file():
        return path.stat().st_size
    docs, target, written, copy = source_documents(), megabytes * 1e6, 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            for doc in docs:
                line = json.dumps({"text": f"Copy {copy}. {doc}"}) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
            copy += 1
    return path.stat().st_size


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def run_stages(corpus: str, cache: str, num_proc: int, tokenizer_sample_mb: float | None, max_seq_length: int) -> dict:
    """One preparation, in this process: stage -> seconds, plus peak RSS (MB)."""

    from hfssl.methods.bert import premask
    from hfssl.text.corpus import CorpusArgs, load_corpus
    from hfssl.text.epochs import InstanceBuilder
    from hfssl.text.masking import MaskingArgs, MLMCollator
    from hfssl.text.nsp import NSPArgs
    from hfssl.text.tokenizer import TokenizerArgs, corpus_tokenizer

    times, t = {}, time.perf_counter()
    anon = anonymous_memory_sampler()

    def lap(name: str):
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    documents, report = load_corpus(CorpusArgs(corpus=corpus, cache_dir=cache, num_proc=num_proc))
    lap("read + split sentences")
    split = documents.train_test_split(test_size=max(0.001, 4 / len(documents)), seed=0)
    lap("held-out split")
    train = split["train"]
    tokenizer = corpus_tokenizer(TokenizerArgs(vocab_size=30522, tokenizer_train_mb=tokenizer_sample_mb), train, 512,
                                 log=lambda line: print(line, file=sys.stderr))
    lap("tokenizer training")
    args = NSPArgs(max_seq_length=max_seq_length, preprocessing_num_proc=num_proc)
    builder = InstanceBuilder.from_documents(train, tokenizer, args, seed=0)
    lap("tokenize")
    instances = builder.for_epoch(0)
    lap("instances (epoch 0)")
    held_out = InstanceBuilder.from_documents(split["test"], tokenizer, args, seed=1, name="held-out split").for_epoch(0)
    premask(held_out, MLMCollator.from_args(tokenizer, MaskingArgs()), seed=0)
    lap("held-out instances + masking")
    # As the training loop does it: epoch 1 is drawn in the background once epoch 0 has started, and opened from
    # the cache at the boundary; then epoch 2 is drawn ahead, so the cache holds epochs 0, 1 and 2 (its peak).
    builder.draw_ahead(1)
    builder.finish()
    lap("redraw (epoch 1)")
    builder.for_epoch(1)
    lap(BOUNDARY)
    builder.draw_ahead(2)
    builder.finish()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": times, "peak_rss_mb": max(own, workers), "peak_anon_mb": anon() / 1e6,
            "instances": len(instances), "documents": report.documents}


def anonymous_memory_sampler(every: float = 0.1):
    """Start sampling, every ``every`` s, the anonymous resident memory (``RssAnon``: what the process allocated,
    without the pages of memory-mapped cache files, which the kernel drops under pressure) of this process and
    each of its workers; returns a function giving the largest value seen in any one process, in bytes."""
    import threading

    import psutil

    me, peak = psutil.Process(), [0]

    def anon_bytes(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

    def loop():
        while True:
            for proc in [me, *me.children(recursive=True)]:
                try:
                    peak[0] = max(peak[0], anon_bytes(proc.pid))
                except (OSError, StopIteration, psutil.Error):
                    pass  # a worker that just exited
            time.sleep(every)

    threading.Thread(target=loop, daemon=True).start()
    return lambda: peak[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/hfssl_data_scale"))
    p.add_argument("--sizes_mb", type=float, nargs="+", default=[12, 126, 1260])
    p.add_argument("--num_proc", type=int, default=2)
    p.add_argument("--tokenizer_sample_mb", type=float, default=None,
                   help="the recipe's --tokenizer_train_mb (default: its default, a tenth of the text in 16-1,000 MB)")
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--one", nargs=2, metavar=("CORPUS", "CACHE"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_stages(*args.one, args.num_proc, args.tokenizer_sample_mb,
                                                args.max_seq_length)), flush=True)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for mb in args.sizes_mb:
        corpus = args.work_dir / f"corpus_{mb:g}mb.jsonl"
        size = make_corpus(corpus, mb)
        cache = args.work_dir / f"cache_{mb:g}mb"
        shutil.rmtree(cache, ignore_errors=True)
        for mode in ("cold", "cached"):
            t0 = time.perf_counter()
            sample = [] if args.tokenizer_sample_mb is None else ["--tokenizer_sample_mb", str(args.tokenizer_sample_mb)]
            proc = subprocess.run([sys.executable, __file__, "--one", str(corpus), str(cache), "--num_proc",
                                   str(args.num_proc), *sample, "--max_seq_length", str(args.max_seq_length)],
                                  capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            result = json.loads(proc.stdout.split("RESULT ", 1)[1])
            rows.append((size, mode, wall, result, folder_bytes(cache)))
            stages = "  ".join(f"{k} {v:.1f}s ({size / 1e6 / max(v, 1e-9):.1f} MB/s)" for k, v in result["seconds"].items())
            prep = before_step_1(result)
            print(f"{size / 1e6:8.1f} MB {mode:6s} {wall:7.1f} s with start-up, {prep:.1f} s of stages before step 1 "
                  f"({size / 1e6 / prep:.1f} MB/s), peak RSS {result['peak_rss_mb']:.0f} MB (anonymous "
                  f"{result['peak_anon_mb']:.0f} MB), cache {folder_bytes(cache) / size:.2f} x corpus\n    {stages}",
                  flush=True)
    print("\n| corpus | run | with start-up | stages before step 1 | MB/s | redraw of an epoch (background) | "
          "wait at the epoch boundary | peak RSS | peak anonymous | cache / corpus (peak) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, mode, wall, result, cache_bytes in rows:
        prep = before_step_1(result)
        print(f"| {size / 1e6:.0f} MB | {mode} | {wall:.1f} s | {prep:.1f} s | {size / 1e6 / prep:.1f} | "
              f"{result['seconds']['redraw (epoch 1)']:.1f} s | {result['seconds'][BOUNDARY]:.2f} s | "
              f"{result['peak_rss_mb']:.0f} MB | "
              f"{result['peak_anon_mb']:.0f} MB | {cache_bytes / size:.2f} |")


def before_step_1(result: dict) -> float:
    """Seconds of the stages a run waits for before its first step (the epoch-1 redraw happens during training,
    in the background)."""
    return sum(v for k, v in result["seconds"].items() if k not in DURING_TRAINING)


if __name__ == "__main__":
    main()
