"""BYOL (2006.07733): recipes/contrastive.py with recipes/configs/byol_tiny.yaml as its default config.

    accelerate launch recipes/byol.py [--config FILE.yaml] [--flag value ...]
"""

from contrastive import CONFIGS, main

from hfssl.errors import run_cli

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, default_config=CONFIGS / "byol_tiny.yaml"))
