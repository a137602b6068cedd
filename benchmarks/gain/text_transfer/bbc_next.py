"""Task `bbc_next`: is the second sentence the true next sentence (1) or a sentence from ANOTHER article
of the SAME topic (0)?  Same topic, and the negative is drawn from the same pool of "second sentences",
so topic words and sentence length carry no label signal; what does is coherence (entity repetition,
pronouns, discourse connectives). Articles split 60/20/20 (negatives come from the same split).
    python benchmarks/gain/text_transfer/bbc_next.py [--n_train 4000 --n_eval 1000]
"""
import argparse
import random
from collections import defaultdict

from common import OUT, bbc_articles, nwords, split_ids, write_jsonl


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n_train", type=int, default=4000)
    p.add_argument("--n_eval", type=int, default=1000)
    p.add_argument("--seed", type=int, default=14)
    a = p.parse_args()
    rng = random.Random(a.seed)
    arts = bbc_articles()
    for split, ids in split_ids(len(arts), seed=13).items():
        cands = []  # (article id, topic, s1, s2)
        for i in ids:
            topic, sents = arts[i]
            c = [(i, topic, x, y) for x, y in zip(sents, sents[1:]) if 6 <= nwords(x) <= 30 and 6 <= nwords(y) <= 30]
            rng.shuffle(c)
            cands += c[:4]
        rng.shuffle(cands)
        by_topic = defaultdict(list)
        for c in cands:
            by_topic[c[1]].append(c)
        n = a.n_train if split == "train" else a.n_eval
        rows = []
        for art, topic, s1, s2 in cands[:n]:
            if rng.random() < 0.5:
                rows.append({"text": s1, "text_pair": s2, "label": 1})
            else:
                while True:
                    other = rng.choice(by_topic[topic])
                    if other[0] != art:
                        break
                rows.append({"text": s1, "text_pair": other[3], "label": 0})
        write_jsonl(rows, OUT / "bbc_next" / f"{split}.jsonl")
        print(split, len(rows), "positives", sum(r["label"] for r in rows))


if __name__ == "__main__":
    main()
