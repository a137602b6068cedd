"""TF-IDF + logistic regression baselines for the task folders (train -> test accuracy).

joint: one TF-IDF vector of text + text_pair; separate: [tfidf(text), tfidf(text_pair)] (sees which
words are in which segment). Unigrams (the bag of words) and 1-2-grams (for reference).
    python benchmarks/gain/text_transfer/bow_baseline.py /tmp/hfssl_transfer_tasks/bbc_order /tmp/hfssl_transfer_tasks/bbc_next \
        /tmp/hfssl_transfer_tasks/wordnet_swap
"""
import json
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression


def load(p):
    return [json.loads(x) for x in Path(p).read_text().splitlines()]


def run(folder):
    tr, va, te = (load(Path(folder) / f"{s}.jsonl") for s in ("train", "validation", "test"))
    pair = "text_pair" in tr[0]
    out = {}
    for ngram in ((1, 1), (1, 2)):
        for mode in (("joint", "separate") if pair else ("joint",)):
            if mode == "joint":
                v = TfidfVectorizer(ngram_range=ngram, min_df=1, sublinear_tf=True)
                f = lambda rows, fit=False: (v.fit_transform if fit else v.transform)(
                    [r["text"] + " " + r.get("text_pair", "") for r in rows])
            else:
                v1 = TfidfVectorizer(ngram_range=ngram, sublinear_tf=True)
                v2 = TfidfVectorizer(ngram_range=ngram, sublinear_tf=True)
                f = lambda rows, fit=False: hstack([(v1.fit_transform if fit else v1.transform)([r["text"] for r in rows]),
                                                    (v2.fit_transform if fit else v2.transform)([r["text_pair"] for r in rows])]).tocsr()
            xtr = f(tr, fit=True)
            xva, xte = f(va), f(te)
            ytr, yva, yte = (np.array([r["label"] for r in rows]) for rows in (tr, va, te))
            best = max(((LogisticRegression(C=c, max_iter=3000).fit(xtr, ytr), c) for c in (0.1, 1, 10)),
                       key=lambda mc: (mc[0].predict(xva) == yva).mean())
            out[f"{mode} {ngram[0]}-{ngram[1]}gram"] = round(float((best[0].predict(xte) == yte).mean()), 3)
    majority = max(np.mean([r["label"] for r in te]), 1 - np.mean([r["label"] for r in te]))
    print(Path(folder).name, f"majority {majority:.3f}", out, flush=True)


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        run(folder)
