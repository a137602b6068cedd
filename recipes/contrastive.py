"""Pretrain an image backbone with SimCLR, MoCo or BYOL; export it as a plain transformers ResNet / ViT.

    accelerate launch recipes/contrastive.py --config recipes/configs/simclr_tiny.yaml [--flag value ...]
    (or moco_tiny.yaml, byol_tiny.yaml; recipes/simclr.py, moco.py and byol.py run this with their file)

The config's ``method:`` chooses the method (default config: simclr_tiny.yaml). With a tiny config: a
small ResNet on the embedded Fashion-MNIST subset, a few minutes on a CPU, with the kNN accuracy of the frozen backbone at every
evaluation and a linear probe at the end (when the images have labels; training never uses them).
Writes OUTPUT/model, a folder that AutoModelForImageClassification fine-tunes
(recipes/finetune_image_classification.py --model_name_or_path OUTPUT/model), and OUTPUT/report.png.
Sections: args, Accelerator, seed -> images (main process first, decoded once) -> backbone + method
(SyncBN when several GPU processes) -> fit with two views per image and the kNN monitor -> linear probe
on frozen backbone features, and the same backbone at its random initialisation as the baseline -> export.
"""

from dataclasses import asdict
from pathlib import Path

import yaml

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.heads import convert_sync_batchnorm
from hfssl.hub import HubArgs, push_if_requested
from hfssl.methods import contrastive_methods
from hfssl.methods.contrastive import CollapseGuard, SSLArgs, new_parts
from hfssl.train import TrainArgs, fit, make_accelerator
from hfssl.vision.backbones import (
    BACKBONE_FOLDER_TYPES,
    BackboneArgs,
    build_backbone,
    check_backbone_folder,
    input_size,
    load_backbone,
)
from hfssl.vision.data import ImageDataArgs, close_decode_failures, load_images, settle, subset
from hfssl.vision.export import export_backbone
from hfssl.vision.loader import as_pixels, collate_images, log_decode_failures
from hfssl.vision.pretrained import read_model_folder
from hfssl.vision.probe import KNNMonitor, MonitorArgs, as_hooks, held_out_evaluation
from hfssl.vision.transforms import AugmentArgs, training_data
from hfssl.vision.views import TwoViews, ViewArgs

CONFIGS = Path(__file__).resolve().parent / "configs"
# The defaults with --model_name_or_path and no --config: SimCLR's paper values for continuing a backbone. A MoCo or
# BYOL recipe keeps its method and that method's own knobs from its default config.
CONTINUE_CONFIG = CONFIGS / "contrastive_continue.yaml"
METHOD_KEYS = ("method", "moco_version", "temperature", "queue_size", "symmetric", "bn_splits", "momentum",
               "momentum_final", "pred_hidden_dim", "pred_lr_scale")


def method_keys(default_config: Path) -> tuple[str, ...]:
    """The keys a continuation keeps from ``default_config``: its method, and that method's knobs when it is not
    the continue config's own method."""
    ours = (yaml.safe_load(Path(default_config).read_text(encoding="utf-8")) or {}).get("method")
    theirs = (yaml.safe_load(CONTINUE_CONFIG.read_text(encoding="utf-8")) or {}).get("method")
    return ("method",) if ours == theirs else METHOD_KEYS


