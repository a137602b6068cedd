"""Shared helpers for the non-topic task generators (stdlib only)."""
import json
import os
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "text"  # ../shared next to the checkout
OUT = Path(os.environ.get("HFSSL_TRANSFER_TASKS", "/tmp/hfssl_transfer_tasks"))
# sentence boundary: . ! ? (optionally followed by a closing quote) then space then an upper-case letter / quote
_SENT = re.compile(r'(?<=[.!?])["\']?\s+(?=["\']?[A-Z])')


def read_jsonl(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def write_jsonl(rows, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def bbc_articles():
    """BBC articles as (topic, [sentences of the body]); headline dropped, mojibake pound sign fixed."""
    out = []
    for row in read_jsonl(DATA / "bbc_news/bbc_news.jsonl"):
        text = row["text"].replace("\u00c2\u00a3", "\u00a3")
        paras = [p.strip() for p in text.split("\n") if p.strip()][1:]  # first line = headline
        sents = []
        for p in paras:
            sents += [s.strip() for s in _SENT.split(p) if s.strip()]
        out.append((row["label"], sents))
    return out


def split_ids(n, fractions=(0.6, 0.2, 0.2), seed=13):
    ids = list(range(n))
    random.Random(seed).shuffle(ids)
    a, b = round(n * fractions[0]), round(n * (fractions[0] + fractions[1]))
    return {"train": ids[:a], "validation": ids[a:b], "test": ids[b:]}


def nwords(s):
    return len(s.split())
