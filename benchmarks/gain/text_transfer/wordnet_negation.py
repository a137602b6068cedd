"""Task `wordnet_negation`: the polarity of a statement about a WordNet gloss, which a negation flips.

Every gloss with evaluative words of one polarity (the lexicon of wordnet_polarity.py, both halves) is put into
one sentence template twice, affirmed and negated ("It was a feeling of great pleasure." / "It was not a feeling
of great pleasure."); label 1 = a positive statement (a positive gloss affirmed, or a negative one negated), 0 =
a negative one. Both forms of a gloss are in the same split (glosses split 60 / 20 / 20), so every word, the
negation included, occurs equally often under both labels: a bag of words (and of word pairs) is at chance by
construction; the label needs the polarity of the gloss composed with the negation.
    python benchmarks/gain/text_transfer/wordnet_negation.py
"""
import random

from common import OUT, write_jsonl
from wordnet_polarity import polar_glosses

TEMPLATES = [  # (affirmed, negated)
    ("It was {}.", "It was not {}."),
    ("She said it was {}.", "She said it was not {}."),
    ("They found it to be {}.", "They never found it to be {}."),
    ("What he felt was {}.", "What he felt was never {}."),
]


def main():
    rng = random.Random(23)
    glosses = [(g, label) for g, _, label in polar_glosses(25)]
    rng.shuffle(glosses)
    by = {0: [x for x in glosses if x[1] == 0], 1: [x for x in glosses if x[1] == 1]}
    k = min(len(by[0]), len(by[1]))
    glosses = by[0][:k] + by[1][:k]  # as many positive as negative glosses
    rng.shuffle(glosses)
    n = len(glosses)
    parts = {"train": glosses[: round(0.6 * n)], "validation": glosses[round(0.6 * n): round(0.8 * n)],
             "test": glosses[round(0.8 * n):]}
    print("glosses", n, "(half positive)")
    for split, items in parts.items():
        rows = []
        for g, polarity in items:
            yes, no = rng.choice(TEMPLATES)
            rows.append({"text": yes.format(g), "label": polarity})
            rows.append({"text": no.format(g), "label": 1 - polarity})
        rng.shuffle(rows)
        write_jsonl(rows, OUT / "wordnet_negation" / f"{split}.jsonl")
        print("wordnet_negation", split, len(rows))


if __name__ == "__main__":
    main()