def main(argv=None, default_config: Path = CONFIGS / "simclr_tiny.yaml") -> dict:
    data_args, crop_args, view_args, bb_args, ssl_args, train_args, hub_args, mon_args = parse(
        ImageDataArgs, AugmentArgs, ViewArgs, BackboneArgs, SSLArgs, TrainArgs, HubArgs, MonitorArgs, args=argv,
        default_config=default_config, continue_config=CONTINUE_CONFIG, keep_from_default=method_keys(default_config))
    method = ssl_args.method
    if train_args.per_device_train_batch_size < 2:  # batch norm statistics; SimCLR / MoCo need negatives too
        raise UserError(f"--per_device_train_batch_size {train_args.per_device_train_batch_size}: {method} needs at "
                        "least 2 images per process (batch-norm statistics of one image are undefined, and a "
                        "batch of one has no negatives); set it to 2 or more")
    folder = None
    if bb_args.model_name_or_path:  # continue from a model: its processor's size unless --image_size says otherwise
        folder = read_model_folder(bb_args.model_name_or_path, BACKBONE_FOLDER_TYPES, "recipes/contrastive.py")
        data_args.image_size = data_args.image_size or folder.image_size or folder.config.get("image_size")
        check_backbone_folder(bb_args, folder, data_args.image_size)
    settle(data_args, model_stats=folder is not None and folder.mean is not None)  # what checkpoints record
    settings = run_settings(train_args, data_args, crop_args, view_args, bb_args, ssl_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    log_decode_failures(out)  # encoded files that only fail when decoded whole, counted at the end
    with accelerator.main_process_first():
        data = load_images(data_args, seed=train_args.seed, model_stats=folder and folder.mean and (folder.mean, folder.std))
    accelerator.print(data.report)
    if folder is not None:
        backbone, missing, unused = load_backbone(bb_args, folder, data.image_size)
    else:
        backbone = build_backbone(bb_args, data.image_size)  # seeded by make_accelerator: the same init for every seed
    initial_state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}  # the starting-point baseline
    model = contrastive_methods()[method](backbone, ssl_args)
    if folder is not None:
        heads = new_parts(model, backbone)
        accelerator.print(f"continuing from {folder.path}; initialised (not in the folder): "
                          f"{', '.join([*heads, *missing])}; left out of the folder: {', '.join(unused) or 'none'}")
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = convert_sync_batchnorm(model, accelerator)  # BN statistics over the global batch
    elif accelerator.num_processes > 1:  # torch's SyncBatchNorm has no CPU kernel
        accelerator.print(f"note: batch norm statistics are per process on {accelerator.device.type} "
                          "(SyncBatchNorm needs CUDA); MoCo's shuffle BN and the gathered negatives still apply")
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    accelerator.print(f"model: {method}{' ' + ssl_args.moco_version if method == 'moco' else ''} on a "
                      f"{bb_args.backbone} {bb_args.preset or folder.path} ({n_backbone / 1e6:.2f}M backbone parameters), "
                      f"images {data.image_size}px (backbone input {input_size(bb_args, data.image_size)}px)")

    labelled = data.label_names is not None and data.eval is not None and "label" in data.eval.column_names
    monitor = None
    if labelled:
        monitor = KNNMonitor(as_pixels(subset(data.train, mon_args.knn_bank_size, train_args.seed), data.image_size),
                             data.mean, data.std, len(data.label_names), mon_args.knn_k)
    else:
        accelerator.print("no labels: no kNN monitor and no linear probe (pretraining itself never uses labels)")
    guard = CollapseGuard(ssl_args.collapse_threshold)

    def on_step_end(m, step, total):
        m.step_end(step, total)  # momentum update of MoCo / BYOL targets (after the optimizer step)
        guard(m, step)

    train_data, device_crop = training_data(data, crop_args, train_args.seed, views=2)  # encoded: crops in workers
    result = fit(accelerator, model, train_args, train_data=train_data,
                 collate_fn=collate_images, transform=TwoViews(data.mean, data.std, device_crop, view_args),
                 eval_data=as_pixels(data.eval, data.image_size) if monitor else None,
                 on_step_end=on_step_end, settings=settings, **as_hooks(monitor))

    metrics = {**result.eval_metrics, "steps": result.step}
    if accelerator.is_main_process:
        close_decode_failures(data.report, metrics)
        backbone = result.model.backbone  # (the trained one: SyncBatchNorm conversion makes new modules)
        if labelled and mon_args.linear_probe:  # with the same backbone untrained (or as loaded) beside it
            start = "loaded" if folder is not None else "random_init"
            metrics.update(held_out_evaluation(backbone, data, mon_args, initial_state, start))
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method=method, base_model_type=bb_args.backbone,
            tags=[bb_args.backbone, method, "image-feature-extraction"], pipeline_tag="image-feature-extraction",
            datasets_description=f"{data.report}; images {'resized' if data.storage == 'decoded' else 'cropped from the originals'} to {data.image_size}x{data.image_size} RGB",
            hyperparameters={**asdict(ssl_args), **asdict(crop_args), **asdict(view_args), **asdict(bb_args),
                             **asdict(train_args), "image_size": data.image_size, "image_mean": data.mean,
                             "image_std": data.std},
            metrics=metrics, report=out / "report.png")
        folder = export_backbone(backbone, out / "model", image_size=data.image_size, mean=data.mean, std=data.std,
                                 card=card, overwrite=train_args.overwrite_output_dir or train_args.resume,
                                 secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained backbone to {folder} (a plain {bb_args.backbone}: AutoModel / "
              f"AutoModelForImageClassification.from_pretrained('{folder}', num_labels=...))")
        push_if_requested(folder, hub_args)
    return metrics


if __name__ == "__main__":
    run_cli(main)
