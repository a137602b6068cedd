"""MoCo v2 / v3 (2003.04297, 2104.02057): recipes/contrastive.py with recipes/configs/moco_tiny.yaml as its default config.

    accelerate launch recipes/moco.py [--config FILE.yaml] [--flag value ...]
"""

from contrastive import CONFIGS, main

from hfssl.errors import run_cli

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, default_config=CONFIGS / "moco_tiny.yaml"))
