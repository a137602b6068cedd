"""Train a BERT WordPiece tokenizer on a corpus and save a folder that AutoTokenizer loads.

    python recipes/train_tokenizer.py --config recipes/configs/train_tokenizer.yaml
    python recipes/train_tokenizer.py --corpus path/to/texts --output_dir runs/tok --vocab_size 8192

With no --corpus it trains on the embedded Jane Austen novels (one document per chapter). The folder is
written beside --output_dir and swapped into place when complete: with --overwrite_output_dir it then
holds the new tokenizer and nothing of what was there before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.text.corpus import CorpusArgs, load_corpus
from hfssl.text.tokenizer import TokenizerArgs, publish_tokenizer, train_wordpiece

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train_tokenizer.yaml"


@dataclass
class OutputArgs:
    output_dir: str = field(default="runs/tokenizer", metadata={"help": "Folder to write the tokenizer to."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir (its old "
                                                                        "files are removed)."})

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir must name a folder, got an empty string")


def main(argv: list[str] | None = None) -> Path:
    corpus_args, tok_args, out_args = parse(CorpusArgs, TokenizerArgs, OutputArgs, args=argv, default_config=DEFAULT_CONFIG)
    output_dir = Path(out_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file; choose a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not out_args.overwrite_output_dir:
        raise UserError(f"--output_dir {output_dir} is not empty; pass --overwrite_output_dir to replace it, "
                        "or choose another --output_dir")
    if tok_args.tokenizer_name_or_path:
        raise UserError("--tokenizer_name_or_path names a tokenizer to reuse, but this recipe trains a new one; "
                        "leave it unset")

    # Corpus: raw files -> documents of sentences (cached by datasets), with a report of what was read.
    documents, report = load_corpus(corpus_args)
    print(report, flush=True)

    # WordPiece vocabulary trained on the sentences, wrapped as a transformers BertTokenizer.
    tokenizer = train_wordpiece(documents, vocab_size=tok_args.vocab_size, lowercase=tok_args.lowercase,
                                min_frequency=tok_args.min_frequency, model_max_length=tok_args.model_max_length or 512)

    # Written beside output_dir, then swapped in: the folder holds exactly this tokenizer (no stale vocab.txt).
    publish_tokenizer(tokenizer, output_dir, overwrite=out_args.overwrite_output_dir)
    print(f"saved a {len(tokenizer)}-token {type(tokenizer).__name__} to {output_dir} "
          f"(load with AutoTokenizer.from_pretrained({str(output_dir)!r}))")
    return output_dir


if __name__ == "__main__":
    run_cli(main)
