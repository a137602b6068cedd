"""VAE training step, images/s: diffusers' ``AutoencoderKL`` (what ``recipes/vae.py`` builds) next to a small
hand-written conv VAE of the same widths saved with ``huggingface_hub.PyTorchModelHubMixin`` (the alternative
that needs no diffusers). Same images, loss (sum squared error + KL), AdamW, batch and thread count.

    python benchmarks/speed/vae_step.py --threads 1 [--image_size 32] [--widths 32 64 64] [--steps 8]

Prints one line per model: parameters, seconds per step, images/s (median of the timed steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


class SmallVAE(nn.Module, PyTorchModelHubMixin):
    """Conv encoder (stride-2 convs + GroupNorm + SiLU) -> diagonal Gaussian -> mirrored decoder."""

    def __init__(self, widths=(32, 64, 64), latent_channels=4):
        super().__init__()
        enc, c = [nn.Conv2d(3, widths[0], 3, padding=1)], widths[0]
        for i, w in enumerate(widths):
            enc += [nn.GroupNorm(min(32, c), c), nn.SiLU(), nn.Conv2d(c, w, 3, stride=2 if i else 1, padding=1)]
            c = w
        self.encoder = nn.Sequential(*enc, nn.GroupNorm(min(32, c), c), nn.SiLU(), nn.Conv2d(c, 2 * latent_channels, 3, padding=1))
        dec = [nn.Conv2d(latent_channels, c, 3, padding=1)]
        for i, w in enumerate(reversed(widths)):
            dec += [nn.GroupNorm(min(32, c), c), nn.SiLU()]
            dec += [nn.Upsample(scale_factor=2)] if i < len(widths) - 1 else []
            dec += [nn.Conv2d(c, w, 3, padding=1)]
            c = w
        self.decoder = nn.Sequential(*dec, nn.GroupNorm(min(32, c), c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, x):
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        return self.decoder(z), mean, logvar


def diffusers_vae(widths, latent_channels):
    from diffusers import AutoencoderKL

    n = len(widths)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(widths), layers_per_block=1, latent_channels=latent_channels,
                         norm_num_groups=32, mid_block_add_attention=False)


def step_fn(model, kind):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        if kind == "diffusers":
            post = model.encode(x).latent_dist
            mean, logvar = post.mean, post.logvar
            recon = model.decode(mean + post.std * torch.randn_like(mean)).sample
        else:
            recon, mean, logvar = model(x)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum()
        loss = (((recon - x) ** 2).sum() + kl) / len(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 64])
    p.add_argument("--latent_channels", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(a.batch, 3, a.image_size, a.image_size) * 2 - 1
    for kind in ("diffusers", "mixin"):
        model = diffusers_vae(a.widths, a.latent_channels) if kind == "diffusers" else SmallVAE(a.widths, a.latent_channels)
        step, times = step_fn(model, kind), []
        for i in range(a.steps + 2):
            t = time.perf_counter()
            step(x)
            if i >= 2:
                times.append(time.perf_counter() - t)
        s = statistics.median(times)
        n = sum(p.numel() for p in model.parameters())
        print(f"{kind:10s} widths {a.widths} {a.image_size}px batch {a.batch}: {n / 1e6:.3f}M parameters, "
              f"{s * 1000:.0f} ms/step, {a.batch / s:.0f} images/s ({a.threads} thread)")


if __name__ == "__main__":
    main()
