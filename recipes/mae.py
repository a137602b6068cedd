"""Pretrain a ViT as a masked autoencoder (MAE) on images, export it as a plain ViT.

    accelerate launch recipes/mae.py [--config recipes/configs/mae_tiny.yaml] [--flag value ...]

With no arguments: recipes/configs/mae_tiny.yaml, a tiny ViT on the embedded Fashion-MNIST subset, a few
minutes on a CPU. Writes OUTPUT/reconstructions/step-N.png at every evaluation and OUTPUT/model, a ViT
folder that AutoModelForImageClassification fine-tunes (recipes/finetune_image_classification.py).
Sections: args, Accelerator, seed -> images (main process first, decoded once) -> model -> fit -> export.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import run_cli
from hfssl.hub import HubArgs, push_if_requested
from hfssl.methods.mae import (
    MAE_FOLDER_TYPES,
    MAEArgs,
    MAEBatchTransform,
    MAEPretrainer,
    export_vit,
    folder_mae_config,
    mae_config,
    mae_eval_step,
    mae_summary,
    with_fixed_noise,
)
from hfssl.train import TrainArgs, fit, make_accelerator
from hfssl.vision.data import ImageDataArgs, close_decode_failures, load_images, settle
from hfssl.vision.loader import (
    PIXELS,
    as_pixels,
    collate_images,
    log_decode_failures,
    pixels_from_bytes,
)
from hfssl.vision.pictures import ReconstructionPictures
from hfssl.vision.pretrained import read_model_folder
from hfssl.vision.transforms import AugmentArgs, ImageViews, training_data

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "mae_tiny.yaml"


@dataclass
class PictureArgs:
    num_pictures: int = field(default=8, metadata={"help": "Evaluation images in each reconstruction grid (0: none)."})


def main(argv=None):
    data_args, aug_args, mae_args, train_args, hub_args, pic_args = parse(
        ImageDataArgs, AugmentArgs, MAEArgs, TrainArgs, HubArgs, PictureArgs, args=argv, default_config=DEFAULT_CONFIG,
        continue_config=DEFAULT_CONFIG.with_name("mae_continue.yaml"))
    folder = config = None
    if mae_args.model_name_or_path:  # continue from a model: its config and processor, read before any data work
        folder = read_model_folder(mae_args.model_name_or_path, MAE_FOLDER_TYPES, "recipes/mae.py")
        config = folder_mae_config(mae_args, folder, data_args.image_size)
        data_args.image_size = config.image_size
    settle(data_args, model_stats=folder is not None and folder.mean is not None)  # what checkpoints record
    settings = run_settings(train_args, data_args, aug_args, mae_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)
    if mae_args.base_learning_rate > 0:  # MAE's linear scaling rule, on the batch of all processes
        total = train_args.per_device_train_batch_size * train_args.gradient_accumulation_steps
        train_args.learning_rate = mae_args.base_learning_rate * total * accelerator.num_processes / 256
    accelerator.print(f"learning rate {train_args.learning_rate:.3g}")

    # Images: decoded once to fixed-size uint8 (cached by datasets); augmentation happens per step on the
    # device, and the evaluation set gets its masking noise drawn once, so every evaluation is comparable.
    log_decode_failures(out)  # encoded files that only fail when decoded whole, counted at the end
    with accelerator.main_process_first():
        data = load_images(data_args, seed=train_args.seed, model_stats=folder and folder.mean and (folder.mean, folder.std))
    accelerator.print(data.report)
    if folder is not None:
        model, new = MAEPretrainer.from_folder(folder.path, config)
        accelerator.print(f"continuing from {folder.path}; initialised (not in the folder): {', '.join(new) or 'none'}")
    else:
        model = MAEPretrainer(mae_config(mae_args, data.image_size))
    train_data, device_crop = training_data(data, aug_args, train_args.seed)  # encoded storage: cropped in workers
    views, plain = ImageViews(data.mean, data.std, device_crop), ImageViews(data.mean, data.std)
    eval_set = pictures = None
    if data.eval is not None:
        eval_set = as_pixels(with_fixed_noise(data.eval, model.num_patches, train_args.seed), data.image_size, ("noise",))
        if pic_args.num_pictures > 0:
            rows = eval_set[: pic_args.num_pictures]
            pictures = ReconstructionPictures(accelerator, pixels_from_bytes(rows[PIXELS]),
                                              torch.tensor(rows["noise"]), plain, out)
    patch = model.config.patch_size
    accelerator.print(f"model: MAE {mae_args.preset or folder.path}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
                      f"parameters, {model.num_patches} patches of {patch}x{patch}, "
                      f"{mae_args.mask_ratio:.0%} dropped; pixel mean {data.mean}, std {data.std}")

    result = fit(accelerator, model, train_args, train_data=train_data,
                 collate_fn=collate_images, transform=MAEBatchTransform(views, model.num_patches),
                 eval_data=eval_set, eval_step=mae_eval_step(plain), eval_summary=mae_summary,
                 on_evaluate=pictures, settings=settings)

    metrics = {**result.eval_metrics, "steps": result.step}
    if accelerator.is_main_process:
        close_decode_failures(data.report, metrics)
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method="mae", base_model_type="vit",
            tags=["vit", "mae", "image-feature-extraction"], pipeline_tag="image-feature-extraction",
            datasets_description=f"{data.report}; images {'resized' if data.storage == 'decoded' else 'cropped from the originals'} to {data.image_size}x{data.image_size} RGB",
            hyperparameters={**asdict(mae_args), **asdict(aug_args), **asdict(train_args),
                             "image_size": data.image_size, "image_mean": data.mean, "image_std": data.std},
            metrics=metrics, report=out / "report.png")
        folder = export_vit(result.model, out / "model", mean=data.mean, std=data.std, card=card,
                            overwrite=train_args.overwrite_output_dir or train_args.resume,
                            secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained encoder to {folder} (a plain ViT: AutoModel / "
              f"AutoModelForImageClassification.from_pretrained('{folder}', num_labels=...))")
        if pictures is not None:
            print(f"reconstruction pictures in {pictures.folder}")
        push_if_requested(folder, hub_args)


if __name__ == "__main__":
    run_cli(main)
