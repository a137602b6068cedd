"""A deterministic caption vocabulary: BERT's WordPiece pipeline over whole words, counted and sorted.

Captions are short and their vocabulary small, so the tokenizer keeps the most frequent whole words (ties in
alphabetical order) plus every character seen, alone and as a ``##`` continuation, so that an unseen word is
spelled out instead of becoming ``[UNK]``. Unlike ``tokenizers``' WordPiece trainer (whose ids depend on hash-map
order, docs/DESIGN.md "Traps"), the same captions always give the same ids: two runs, two processes or a resume
agree without sharing a file. The result is a ``BertTokenizer`` (``[CLS] ... [SEP]``, ``vocab.txt``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers.models import WordPiece
from transformers import BertTokenizer

from hfssl.text.tokenizer import SPECIAL_TOKENS, bert_wordpiece_pipeline, wrap_bert_tokenizer


def caption_tokenizer(captions: Iterable[str], *, vocab_size: int = 2000, model_max_length: int = 64,
                      lowercase: bool = True) -> BertTokenizer:
    """A WordPiece tokenizer whose pieces are the captions' most frequent words and their characters."""
    pipeline = bert_wordpiece_pipeline(lowercase)
    words: Counter[str] = Counter()
    for text in captions:
        normal = pipeline.normalizer.normalize_str(text)
        words.update(w for w, _ in pipeline.pre_tokenizer.pre_tokenize_str(normal))
    chars = sorted({c for w in words for c in w})
    pieces = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
    room = max(vocab_size - len(pieces), 0)
    taken = set(pieces)
    ranked = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if w not in taken]
    pieces += ranked[:room]
    model = WordPiece(vocab={p: i for i, p in enumerate(pieces)}, unk_token="[UNK]", continuing_subword_prefix="##",
                      max_input_chars_per_word=100)
    pipeline.model = model
    return wrap_bert_tokenizer(pipeline, lowercase, model_max_length)
