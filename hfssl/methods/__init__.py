"""Pretraining methods: one ``nn.Module`` per method whose ``forward`` returns an output with ``.loss``."""
