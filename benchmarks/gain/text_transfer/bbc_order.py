"""Task `bbc_order`: are two consecutive BBC sentences in the original order (1) or swapped (0)?

Both orders contain exactly the same words, so a bag of words over the pair is at chance by construction.
Articles are split 60/20/20 into train/validation/test (no article in two splits).
    python benchmarks/gain/text_transfer/bbc_order.py [--n_train 4000 --n_eval 1000]
"""
import argparse
import random

from common import OUT, bbc_articles, nwords, split_ids, write_jsonl


def pairs(articles, ids, rng):
    out = []
    for i in ids:
        _, sents = articles[i]
        cands = [(a, b) for a, b in zip(sents, sents[1:]) if 6 <= nwords(a) <= 30 and 6 <= nwords(b) <= 30]
        rng.shuffle(cands)
        out += cands[:4]  # at most 4 pairs per article
    rng.shuffle(out)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n_train", type=int, default=4000)
    p.add_argument("--n_eval", type=int, default=1000)
    p.add_argument("--seed", type=int, default=13)
    a = p.parse_args()
    rng = random.Random(a.seed)
    arts = bbc_articles()
    for split, ids in split_ids(len(arts), seed=a.seed).items():
        n = a.n_train if split == "train" else a.n_eval
        rows = []
        for s1, s2 in pairs(arts, ids, rng)[:n]:
            keep = rng.random() < 0.5
            rows.append({"text": s1 if keep else s2, "text_pair": s2 if keep else s1, "label": int(keep)})
        write_jsonl(rows, OUT / "bbc_order" / f"{split}.jsonl")
        print(split, len(rows), "positives", sum(r["label"] for r in rows))


if __name__ == "__main__":
    main()
