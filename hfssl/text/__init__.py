"""Text pipeline: corpus reading, WordPiece tokenizer, NSP pairs, MLM masking."""
