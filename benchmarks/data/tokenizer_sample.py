"""How much text a WordPiece vocabulary needs: vocabularies trained on growing samples of one corpus, judged on
held-out documents of it.

    python benchmarks/data/tokenizer_sample.py                       # ../shared/data text, 8,192 and 30,522 entries
    python benchmarks/data/tokenizer_sample.py --sizes_mb 1 2 4 8 --vocab_sizes 30522

The corpus is real text with no repeats (BBC articles, Austen chapters, WordNet glosses in groups of 50, as
``data_scale.py`` builds its documents); a tenth of the documents (seeded shuffle) is held out, and each vocabulary
is trained with hfssl's ``train_wordpiece`` on a sample of the rest chosen as the recipe chooses one (runs of
documents spread evenly; 0: all of it). For
each: training seconds, tokens per whitespace word on the held-out documents (what a sequence of fixed length
holds less of when the vocabulary fits the text worse), its excess over the vocabulary trained on all of the text,
the ``[UNK]`` rate, and the overlap of the vocabulary with the one trained on all of the text (Jaccard).
This is what ``--tokenizer_train_mb`` trades: preparation time against tokens per word.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks/data"))

from data_scale import source_documents  # noqa: E402

from hfssl.text.tokenizer import sample_runs, train_wordpiece  # noqa: E402


def corpus_sample(documents: list[str], megabytes: float) -> list[str]:
    """About ``megabytes`` MB of ``documents`` (0: all), chosen as the recipe chooses its sample:
    :func:`hfssl.text.tokenizer.sample_runs`, runs of consecutive documents spread evenly over the corpus."""
    total = sum(len(d.encode("utf-8")) for d in documents) / 1e6
    if megabytes <= 0 or megabytes >= total:
        return documents
    return [documents[i] for i in sample_runs(len(documents), max(1, int(len(documents) * megabytes / total)))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes_mb", type=float, nargs="+", default=[1, 2, 4, 8, 0])
    p.add_argument("--vocab_sizes", type=int, nargs="+", default=[8192, 30522])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    docs = source_documents()
    random.Random(args.seed).shuffle(docs)
    held, pool = docs[: len(docs) // 10], docs[len(docs) // 10:]
    words = sum(len(d.split()) for d in held)
    pool_mb = sum(len(d.encode("utf-8")) for d in pool) / 1e6
    print(f"training pool {pool_mb:.1f} MB ({len(pool):,} documents); held out {len(held):,} documents, "
          f"{words:,} words", flush=True)
    rows = []
    for vocab_size in args.vocab_sizes:
        results = []
        for mb in sorted(args.sizes_mb, key=lambda m: m if m > 0 else float("inf")):
            sample = corpus_sample(pool, mb)
            t = time.perf_counter()
            tokenizer = train_wordpiece(sample, vocab_size=vocab_size, show_progress=False)
            seconds = time.perf_counter() - t
            encoded = tokenizer.backend_tokenizer.encode_batch(held, add_special_tokens=False)
            tokens = sum(len(e.ids) for e in encoded)
            unk = sum(e.ids.count(tokenizer.unk_token_id) for e in encoded)
            results.append((sum(len(d.encode("utf-8")) for d in sample) / 1e6, seconds, tokens / words,
                            unk / tokens, set(tokenizer.get_vocab())))
            print(f"vocab {vocab_size}: {results[-1][0]:.1f} MB in {seconds:.1f} s, "
                  f"{tokens / words:.4f} tokens per word", flush=True)
        best = results[-1]
        for sample_mb, seconds, per_word, unk_rate, vocab in results:
            rows.append(f"| {vocab_size:,} | {sample_mb:.1f} MB | {len(vocab):,} | {seconds:.1f} s | {per_word:.4f} | "
                        f"{100 * (per_word / best[2] - 1):+.2f} % | {100 * unk_rate:.3f} % | "
                        f"{len(vocab & best[4]) / len(vocab | best[4]):.3f} |")
    print("\n| vocabulary | trained on | entries | seconds | tokens per held-out word | over all the text | [UNK] "
          "| Jaccard with all the text |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
