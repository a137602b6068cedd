"""Task `wordnet_swap`: is a WordNet noun gloss intact (1) or has it had two of its content words swapped (0)?

Each gloss is used once (either intact or corrupted), glosses are split by index, so the model never sees
both versions. The corrupted gloss has exactly the original multiset of words: unigram bag-of-words is at
chance by construction. Only the definition part (before the first ';' example) is used, 6-25 words.
    python benchmarks/gain/text_transfer/wordnet_swap.py [--n_train 4000 --n_eval 1000]
"""
import argparse
import random

from common import DATA, OUT, read_jsonl, split_ids, write_jsonl

STOP = set("""a an the of or and to in on for with by from as at that which who whose whom is are be been being was
were has have had its it this these those not no than into onto such any some one two used use usually especially
often e.g. etc""".split())


def swap(words, rng):
    content = [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in STOP]
    for _ in range(20):
        if len(content) < 2:
            return None
        i, j = sorted(rng.sample(content, 2))
        if words[i].lower() != words[j].lower():
            w = list(words)
            w[i], w[j] = w[j], w[i]
            return w
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n_train", type=int, default=4000)
    p.add_argument("--n_eval", type=int, default=1000)
    p.add_argument("--seed", type=int, default=15)
    a = p.parse_args()
    rng = random.Random(a.seed)
    glosses = []
    seen = set()
    for row in read_jsonl(DATA / "wordnet/noun_glosses.jsonl"):
        g = row["text"].split(";")[0].strip()
        if 6 <= len(g.split()) <= 25 and g not in seen:
            seen.add(g)
            glosses.append(g)
    for split, ids in split_ids(len(glosses), seed=a.seed).items():
        n = a.n_train if split == "train" else a.n_eval
        rows = []
        for i in ids:
            if len(rows) == n:
                break
            words = glosses[i].split()
            if rng.random() < 0.5:
                rows.append({"text": glosses[i], "label": 1})
            else:
                w = swap(words, rng)
                if w is not None:
                    rows.append({"text": " ".join(w), "label": 0})
        write_jsonl(rows, OUT / "wordnet_swap" / f"{split}.jsonl")
        print(split, len(rows), "positives", sum(r["label"] for r in rows))


if __name__ == "__main__":
    main()
