"""Unigram and bigram baselines for recipes/gpt_clm.py: held-out bits per byte on the split the recipe evaluates.

    python benchmarks/gain/lm_baselines.py --run_dirs /tmp/gpt_gain/gpt_s0 /tmp/gpt_gain/gpt_s1 /tmp/gpt_gain/gpt_s2 \
        --out /tmp/gpt_gain/lm_baselines.json --threads 2

Each ``--run_dirs`` folder is the ``--output_dir`` of one recipes/gpt_clm.py run. Its settings (corpus, document
separator, ``--eval_fraction``, ``--seed``, ``--max_seq_length``) are read from its newest checkpoint's
``trainer_state.json`` (or given with ``--recipe_args``, the run's own flags, when it saved no checkpoint), and the
recipe's own code rebuilds the same data: :func:`hfssl.text.corpus.split_documents` with the run's seed, the run's
byte-level BPE (``OUTPUT/tokenizer``, trained on the training split and cached with the corpus), and the held-out
rows of ``CLMRowBuilder`` (``seed + 1``, epoch 0). The count of predicted held-out tokens must equal the run's own
``eval_predicted`` in ``metrics.jsonl``, or the script stops: a baseline is never scored on other text than the model.

Models, fitted on the training split only (its token stream: documents in order, ``<|endoftext|>`` between two
documents, per block of :data:`hfssl.text.nsp.BLOCK_DOCS` documents, as the recipe packs its rows) and scored on
exactly the tokens the recipe's evaluation predicts (every position of a held-out row but the first, the bigram's
context being the token before it in the row):

* unigram, add-k (``--unigram_k``, default 1: Laplace): ``p(w) = (c(w) + k) / (N + k V)``;
* bigram, interpolated Kneser-Ney (Chen & Goodman 1998, one discount): ``p(w | v) = (max(c(v w) - D, 0) +
  D N1+(v .) p_cont(w)) / c(v)``, ``p_cont(w)`` for an unseen context ``v``; ``D = n1 / (n1 + 2 n2)`` from the
  counts of bigrams seen once and twice (Ney's estimate, from the training split alone). The continuation unigram
  ``p_cont(w) = (max(N1+(. w) - D', 0) + D' T / V) / N1+(. .)`` (``T`` words with a continuation count, ``D'``
  likewise from its count-of-counts) is interpolated with the uniform distribution, so no token has probability 0;
* the same two on bytes (256 byte values plus one end-of-text symbol, for a reference free of any tokenizer): the
  training stream and each held-out row mapped token by token to the UTF-8 bytes it stands for; the bytes scored
  are those of the predicted tokens (the first byte's context is the last byte of the row's first token), so the
  byte models are scored on the very bytes the token models are.

Bits per byte as :func:`hfssl.methods.gpt.clm_summary` computes it (it is called here): the nats of all predicted
symbols / (ln 2 x the UTF-8 bytes they stand for); the end-of-text symbol is predicted and costs its nats but
stands for 0 bytes. The JSON (``--out``) holds per run the baselines, the run's own last ``eval_bits_per_byte`` and
the counts; ``benchmarks/gain/gpt_gain.py summary`` prints it as a table with the fine-tuning gains.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EOS_BYTE = 256  # the end-of-text symbol of the byte models (bytes are 0..255)


# --- the models ------------------------------------------------------------------------------------------

def unigram_addk(sequences: list[np.ndarray], vocab_size: int, k: float = 1.0) -> np.ndarray:
    """(V,) add-k unigram probabilities over every symbol of ``sequences``."""
    counts = np.zeros(vocab_size, np.float64)
    for seq in sequences:
        counts += np.bincount(seq, minlength=vocab_size)
    return (counts + k) / (counts.sum() + k * vocab_size)


def _discount(count_of_counts: np.ndarray) -> float:
    """Ney's absolute discount ``n1 / (n1 + 2 n2)`` from positive counts (0.75 when it is undefined or not in (0, 1))."""
    n1, n2 = int((count_of_counts == 1).sum()), int((count_of_counts == 2).sum())
    d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.75
    return d if 0.0 < d < 1.0 else 0.75


