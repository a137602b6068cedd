"""Task `wordnet_shuffle`: is a WordNet noun gloss intact (1) or are its words randomly permuted (0)?

Easier, order-sensitive companion of wordnet_swap: same glosses, same split; each gloss used once.
Unigram bag-of-words is at chance by construction.
    python benchmarks/gain/text_transfer/wordnet_shuffle.py [--n_train 4000 --n_eval 1000]
"""
import argparse
import random

from common import DATA, OUT, read_jsonl, split_ids, write_jsonl


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n_train", type=int, default=4000)
    p.add_argument("--n_eval", type=int, default=1000)
    p.add_argument("--seed", type=int, default=16)
    a = p.parse_args()
    rng = random.Random(a.seed)
    glosses, seen = [], set()
    for row in read_jsonl(DATA / "wordnet/noun_glosses.jsonl"):
        g = row["text"].split(";")[0].strip()
        if 6 <= len(g.split()) <= 25 and g not in seen:
            seen.add(g)
            glosses.append(g)
    for split, ids in split_ids(len(glosses), seed=15).items():
        n = a.n_train if split == "train" else a.n_eval
        rows = []
        for i in ids[:n]:
            words = glosses[i].split()
            if rng.random() < 0.5:
                rows.append({"text": glosses[i], "label": 1})
            else:
                w = list(words)
                while w == words:
                    rng.shuffle(w)
                rows.append({"text": " ".join(w), "label": 0})
        write_jsonl(rows, OUT / "wordnet_shuffle" / f"{split}.jsonl")
        print(split, len(rows), "positives", sum(r["label"] for r in rows))


if __name__ == "__main__":
    main()
