"""Pretrain an image backbone with BYOL, export it as a plain transformers ResNet / ViT.

    accelerate launch recipes/byol.py [--config recipes/configs/byol_tiny.yaml] [--flag value ...]

With no arguments: recipes/configs/byol_tiny.yaml, a small ResNet on the embedded Fashion-MNIST subset, a few
minutes on a CPU, with the kNN accuracy of the frozen backbone in the progress output at every evaluation
and a linear probe at the end (when the images have labels; training never uses them). Writes
OUTPUT/model, a folder that AutoModelForImageClassification fine-tunes
(recipes/finetune_image_classification.py --model_name_or_path OUTPUT/model).
The recipe body is shared with the other contrastive recipes: hfssl/methods/ssl_recipe.py.
"""

from pathlib import Path

from hfssl.methods.ssl_recipe import main as run

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "byol_tiny.yaml"


def main(argv=None) -> dict:
    return run("byol", DEFAULT_CONFIG, argv)


if __name__ == "__main__":
    main()
