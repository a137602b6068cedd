"""Fine-tuning with the standard ``transformers.Trainer``: :mod:`.common` (arguments, data files, loading,
saving), :mod:`.text_classification`, :mod:`.qa` (extractive QA), :mod:`.metrics` (offline metrics)."""
