"""MoCo v2 / v3 (2003.04297, 2104.02057): recipes/contrastive.py with recipes/configs/moco_tiny.yaml as its default config.

    accelerate launch recipes/moco.py [--config FILE.yaml] [--flag value ...]
"""

from contrastive import CONFIGS, main

if __name__ == "__main__":
    main(default_config=CONFIGS / "moco_tiny.yaml")
