"""Train a convolutional VAE on images; export it as a diffusers AutoencoderKL folder.

    accelerate launch recipes/vae.py [--config recipes/configs/vae_tiny.yaml] [--flag value ...]

With no arguments: recipes/configs/vae_tiny.yaml, a small AutoencoderKL on the embedded Fashion-MNIST subset.
Every evaluation logs the held-out -ELBO (nats per image, bits per dimension), KL and reconstruction error and
writes OUTPUT/pictures/step-N.png (originals, reconstructions, samples from the prior). At the end: Frechet
distance and precision / recall of prior samples against held-out images (hfssl.vision.frechet's fixed random
features; not comparable to published FID). OUTPUT/model loads with diffusers' AutoencoderKL.from_pretrained.
Sections: args, Accelerator, seed -> images (main process first) -> model -> fit -> sample quality -> export.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import run_cli
from hfssl.hub import HubArgs, push_if_requested, save_model_folder
from hfssl.methods.vae import PixelSpec, VAEArgs, VAEBatchTransform, VAEPretrainer, vae_eval_step, vae_summary
from hfssl.train import TrainArgs, fit, make_accelerator
from hfssl.vision.data import ImageDataArgs, close_decode_failures, load_images, settle
from hfssl.vision.frechet import sample_quality
from hfssl.vision.loader import PIXELS, as_pixels, collate_images, log_decode_failures, pixels_from_bytes
from hfssl.vision.pictures import image_rows_grid, save_picture
from hfssl.vision.transforms import AugmentArgs, ImageViews, training_data

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "vae_tiny.yaml"
HALF = (0.5, 0.5, 0.5)  # uint8 / 255 -> [-1, 1]


@dataclass
class SampleArgs:
    num_pictures: int = field(default=8, metadata={"help": "Images per row of each evaluation picture (0: none)."})
    quality_samples: int = field(default=1000, metadata={"help": "Samples (and held-out images) for the Frechet "
                                 "distance and precision / recall at the end (0: skip)."})


def main(argv=None) -> dict:
    data_args, aug_args, vae_args, train_args, hub_args, sample_args = parse(
        ImageDataArgs, AugmentArgs, VAEArgs, TrainArgs, HubArgs, SampleArgs, args=argv, default_config=DEFAULT_CONFIG)
    settle(data_args)
    VAEPretrainer(vae_args, data_args.image_size)  # a size the model cannot take fails before any data work
    settings = run_settings(train_args, data_args, aug_args, vae_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    log_decode_failures(out)
    with accelerator.main_process_first():
        data = load_images(data_args, seed=train_args.seed)
    accelerator.print(data.report)
    model = VAEPretrainer(vae_args, data.image_size)
    train_data, device_crop = training_data(data, aug_args, train_args.seed)
    views, plain = ImageViews(HALF, HALF, device_crop), ImageViews(HALF, HALF)
    eval_set = as_pixels(data.eval, data.image_size) if data.eval is not None else None
    accelerator.print(f"model: AutoencoderKL {vae_args.block_out_channels}, latent {model.latent_shape}, "
                      f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {vae_args.recon_loss} "
                      f"likelihood, beta {vae_args.beta}")
    k = sample_args.num_pictures
    fixed_z = torch.randn(k, *model.latent_shape, generator=torch.Generator().manual_seed(train_args.seed))
    shown = plain(pixels_from_bytes(eval_set[:k][PIXELS])) if eval_set is not None and k > 0 else None

    def pictures(m, step, metrics):
        if accelerator.is_main_process and shown is not None:
            device = next(m.parameters()).device
            m.eval()
            rows = [shown, m.reconstruct(shown.to(device)).cpu(), m.sample(fixed_z.to(device)).cpu()]
            m.train()
            save_picture(accelerator, image_rows_grid(rows), out / "pictures", step, "vae")

    result = fit(accelerator, model, train_args, train_data=train_data, collate_fn=collate_images,
                 transform=VAEBatchTransform(views, model.latent_shape), eval_data=eval_set,
                 eval_step=vae_eval_step(plain), eval_summary=vae_summary, on_evaluate=pictures,
                 on_step_end=lambda m, step, total: m.step_end(step, total), settings=settings)

    metrics = {**result.eval_metrics, "steps": result.step}
    if accelerator.is_main_process:
        close_decode_failures(data.report, metrics)
        vae = result.model.eval()
        n = min(sample_args.quality_samples, len(eval_set) if eval_set is not None else 0)
        if n >= 4:  # prior samples against held-out images, in the fixed random feature space
            real = plain(pixels_from_bytes(eval_set[:n][PIXELS]))
            z = torch.randn(n, *vae.latent_shape, generator=torch.Generator().manual_seed(train_args.seed + 1))
            fake = torch.cat([vae.sample(z[i: i + 256]) for i in range(0, n, 256)])
            quality = sample_quality(real, fake)
            metrics.update(quality)
            print("sample quality (random-feature Frechet, not comparable to FID): "
                  + ", ".join(f"{k} {v:.4g}" for k, v in quality.items()))
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method="vae", base_model_type="autoencoder_kl",
            tags=["vae", "autoencoder_kl", "diffusers"], datasets_description=f"{data.report}; images resized to "
            f"{data.image_size}x{data.image_size} RGB in [-1, 1]",
            hyperparameters={**asdict(vae_args), **asdict(aug_args), **asdict(train_args), "image_size": data.image_size},
            metrics=metrics, report=out / "report.png", library_name="diffusers",
            notes=f"A diffusers `AutoencoderKL`; how to read its decoder output is in `hfssl_vae.json` ({vae_args.recon_loss}).",
            usage=f'from diffusers import AutoencoderKL\n\nvae = AutoencoderKL.from_pretrained("{hub_args.hub_model_id or out.name}")\n'
                  "# images in [-1, 1]: z = vae.encode(x).latent_dist.sample(); y = vae.decode(z).sample")
        folder = save_model_folder(vae.vae, out / "model", processor=PixelSpec(vae_args.recon_loss, data.image_size,
                                   vae.latent_shape), card=card, overwrite=train_args.overwrite_output_dir or train_args.resume,
                                   secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the VAE to {folder} (diffusers: AutoencoderKL.from_pretrained('{folder}'))")
        push_if_requested(folder, hub_args)
    return metrics


if __name__ == "__main__":
    run_cli(main)
