"""WordPiece tokenizer training: hfssl against the plain ``tokenizers`` trainer, side by side.

    plain   tokenizers BertWordPieceTokenizer().train(files)          (reads the .txt files itself)
    hfssl   load_documents(files) -> train_wordpiece(dataset)        (paragraphs, sentences, Arrow cache)

Same text, same vocabulary size, same normaliser. hfssl's extra cost is reading and normalising
the corpus into sentences; it is measured cold (a fresh datasets cache) and warm (the same cache
again, as in a second run of a recipe). The runs are interleaved and the median of --repeats is
reported, so load from other users of the machine hits both alike. Wall-clock and CPU seconds
(all threads, this process) are both shown: on a shared machine the CPU figure is the steadier one.
Target: hfssl cold within 1.3x.

    python benchmarks/data/tokenizer_train.py                      # ../shared/data/text/austen
    python benchmarks/data/tokenizer_train.py --data my_corpus/ --vocab_size 30522
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import datasets  # noqa: E402
from tokenizers import BertWordPieceTokenizer  # noqa: E402

from hfssl.text.corpus import load_documents  # noqa: E402
from hfssl.text.tokenizer import SPECIAL_TOKENS, train_wordpiece  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "text" / "austen",
                   help="folder of .txt files (or one .txt file)")
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--min_frequency", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (median reported)")
    return p.parse_args(argv)


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def run_plain(files: list[str], args) -> tuple[tuple[float, float], set[str]]:
    """The tokenizers library on its own: it reads the files line by line in Rust. Returns ((wall, cpu), vocab)."""
    start = clock()
    tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tokenizer.train(files, vocab_size=args.vocab_size, min_frequency=args.min_frequency, limit_alphabet=1000,
                    special_tokens=SPECIAL_TOKENS, show_progress=False, wordpieces_prefix="##")
    return since(start), set(tokenizer.get_vocab())


def run_hfssl(files: list[str], cache_dir: str, args):
    """hfssl: files -> documents of sentences (cached Arrow) -> WordPiece. Returns (read, total, vocab)."""
    start = clock()
    documents, _ = load_documents(files, cache_dir=cache_dir)
    read = since(start)
    tokenizer = train_wordpiece(documents, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                show_progress=False)
    return read, since(start), set(tokenizer.get_vocab())


def main(argv=None) -> None:
    args = parse_args(argv)
    datasets.disable_progress_bars()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    data = args.data.resolve()
    files = [str(data)] if data.is_file() else sorted(str(p) for p in data.rglob("*.txt"))
    if not files:
        sys.exit(f"no .txt files in {data}")
    size = sum(Path(f).stat().st_size for f in files)
    print(f"data: {len(files)} files, {size / 1e6:.2f} MB from {data}; vocab_size {args.vocab_size}")

    plain, cold_read, cold, warm_read, warm = [], [], [], [], []
    run_plain(files, args)  # warm the OS file cache and the libraries before timing
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            seconds, plain_vocab = run_plain(files, args)
            plain.append(seconds)
            read, total, vocab = run_hfssl(files, f"{tmp}/cache{i}", args)  # fresh cache: cold
            cold_read.append(read)
            cold.append(total)
            read, total, _ = run_hfssl(files, f"{tmp}/cache{i}", args)  # same cache: warm
            warm_read.append(read)
            warm.append(total)

    def med(runs, i):  # median wall (i=0) or CPU (i=1) seconds
        return statistics.median(r[i] for r in runs)

    overlap = len(vocab & plain_vocab) / len(vocab | plain_vocab)
    print(f"{'variant':<12}{'read wall':>10}{'total wall':>11}{'ratio':>7}{'read cpu':>10}{'total cpu':>10}{'ratio':>7}")
    for name, read, total in [("plain", None, plain), ("hfssl cold", cold_read, cold), ("hfssl warm", warm_read, warm)]:
        cells = [f"{med(read, i):>10.2f}" if read else f"{'-':>10}" for i in (0, 1)]
        print(f"{name:<12}{cells[0]}{med(total, 0):>11.2f}{med(total, 0) / med(plain, 0):>7.2f}"
              f"{cells[1]}{med(total, 1):>10.2f}{med(total, 1) / med(plain, 1):>7.2f}")
    print(f"vocabulary overlap (Jaccard) hfssl vs plain: {overlap:.3f}  "
          "(hfssl trains on sentences, plain on hard-wrapped lines)")


if __name__ == "__main__":
    main()