class BigramKN:
    """Interpolated Kneser-Ney bigram over symbols ``0..V-1`` (module docstring), from sparse counts: no (V, V)
    table, so an 8,192-token vocabulary costs the number of distinct bigrams seen."""

    def __init__(self, sequences: list[np.ndarray], vocab_size: int):
        v = self.vocab_size = int(vocab_size)
        codes = np.concatenate([s[:-1].astype(np.int64) * v + s[1:] for s in sequences if len(s) > 1]
                               or [np.zeros(0, np.int64)])
        self.codes, self.counts = np.unique(codes, return_counts=True)  # sorted distinct (prev * V + next), c(v w)
        prev, nxt = self.codes // v, self.codes % v
        self.context_count = np.bincount(prev, weights=self.counts, minlength=v)  # c(v)
        self.followers = np.bincount(prev, minlength=v).astype(np.float64)  # N1+(v .)
        self.discount = _discount(self.counts)
        continuation = np.bincount(nxt, minlength=v).astype(np.float64)  # N1+(. w)
        types = max(len(self.codes), 1)  # N1+(. .)
        d1 = self.discount_continuation = _discount(continuation[continuation > 0])
        self.p_cont = (np.maximum(continuation - d1, 0.0) + d1 * (continuation > 0).sum() / v) / types
        if not len(self.codes):  # nothing seen: uniform
            self.p_cont = np.full(v, 1.0 / v)

    def prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """``p(nxt | prev)`` for arrays of the same shape."""
        prev, nxt = np.asarray(prev, np.int64), np.asarray(nxt, np.int64)
        code = prev * self.vocab_size + nxt
        at = np.minimum(np.searchsorted(self.codes, code), max(len(self.codes) - 1, 0))
        seen = np.zeros(code.shape, np.float64)
        if len(self.codes):
            seen = np.where(self.codes[at] == code, self.counts[at], 0.0)
        c_v, n_v, p_c = self.context_count[prev], self.followers[prev], self.p_cont[nxt]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (np.maximum(seen - self.discount, 0.0) + self.discount * n_v * p_c) / c_v
        return np.where(c_v > 0, p, p_c)


# --- token and byte streams --------------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 byte values to the printable characters a byte-level BPE token is spelled with."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in keep else next(extra)) for b in range(256)}


def token_symbols(tokenizer) -> list[np.ndarray]:
    """Per token id, the byte symbols it stands for: its UTF-8 bytes (exact for a byte-level BPE: one character of
    the token per byte), ``[EOS_BYTE]`` for special tokens (``<|endoftext|>``), so that a token stream maps to a
    byte stream with the eos kept as one symbol of 0 bytes."""
    from hfssl.text.bpe import token_byte_lengths

    lengths = token_byte_lengths(tokenizer)  # the byte counts bits per byte divides by: checked against below
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(lengths)
    for token, i in tokenizer.get_vocab().items():
        if i in special:
            out[i] = np.array([EOS_BYTE], np.int64)
            continue
        if all(c in byte_of for c in token) and len(token) == lengths[i]:
            raw = bytes(byte_of[c] for c in token)
        else:  # not byte-level: the token decoded alone
            raw = tokenizer.decode([i]).encode("utf-8")
        out[i] = np.frombuffer(raw, np.uint8).astype(np.int64)
    return out


def to_bytes(ids: np.ndarray, symbols: list[np.ndarray]) -> np.ndarray:
    """A token stream as its byte-symbol stream."""
    return np.concatenate([symbols[int(t)] for t in ids]) if len(ids) else np.zeros(0, np.int64)


def training_streams(tokenized, eos_id: int) -> list[np.ndarray]:
    """The training split's token streams as the recipe packs them: per block of documents, in order, eos between."""
    from hfssl.text.encode import flat_corpus
    from hfssl.text.nsp import BLOCK_DOCS, block_stream

    corpus, n = flat_corpus(tokenized), len(tokenized)
    return [block_stream(corpus, first, min(first + BLOCK_DOCS, n), eos_id).astype(np.int64)
            for first in range(0, n, BLOCK_DOCS)]


def score(rows: list[np.ndarray], first: list[int], logp_uni: np.ndarray, bigram: BigramKN,
          weight: np.ndarray) -> dict[str, dict[str, float]]:
    """Totals for :func:`hfssl.methods.gpt.clm_summary` of the unigram and bigram on ``rows``: each row's symbols
    from index ``first[r]`` on are predicted (``first >= 1``; the one before is context); ``weight`` (V,) is the
    bytes a symbol stands for."""
    targets = np.concatenate([r[f:] for r, f in zip(rows, first)])
    context = np.concatenate([r[f - 1:-1] for r, f in zip(rows, first)])
    common = {"predicted": float(len(targets)), "bytes": float(weight[targets].sum()), "correct": 0.0}
    return {"unigram": {**common, "nats": float(-logp_uni[targets].sum())},
            "bigram": {**common, "nats": float(-np.log(bigram.prob(context, targets)).sum())}}


