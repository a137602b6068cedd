"""SimCLR (2002.05709): recipes/contrastive.py with recipes/configs/simclr_tiny.yaml as its default config.

    accelerate launch recipes/simclr.py [--config FILE.yaml] [--flag value ...]
"""

from contrastive import CONFIGS, main

if __name__ == "__main__":
    main(default_config=CONFIGS / "simclr_tiny.yaml")
