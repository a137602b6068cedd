"""Task `wordnet_polarity` (+ `wordnet_polarity_unseen`): a sentiment proxy from WordNet noun glosses.

Label = polarity of the evaluative words in the gloss, from a small hand-made lexicon: 1 if it contains
positive words only ("pleasant", "kind", "success", ...), 0 if negative words only ("cruel", "harm",
"failure", ...); glosses with both are dropped. Like sentiment it is LEXICAL (bag-of-words solves the
seen-word test), unlike the WordNet category task the label is not a topic (all 26 categories mix).
The lexicon is split at random in two halves: train / validation / test use glosses whose polar words
are all in the SEEN half; `wordnet_polarity_unseen` has the same train/validation but its test set uses
glosses whose polar words are all in the HELD-OUT half: only prior knowledge of the words (pretraining)
can solve it (BoW cannot: never-seen features).
    python benchmarks/gain/text_transfer/wordnet_polarity.py
"""
import random
import re

from common import DATA, OUT, read_jsonl, write_jsonl

POS = """good better best pleasant pleasing pleasure pleasurable beneficial benefit favorable favourable excellent
admirable admired kind kindness honest honesty happy happiness joy joyful delight delightful success successful
praise love loving beautiful beauty agreeable generous virtue virtuous wise wisdom gentle cheerful friendly helpful
useful valuable superior approval approve merit honor honour respect trust enjoy enjoyment comfort comfortable
healthy safe skillful skilled courage courageous calm peace peaceful""".split()
NEG = """bad worse worst unpleasant harmful harm evil painful pain dishonest unhappy failure fail sorrow hatred hate
cruel cruelty fear anger angry wicked ugly disagreeable selfish foolish stupid rude hostile useless inferior
disapproval disgrace shame contempt distrust suffering suffer misery miserable sick illness disease dangerous
danger violent violence damage injury offensive annoying annoyance grief sad sadness disgust guilt crime criminal
dirty lazy weak""".split()


def polar_glosses(max_words: int):
    """(gloss, its evaluative words, label) for each distinct gloss (first clause, 4..max_words words) whose
    evaluative words are all positive (label 1) or all negative (0), in file order."""
    pos_set, neg_set, dup = set(POS), set(NEG), set()
    for row in read_jsonl(DATA / "wordnet/noun_glosses.jsonl"):
        g = row["text"].split(";")[0].strip()
        if g in dup or not 4 <= len(g.split()) <= max_words:
            continue
        dup.add(g)
        words = set(re.findall(r"[a-z]+", g.lower()))
        p, n = words & pos_set, words & neg_set
        if bool(p) != bool(n):  # one polarity only
            yield g, p | n, int(bool(p))


def main():
    rng = random.Random(17)
    pos, neg = sorted(set(POS)), sorted(set(NEG))
    rng.shuffle(pos)
    rng.shuffle(neg)
    seen = set(pos[: len(pos) // 2]) | set(neg[: len(neg) // 2])
    rows_seen, rows_unseen = [], []
    for g, hits, label in polar_glosses(30):
        if hits <= seen:
            rows_seen.append({"text": g, "label": label})
        elif not hits & seen:
            rows_unseen.append({"text": g, "label": label})

    def balance(rows, n):
        by = {0: [r for r in rows if r["label"] == 0], 1: [r for r in rows if r["label"] == 1]}
        k = min(len(by[0]), len(by[1]), n // 2)
        out = by[0][:k] + by[1][:k]
        rng.shuffle(out)
        return out

    rng.shuffle(rows_seen)
    rng.shuffle(rows_unseen)
    print("glosses: seen-word", len(rows_seen), "pos", sum(r["label"] for r in rows_seen),
          "| unseen-word", len(rows_unseen), "pos", sum(r["label"] for r in rows_unseen))
    n = len(rows_seen)
    test, val, train = rows_seen[: n // 6], rows_seen[n // 6: n // 3], rows_seen[n // 3:]
    train, val, test = balance(train, 4000), balance(val, 1000), balance(test, 1000)
    unseen = balance(rows_unseen, 1000)
    write_jsonl(unseen, OUT / "wordnet_polarity" / "test_unseen.jsonl")
    for name, t in (("wordnet_polarity", test), ("wordnet_polarity_unseen", unseen)):
        write_jsonl(train, OUT / name / "train.jsonl")
        write_jsonl(val, OUT / name / "validation.jsonl")
        write_jsonl(t, OUT / name / "test.jsonl")
        print(name, "train", len(train), "val", len(val), "test", len(t))


if __name__ == "__main__":
    main()
