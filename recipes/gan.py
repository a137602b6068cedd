"""Train a DCGAN-style GAN on images; export the EMA generator and the discriminator's trunk.

    accelerate launch recipes/gan.py [--config recipes/configs/gan_tiny.yaml] [--flag value ...]

With no arguments: recipes/configs/gan_tiny.yaml, on the embedded Fashion-MNIST subset. One optimizer through the
shared loop (hfssl.methods.gan: D and G parameter groups at their own learning rates, simultaneous updates).
Every evaluation writes OUTPUT/samples/step-N.png (the EMA generator on fixed noise) and logs the Frechet distance
and precision / recall of its samples against held-out images (fixed random features, not comparable to published
FID). Writes OUTPUT/generator (hfssl.methods.gan.Generator.from_pretrained) and OUTPUT/model, the discriminator's
ResNet trunk (AutoModelForImageClassification, only the head new).
Sections: args, Accelerator, seed -> images (main process first) -> model -> fit -> export.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import run_cli
from hfssl.hub import HubArgs, push_if_requested, save_model_folder
from hfssl.methods.gan import (
    CollapseWatch,
    GANArgs,
    GANBatchTransform,
    GANEvaluation,
    GANPretrainer,
    Generator,
    folded_trunk,
)
from hfssl.train import TrainArgs, fit, make_accelerator
from hfssl.vision.data import ImageDataArgs, close_decode_failures, load_images, settle
from hfssl.vision.export import export_backbone
from hfssl.vision.loader import PIXELS, as_pixels, collate_images, log_decode_failures, pixels_from_bytes
from hfssl.vision.pictures import image_rows_grid, save_picture
from hfssl.vision.transforms import AugmentArgs, ImageViews, training_data

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "gan_tiny.yaml"
HALF = (0.5, 0.5, 0.5)  # uint8 / 255 -> [-1, 1], the generator's tanh range


@dataclass
class SampleArgs:
    num_pictures: int = field(default=64, metadata={"help": "Samples in each OUTPUT/samples grid (0: none)."})
    quality_samples: int = field(default=1000, metadata={"help": "Samples (and held-out images) for the Frechet "
                                 "distance and precision / recall at each evaluation (0: skip)."})


def main(argv=None) -> dict:
    data_args, aug_args, gan_args, train_args, hub_args, sample_args = parse(
        ImageDataArgs, AugmentArgs, GANArgs, TrainArgs, HubArgs, SampleArgs, args=argv, default_config=DEFAULT_CONFIG)
    settle(data_args)
    Generator(gan_args.latent_dim, data_args.image_size, 1, gan_args.num_upsamples)  # a size G cannot make: one line
    settings = run_settings(train_args, data_args, aug_args, gan_args)
    accelerator = make_accelerator(train_args, settings)
    out, main_process = Path(train_args.output_dir), accelerator.is_main_process

    log_decode_failures(out)
    with accelerator.main_process_first():
        data = load_images(data_args, seed=train_args.seed)
    accelerator.print(data.report)
    model = GANPretrainer(gan_args, data.image_size, train_args.learning_rate)
    train_data, device_crop = training_data(data, aug_args, train_args.seed)
    views, plain = ImageViews(HALF, HALF, device_crop), ImageViews(HALF, HALF)
    g = torch.Generator().manual_seed(train_args.seed)  # fixed noise: every grid and figure is comparable
    grid_z, n = torch.randn(sample_args.num_pictures, gan_args.latent_dim, generator=g), 0
    eval_set = as_pixels(data.eval, data.image_size) if data.eval is not None else None
    if eval_set is not None:
        n = min(sample_args.quality_samples, len(eval_set))
    monitor = GANEvaluation(plain(pixels_from_bytes(eval_set[:n][PIXELS])) if n else torch.zeros(0),
                            torch.randn(n, gan_args.latent_dim, generator=g), plain)
    count = {k: sum(p.numel() for p in getattr(model, k).parameters()) / 1e6 for k in ("generator", "discriminator")}
    accelerator.print(f"model: generator {count['generator']:.2f}M, discriminator (ResNet {gan_args.discriminator_preset}"
                      f"{', spectral norm' if gan_args.spectral_norm else ''}) {count['discriminator']:.2f}M parameters; "
                      f"{gan_args.gan_loss} loss, r1_gamma {gan_args.r1_gamma}, lr G {train_args.learning_rate:g} / "
                      f"D {gan_args.discriminator_learning_rate:g}")
    watch = CollapseWatch(gan_args.collapse_window, log=accelerator.print)

    def on_step_end(m, step, total):
        m.step_end(step)  # EMA of the generator, after the optimizer step
        watch(m.last_accuracy, step)

    def samples(m, step, metrics):
        if main_process and len(grid_z):
            images = m.sample(grid_z.to(next(m.parameters()).device)).cpu()
            rows = [images[i: i + 8] for i in range(0, len(images), 8)]
            save_picture(accelerator, image_rows_grid(rows, min_cell=32), out / "samples", step, "samples")

    result = fit(accelerator, model, train_args, train_data=train_data, collate_fn=collate_images,
                 transform=GANBatchTransform(views, gan_args.latent_dim), eval_data=eval_set,
                 eval_step=monitor.eval_step, eval_summary=monitor.summary, before_evaluate=monitor.before_evaluate,
                 on_evaluate=samples, on_step_end=on_step_end, settings=settings)

    metrics = {**result.eval_metrics, "steps": result.step}
    if main_process:
        close_decode_failures(data.report, metrics)
        gan, name = result.model, hub_args.hub_model_id or out.name
        overwrite, secrets = train_args.overwrite_output_dir or train_args.resume, [hub_args.hub_token] if hub_args.hub_token else ()
        common = dict(datasets_description=f"{data.report}; images resized to {data.image_size}x{data.image_size} RGB "
                      "in [-1, 1]", hyperparameters={**asdict(gan_args), **asdict(aug_args), **asdict(train_args),
                      "image_size": data.image_size}, metrics=metrics, report=out / "report.png")
        card = ModelCardInfo(model_name=f"{name}-generator", method="gan", base_model_type="dcgan-generator",
                             tags=["gan", "dcgan"], library_name="hfssl", usage="import torch\nfrom hfssl.methods.gan import Generator\n\n"
                             f'g = Generator.from_pretrained("{out / "generator"}")\n'
                             "images = g(torch.randn(16, g.latent_dim))  # (16, 3, S, S) in [-1, 1]", **common)
        folder = save_model_folder(gan.generator_ema.eval(), out / "generator", card=card, overwrite=overwrite, secrets=secrets)
        print(f"saved the EMA generator to {folder} (hfssl.methods.gan.Generator.from_pretrained('{folder}'))")
        card = ModelCardInfo(model_name=name, method="gan", base_model_type="resnet", pipeline_tag="image-feature-extraction",
                             tags=["resnet", "gan-discriminator", "image-feature-extraction"], **common)
        folder = export_backbone(folded_trunk(gan), out / "model", image_size=data.image_size, mean=HALF, std=HALF,
                                 card=card, overwrite=overwrite, secrets=secrets)
        print(f"saved the discriminator's trunk to {folder} (a plain resnet: "
              f"AutoModelForImageClassification.from_pretrained('{folder}', num_labels=...))")
        push_if_requested(folder, hub_args)
    return metrics


if __name__ == "__main__":
    run_cli(main)