def bits_per_byte(totals: dict[str, float]) -> float:
    from hfssl.methods.gpt import clm_summary

    return clm_summary(totals)["bits_per_byte"]


# --- the run's data, rebuilt by the recipe's code ------------------------------------------------------------

def run_settings(run_dir: Path, recipe_args: list[str] | None) -> dict:
    """The data-defining settings of a gpt_clm run: from ``recipe_args`` (the run's flags, parsed as the recipe
    parses them) when given, else from the newest checkpoint's ``trainer_state.json``."""
    if recipe_args is not None:
        sys.path.insert(0, str(ROOT / "recipes"))
        from gpt_clm import DEFAULT_CONFIG

        from hfssl.config import parse
        from hfssl.hub import HubArgs
        from hfssl.methods.gpt_config import GPTModelArgs, SampleArgs
        from hfssl.text.bpe import BPEArgs
        from hfssl.text.clm import CLMArgs
        from hfssl.text.corpus import CorpusArgs, EvalSplitArgs
        from hfssl.train import TrainArgs

        parsed = parse(CorpusArgs, BPEArgs, CLMArgs, GPTModelArgs, SampleArgs, TrainArgs, HubArgs, EvalSplitArgs,
                       args=[*recipe_args, "--output_dir", str(run_dir)], default_config=DEFAULT_CONFIG)
        out = {}
        for args in parsed:
            out.update(dataclasses.asdict(args))
        return out
    from hfssl.checkpoint import complete_checkpoints

    found = complete_checkpoints(run_dir)
    if not found:
        raise SystemExit(f"error: {run_dir} has no checkpoint whose trainer_state.json records the run's settings; "
                         "pass the run's flags after --recipe_args (e.g. --recipe_args --seed 0)")
    return json.loads((found[0] / "trainer_state.json").read_text())["settings"]


def _pick(cls, settings: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in names})


def heldout_and_training(run_dir: Path, settings: dict):
    """(tokenizer, training token streams, held-out rows (R, T)) of the run, built as recipes/gpt_clm.py builds them."""
    from hfssl.methods.gpt_config import DEFAULT_POSITIONS
    from hfssl.text.clm import CLMArgs, CLMRowBuilder
    from hfssl.text.corpus import CorpusArgs, EvalSplitArgs, load_corpus, split_documents
    from hfssl.text.tokenizer import load_tokenizer

    if settings.get("model_name_or_path"):
        raise SystemExit(f"error: {run_dir} continued {settings['model_name_or_path']}; the baselines are for runs "
                         "from scratch on a corpus (their split and tokenizer)")
    seed = int(settings["seed"])
    documents, _ = load_corpus(_pick(CorpusArgs, settings))
    split = split_documents(documents, _pick(EvalSplitArgs, settings), seed=seed)
    if split["test"] is None:
        raise SystemExit(f"error: {run_dir} ran with --eval_fraction 0: there is no held-out split to score")
    if not (run_dir / "tokenizer").is_dir():
        raise SystemExit(f"error: {run_dir / 'tokenizer'} not found: is {run_dir} the --output_dir of recipes/gpt_clm.py?")
    tokenizer = load_tokenizer(run_dir / "tokenizer", settings.get("n_positions") or DEFAULT_POSITIONS)
    clm_args = _pick(CLMArgs, settings)
    train = CLMRowBuilder.from_documents(split["train"], tokenizer, clm_args, seed=seed, name="training split")
    streams = training_streams(train.tokenized, tokenizer.eos_token_id)
    rows = CLMRowBuilder.from_documents(split["test"], tokenizer, clm_args, seed=seed + 1,
                                        name="held-out split").for_epoch(0)
    return tokenizer, streams, np.asarray(rows.with_format("numpy")["input_ids"], np.int64)


def last_eval(run_dir: Path) -> dict:
    """The run's last held-out evaluation in metrics.jsonl (empty when it logged none)."""
    path, last = run_dir / "metrics.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "eval_bits_per_byte" in record:
                last = record
    return last


