"""SimCLR (2002.05709): recipes/contrastive.py with recipes/configs/simclr_tiny.yaml as its default config.

    accelerate launch recipes/simclr.py [--config FILE.yaml] [--flag value ...]
"""

from contrastive import CONFIGS, main

from hfssl.errors import run_cli

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, default_config=CONFIGS / "simclr_tiny.yaml"))
