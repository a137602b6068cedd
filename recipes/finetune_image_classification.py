"""Fine-tune an image classifier with transformers' Trainer, from a pretrained folder or from scratch.

    python recipes/finetune_image_classification.py [--model_name_or_path runs/mae_tiny/model] \
        [--output_dir runs/ft] [--data ...] [--from_scratch] [--config FILE.yaml]

Defaults: recipes/configs/finetune_image_classification.yaml (the ViT that recipes/mae.py exports).

The images come in exactly as for pretraining (hfssl.vision.data: folders, save_to_disk, .npz, IDX, or the
embedded Fashion-MNIST subset) and are normalised with the model folder's image processor, so training
matches what pipeline("image-classification", model=OUTPUT_DIR) does with the saved model and processor.
--from_scratch keeps the architecture and the processor but starts from random weights: the baseline a
pretraining gain is measured against (without --model_name_or_path it builds a ViT of --preset size).
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    Trainer,
    set_seed,
)

from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.finetune.common import (
    FinetuneTrainingArguments,
    ModelArgs,
    check_output_dir,
    describe_loading,
    load_model,
    load_pretrained,
    train_and_finish,
)
from hfssl.finetune.metrics import classification_metrics
from hfssl.methods.mae import PRESETS, MAEArgs, mae_config, vit_config_from_mae
from hfssl.vision.data import EVAL_SPLITS, ImageDataArgs, load_images
from hfssl.vision.export import vit_image_processor
from hfssl.vision.transforms import AugmentArgs, ClassificationTransform, ImageViews

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "finetune_image_classification.yaml"


@dataclass
class ScratchViTArgs:
    """The ViT to build when there is no model folder (``--from_scratch`` alone)."""

    preset: str = field(default="tiny", metadata={"help": "ViT size (MAE's presets) when there is no model folder."})
    patch_size: int = field(default=4, metadata={"help": "ViT patch size when there is no model folder."})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        if self.patch_size < 1:
            raise ValueError(f"--patch_size must be at least 1, got {self.patch_size}")


def check_labels(names: list[str] | None, data_args: ImageDataArgs) -> None:
    """Labelled images of at least two classes. A one-class image folder (``data/CLASS/*``, or under split
    folders) has no label column at all: datasets' imagefolder drops a single label, so its folders are read."""
    where, root = data_args.data or "the embedded Fashion-MNIST subset", Path(data_args.data or ".").expanduser()
    classes = names
    if names is None and data_args.data and root.is_dir() and not (root / "state.json").is_file():
        classes = sorted({f.parent.name for f in root.rglob("[!.]*") if f.is_file() and f.parent != root
                          and f.parent.name not in ("train", *EVAL_SPLITS)})
    if classes is not None and len(classes) == 1:
        raise UserError(f"the data has one class, {classes[0]!r}, --data {where}; classification needs at least "
                        "two: add a folder (or labelled images) for another class")
    if names is None:
        raise UserError(f"the images of --data {where} have no labels; give an image folder with one subfolder per "
                        f"class, or a dataset with a {data_args.label_column!r} column (--label_column)")


def main(argv=None) -> dict:
    """Run the recipe; returns the final evaluation metrics (eval_accuracy, eval_f1 = macro-F1, eval_loss)."""
    data_args, aug_args, ft_args, vit_args, training_args = parse(
        ImageDataArgs, AugmentArgs, ModelArgs, ScratchViTArgs, FinetuneTrainingArguments, args=argv,
        default_config=DEFAULT_CONFIG)
    if not ft_args.model_name_or_path and not ft_args.from_scratch:
        raise UserError("no model, --model_name_or_path: give a pretrained folder (e.g. the OUTPUT/model of "
                        "recipes/mae.py) or pass --from_scratch")
    path, processor = ft_args.model_name_or_path, None
    if path:
        ft_args.require_path("the OUTPUT/model folder of recipes/mae.py")
    check_output_dir(training_args)
    training_args.remove_unused_columns = False  # the batch is built by ClassificationTransform
    set_seed(training_args.seed)  # before the head (or the whole model) is initialised
    if path:  # the model's own processor: its size, mean and std are what the encoder was trained on
        processor = load_pretrained(AutoImageProcessor, path, "image processor")
        size = processor.size.get("height") or processor.size.get("shortest_edge")
        if data_args.image_size not in (None, size):
            raise UserError(f"--image_size {data_args.image_size} differs from the model's {size}; leave it unset")
        data_args.image_size = size

    if data_args.storage == "auto":  # ClassificationTransform crops decoded squares (Trainer fetches in its workers)
        data_args.storage = "decoded"
    with training_args.main_process_first(desc="decoding images"):
        data = load_images(data_args, seed=training_args.seed)
    print(data.report)
    check_labels(data.label_names, data_args)
    if data.eval is None:
        raise UserError(f"no evaluation images for --data {data_args.data or 'the embedded subset'}; fine-tuning "
                        "needs an evaluation split: give --eval_data, a test split, or --eval_fraction > 0")
    processor = processor or vit_image_processor(data.image_size, data.mean, data.std)

    # Model: the label names go into the config, so pipelines and the Hub widget show them.
    names = data.label_names
    labels = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if path:
        config = AutoConfig.from_pretrained(path, **labels)
        model, info = load_model(AutoModelForImageClassification, path, config, ft_args.from_scratch)
    else:
        config = vit_config_from_mae(mae_config(MAEArgs(vit_args.preset, vit_args.patch_size), data.image_size), **labels)
        model, info = AutoModelForImageClassification.from_config(config), {}
    print(describe_loading(info, ft_args.from_scratch or not path, head_prefixes=("classifier.",)))

    # Train with the stock Trainer; augmentation (training split only) and normalisation per fetched batch.
    mean, std = processor.image_mean, processor.image_std
    trainer = Trainer(model=model, args=training_args, processing_class=processor,
                      train_dataset=data.train.with_transform(ClassificationTransform(ImageViews(mean, std, aug_args))),
                      eval_dataset=data.eval.with_transform(ClassificationTransform(ImageViews(mean, std))),
                      compute_metrics=classification_metrics())
    metrics = train_and_finish(trainer)
    if trainer.is_world_process_zero():
        print(f"eval accuracy {metrics['eval_accuracy']:.4f}; "
              f"pipeline('image-classification', model='{training_args.output_dir}') runs it")
    return metrics


if __name__ == "__main__":
    run_cli(main)