def baselines(run_dir: Path, recipe_args: list[str] | None = None, unigram_k: float = 1.0) -> dict:
    """Token and byte unigram / bigram bits per byte on the run's held-out rows (module docstring)."""
    from hfssl.text.bpe import token_byte_lengths

    settings = run_settings(run_dir, recipe_args)
    tokenizer, streams, rows = heldout_and_training(run_dir, settings)
    model = last_eval(run_dir)
    if model and int(model["eval_predicted"]) != rows.shape[0] * (rows.shape[1] - 1):
        raise SystemExit(f"error: the held-out rows rebuilt here predict {rows.shape[0] * (rows.shape[1] - 1)} tokens, "
                         f"the run's evaluation {int(model['eval_predicted'])} ({run_dir / 'metrics.jsonl'}): not the "
                         "run's split; pass the run's own flags with --recipe_args")
    weight = token_byte_lengths(tokenizer).astype(np.float64)
    vocab = len(weight)
    token = score(list(rows), [1] * len(rows), np.log(unigram_addk(streams, vocab, unigram_k)),
                  BigramKN(streams, vocab), weight)

    symbols = token_symbols(tokenizer)
    byte_streams = [to_bytes(s, symbols) for s in streams]
    byte_rows = [to_bytes(r, symbols) for r in rows]
    first = [len(symbols[int(r[0])]) for r in rows]  # the row's first token is context only
    byte_weight = np.ones(EOS_BYTE + 1)
    byte_weight[EOS_BYTE] = 0.0
    byte = score(byte_rows, first, np.log(unigram_addk(byte_streams, EOS_BYTE + 1, unigram_k)),
                 BigramKN(byte_streams, EOS_BYTE + 1), byte_weight)
    if byte["unigram"]["bytes"] != token["unigram"]["bytes"]:  # the same text under both
        raise AssertionError(f"byte models scored {byte['unigram']['bytes']} bytes, token models "
                             f"{token['unigram']['bytes']}")
    result = {"run_dir": str(run_dir), "seed": int(settings["seed"]), "vocab_size": vocab,
              "heldout_rows": int(rows.shape[0]), "predicted_tokens": int(token["unigram"]["predicted"]),
              "heldout_bytes": int(token["unigram"]["bytes"]),
              "training_tokens": int(sum(len(s) for s in streams)), "unigram_k": unigram_k,
              "bits_per_byte": {"byte unigram": bits_per_byte(byte["unigram"]),
                                "byte bigram": bits_per_byte(byte["bigram"]),
                                "token unigram": bits_per_byte(token["unigram"]),
                                "token bigram": bits_per_byte(token["bigram"])}}
    if model:
        result["bits_per_byte"]["model"] = float(model["eval_bits_per_byte"])
        result["model_step"] = int(model["step"])
    return result


LABELS = {"byte unigram": "bytes, unigram (add-k)", "byte bigram": "bytes, bigram (interpolated Kneser-Ney)",
          "token unigram": "the run's BPE, unigram (add-k)", "token bigram": "the run's BPE, bigram (interpolated KN)",
          "model": "the pretrained GPT (the run's last evaluation)"}


def table(runs: list[dict]) -> str:
    """Markdown: held-out bits per byte per model, mean +- sd over the runs (seeds) and each run's value."""
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [f"| held-out bits per byte (lower is better) | mean ± sd over seeds | seeds {seeds} |",
             "| --- | --- | --- |"]
    for key, label in LABELS.items():
        values = [r["bits_per_byte"][key] for r in runs if key in r["bits_per_byte"]]
        if len(values) != len(runs):
            continue
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {label} | {statistics.mean(values):.3f} ± {sd:.3f} | "
                     f"{' / '.join(f'{v:.3f}' for v in values)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dirs", type=Path, nargs="+", required=True, help="--output_dir folders of recipes/gpt_clm.py")
    p.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    p.add_argument("--unigram_k", type=float, default=1.0, help="add-k of the unigrams (1: Laplace)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (tokenizing; the counts are numpy)")
    p.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=None,
                   help="the runs' flags (all runs alike), when a run saved no checkpoint with its settings")
    args = p.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    runs = []
    for run_dir in args.run_dirs:
        runs.append(baselines(run_dir, args.recipe_args, args.unigram_k))
        r = runs[-1]
        print(f"{run_dir}: seed {r['seed']}, {r['predicted_tokens']:,} predicted held-out tokens "
              f"({r['heldout_bytes']:,} bytes), {r['training_tokens']:,} training tokens: "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["bits_per_byte"].items()), flush=True)
    print()
    print(table(runs))
    if args.out:
        args.out.write_text(json.dumps({"runs": runs}, indent=1))
        print(f"\nwrote {args.out}")
    if not math.isfinite(sum(v for r in runs for v in r["bits_per_byte"].values())):
        raise SystemExit("error: a bits-per-byte value is not finite")


if __name__ == "__main__":
    main()
