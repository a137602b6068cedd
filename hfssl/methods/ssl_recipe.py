"""The recipe body shared by recipes/simclr.py, moco.py and byol.py (they differ only in their config).

Sections, as in the other recipes: args, Accelerator, seed -> images (main process first, decoded once)
-> backbone + method (SyncBN when several processes) -> fit with two views per image and the kNN
monitor -> linear probe on frozen backbone features -> export the backbone (a plain ResNet / ViT folder).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hfssl.config import parse
from hfssl.heads import convert_sync_batchnorm
from hfssl.hub import HubArgs, ModelCardInfo, push_if_requested
from hfssl.methods.byol import BYOL
from hfssl.methods.contrastive import CollapseGuard, SSLArgs
from hfssl.methods.moco import MoCo
from hfssl.methods.simclr import SimCLR
from hfssl.train import TrainArgs, fit, make_accelerator
from hfssl.vision.backbones import BackboneArgs, build_backbone
from hfssl.vision.data import PIXELS, ImageDataArgs, collate_images, load_images
from hfssl.vision.export import export_backbone
from hfssl.vision.probe import KNNMonitor, as_hooks, evaluate_features, extract_features
from hfssl.vision.views import TwoViews, ViewArgs

METHODS = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL}


@dataclass
class EncoderArgs:
    """The transformers backbone to pretrain (its image size is the data's)."""

    backbone: str = field(default="resnet", metadata={"help": "resnet or vit."})
    preset: str = field(default="tiny", metadata={"help": "resnet: tiny, small, resnet18, resnet34, resnet50; "
                                                          "vit: test, tiny, small, base."})
    small_image_stem: bool = field(default=True, metadata={
        "help": "ResNet on images <= 64 px: upsample before the fixed 7x7/2 + max-pool stem."})
    small_image_upsample: int = field(default=4, metadata={
        "help": "Upsampling factor of small_image_stem: 4 undoes the stem's stride 4; 2 costs 4x less compute."})
    vit_pooling: str = field(default="cls", metadata={"help": "ViT features: cls token or mean of patches."})


@dataclass
class MonitorArgs:
    """Frozen-feature evaluation (needs labels; pretraining itself never uses them)."""

    knn_k: int = field(default=20, metadata={"help": "Neighbours of the kNN monitor."})
    knn_bank_size: int = field(default=10_000, metadata={"help": "Labelled training images in the kNN bank."})
    linear_probe: bool = field(default=True, metadata={"help": "Fit a linear probe on frozen features at the end."})
    probe_max_images: int = field(default=60_000, metadata={"help": "Training images used by the final probe."})


def _subset(ds, n: int, seed: int):
    return ds if len(ds) <= n else ds.shuffle(seed=seed).select(range(n))


def main(method: str, default_config: Path, argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", str(default_config), *argv]
    data_args, view_args, enc_args, ssl_args, train_args, hub_args, mon_args = parse(
        ImageDataArgs, ViewArgs, EncoderArgs, SSLArgs, TrainArgs, HubArgs, MonitorArgs, args=argv,
        defaults={"method": method})
    if ssl_args.method != method:
        raise SystemExit(f"this recipe trains {method}; use recipes/{ssl_args.method}.py for {ssl_args.method}")
    accelerator = make_accelerator(train_args)
    out = Path(train_args.output_dir)

    with accelerator.main_process_first():
        data = load_images(data_args, seed=train_args.seed)
    accelerator.print(data.report)
    bb_args = BackboneArgs(kind=enc_args.backbone, preset=enc_args.preset, image_size=data.image_size,
                           small_image_stem=enc_args.small_image_stem,
                           small_image_upsample=enc_args.small_image_upsample, vit_pooling=enc_args.vit_pooling)
    model = METHODS[method](build_backbone(bb_args), ssl_args)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = convert_sync_batchnorm(model, accelerator)  # BN statistics over the global batch
    elif accelerator.num_processes > 1:  # torch's SyncBatchNorm has no CPU kernel
        accelerator.print(f"note: batch norm statistics are per process on {accelerator.device.type} "
                          "(SyncBatchNorm needs CUDA); MoCo's shuffle BN and the gathered negatives still apply")
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    accelerator.print(f"model: {method}{' ' + ssl_args.moco_version if method == 'moco' else ''} on a "
                      f"{enc_args.backbone} {enc_args.preset} ({n_backbone / 1e6:.2f}M backbone parameters), "
                      f"images {data.image_size}px (backbone input {model.backbone.config.hfssl_upsample_to or data.image_size}px)")

    labelled = data.label_names is not None and data.eval is not None and "label" in data.eval.column_names
    monitor = None
    if labelled and train_args.eval_steps >= 0:
        monitor = KNNMonitor(_subset(data.train, mon_args.knn_bank_size, train_args.seed).select_columns([PIXELS, "label"]),
                             data.mean, data.std, len(data.label_names), mon_args.knn_k)
    elif not labelled:
        accelerator.print("no labels: no kNN monitor and no linear probe (pretraining itself never uses labels)")
    guard = CollapseGuard(ssl_args.collapse_threshold)

    def on_step_end(m, step, total):
        m.step_end(step, total)  # momentum update of MoCo / BYOL targets (after the optimizer step)
        guard(m, step)

    result = fit(accelerator, model, train_args, train_data=data.train.select_columns([PIXELS]),
                 collate_fn=collate_images, transform=TwoViews(data.mean, data.std, view_args),
                 eval_data=data.eval.select_columns([PIXELS, "label"]) if monitor else None,
                 on_step_end=on_step_end, **as_hooks(monitor))

    metrics = {**result.eval_metrics, "steps": result.step}
    if accelerator.is_main_process:
        backbone = result.model.backbone
        if labelled and mon_args.linear_probe:
            train_x, train_y = extract_features(backbone, _subset(data.train, mon_args.probe_max_images, 0),
                                                data.mean, data.std, progress=True)
            test_x, test_y = extract_features(backbone, data.eval, data.mean, data.std, progress=True)
            final = evaluate_features(train_x, train_y, test_x, test_y, len(data.label_names), mon_args.knn_k)
            metrics.update({f"test_{k}": v for k, v in final.items()})
            print(f"frozen backbone features on {len(test_y)} held-out images: kNN (k={mon_args.knn_k}, bank "
                  f"{len(train_y)}) {final['knn_accuracy']:.2%}, linear probe {final['linear_probe_accuracy']:.2%}")
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method=method, base_model_type=enc_args.backbone,
            tags=[enc_args.backbone, method, "image-feature-extraction"], pipeline_tag="image-feature-extraction",
            datasets_description=f"{data.report}; images resized to {data.image_size}x{data.image_size} RGB",
            hyperparameters={**asdict(ssl_args), **asdict(view_args), **asdict(enc_args), **asdict(train_args),
                             "image_size": data.image_size, "image_mean": data.mean, "image_std": data.std},
            metrics=metrics)
        folder = export_backbone(backbone, out / "model", image_size=data.image_size, mean=data.mean, std=data.std,
                                 card=card, overwrite=train_args.overwrite_output_dir or train_args.resume,
                                 secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained backbone to {folder} (a plain {enc_args.backbone}: AutoModel / "
              f"AutoModelForImageClassification.from_pretrained('{folder}', num_labels=...))")
        push_if_requested(folder, hub_args)
    return metrics
