"""Variational autoencoder on images (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114), as a diffusers
``AutoencoderKL``, so the exported folder loads with ``AutoencoderKL.from_pretrained`` unchanged (and serves as the
VAE of diffusers' latent pipelines).

Pixels enter in [-1, 1] (diffusers' convention). The encoder gives a diagonal Gaussian q(z|x) over a
``(latent_channels, S / 2^(levels-1), S / 2^(levels-1))`` latent; z = mean + std * noise, the noise drawn by
:class:`VAEBatchTransform` from the loop's per-step generator (exact resume). The decoder's output is read by the
reconstruction likelihood ``recon_loss`` (pixel intensities t in [0, 1], D = 3 S S values per image):

- ``bce``: Bernoulli, the output are logits of t: NLL = sum BCE(logits, t) (the classic binarised-MNIST VAE; for
  grey levels it is not a normalised density).
- ``mse``: Gaussian N(mu, s^2) with mu = (output + 1) / 2 and fixed ``decoder_scale`` s: NLL = sum (t - mu)^2 / (2 s^2)
  + D log(s sqrt(2 pi)).
- ``l1``: Laplace(mu, s): NLL = sum |t - mu| / s + D log(2 s).

Loss per step: mean over images of (NLL + w KL) / D, where KL = KL(q(z|x) || N(0, I)) in nats and w the KL weight,
``beta`` x a linear warm-up from 0 (Bowman et al. 2016) over ``kl_warmup`` (a fraction of the run below 1, else
steps). Held-out: the negative ELBO in nats per image (NLL + KL with w = 1, one z per image from the evaluation
generator), bits per dimension = -ELBO / (D ln 2), and the reconstruction error (mean squared error per value in
[0, 1] from the posterior mean). With ``mse`` / ``l1`` these are continuous densities: bits per dim can go below 0
and are not comparable with published discretised figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn
from transformers.utils import ModelOutput

from hfssl.errors import UserError

RECON_LOSSES = ("bce", "mse", "l1")
PIXEL_SPEC = "hfssl_vae.json"  # how to read the decoder's output, written beside the AutoencoderKL folder


@dataclass
class VAEArgs:
    """The VAE's shape and objective."""

    block_out_channels: str = field(default="32,32,64", metadata={"help": "Widths of the encoder / decoder levels "
                                    "(comma-separated, each a multiple of norm_num_groups); n levels halve the "
                                    "image n - 1 times."})
    layers_per_block: int = field(default=1, metadata={"help": "ResNet blocks per level."})
    latent_channels: int = field(default=4, metadata={"help": "Channels of the latent."})
    norm_num_groups: int = field(default=32, metadata={"help": "GroupNorm groups."})
    mid_block_attention: bool = field(default=False, metadata={"help": "Self-attention in the middle block."})
    recon_loss: str = field(default="bce", metadata={"help": "Reconstruction likelihood: bce, mse or l1."})
    decoder_scale: float = field(default=0.1, metadata={"help": "mse / l1: the fixed std / scale of the pixel "
                                 "likelihood, in [0, 1] intensity units."})
    beta: float = field(default=1.0, metadata={"help": "Weight of the KL term after warm-up (beta-VAE)."})
    kl_warmup: float = field(default=0.25, metadata={"help": "KL warm-up from 0 to beta: a fraction of the run if < 1, "
                             "else optimizer steps (0: none)."})

    def __post_init__(self):
        widths = self.widths
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"--recon_loss must be one of {', '.join(RECON_LOSSES)}, not {self.recon_loss!r}")
        if any(w < 1 or w % self.norm_num_groups for w in widths):
            raise ValueError(f"--block_out_channels {self.block_out_channels}: each width must be a positive multiple "
                             f"of --norm_num_groups {self.norm_num_groups}")
        for name in ("layers_per_block", "latent_channels", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("decoder_scale", "beta", "kl_warmup"):
            if not getattr(self, name) >= 0 or (name == "decoder_scale" and self.decoder_scale == 0):
                raise ValueError(f"--{name} must be {'> 0' if name == 'decoder_scale' else '>= 0'}, got {getattr(self, name)}")

    @property
    def widths(self) -> tuple[int, ...]:
        try:
            return tuple(int(w) for w in str(self.block_out_channels).split(","))
        except ValueError:
            raise ValueError(f"--block_out_channels {self.block_out_channels!r} must be comma-separated integers, "
                             "e.g. 32,64,64") from None


def check_image_size(image_size: int, downsampling: int, what: str) -> None:
    if image_size % downsampling:
        raise UserError(f"--image_size {image_size} is not a multiple of {downsampling}, the {what}: use a multiple "
                        f"of {downsampling} (e.g. {max(downsampling, round(image_size / downsampling) * downsampling)})")


def build_autoencoder(args: VAEArgs, image_size: int) -> AutoencoderKL:
    """A new diffusers ``AutoencoderKL`` for RGB images of side ``image_size`` (must divide by its downsampling)."""
    n = len(args.widths)
    check_image_size(image_size, 2 ** (n - 1), f"VAE's downsampling ({n} levels of --block_out_channels)")
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=args.widths,
                         layers_per_block=args.layers_per_block, latent_channels=args.latent_channels,
                         norm_num_groups=args.norm_num_groups, sample_size=image_size,
                         mid_block_add_attention=args.mid_block_attention)


def kl_diag_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per image ``(B,)``: 0.5 sum (mean^2 + var - 1 - logvar)."""
    return 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).flatten(1).sum(1)


def reconstruction_nll(output: torch.Tensor, pixels: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """Negative log-likelihood in nats per image ``(B,)`` of ``pixels`` ``(B, 3, S, S)`` in [-1, 1] under the
    decoder ``output`` (see the module docstring)."""
    t, out = (pixels.float() + 1) / 2, output.float()  # intensities in [0, 1]
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(out, t, reduction="none")
    elif kind == "mse":
        per = (t - (out + 1) / 2) ** 2 / (2 * scale**2) + math.log(scale * math.sqrt(2 * math.pi))
    else:
        per = (t - (out + 1) / 2).abs() / scale + math.log(2 * scale)
    return per.flatten(1).sum(1)


def decoded_pixels(output: torch.Tensor, kind: str) -> torch.Tensor:
    """The decoder's output as an image in [-1, 1]: ``2 sigmoid - 1`` of logits (bce), else clamped."""
    return 2 * torch.sigmoid(output) - 1 if kind == "bce" else output.clamp(-1, 1)


def kl_weight(step: int, total: float, beta: float, warmup: float) -> float:
    """``beta`` x min(1, step / warmup steps); ``warmup`` < 1 is a fraction of ``total`` steps, else a step count."""
    steps = warmup * total if warmup < 1 else warmup
    return beta if steps <= 0 else beta * min(1.0, step / steps)


@dataclass
class VAEOutput(ModelOutput):
    loss: torch.Tensor | None = None
    nll: torch.Tensor | None = None  # nats per image
    kl: torch.Tensor | None = None  # nats per image
    kl_weight: torch.Tensor | None = None


class VAEPretrainer(nn.Module):
    """``AutoencoderKL`` (as ``self.vae``) with the VAE objective; forward(pixel_values, noise) -> ``.loss``."""

    def __init__(self, args: VAEArgs, image_size: int):
        super().__init__()
        self.vae = build_autoencoder(args, image_size)
        self.args, self.image_size = args, image_size
        # the KL weight of the next step, set after each optimizer step (a buffer: checkpoints keep it)
        self.register_buffer("kl_weight", torch.tensor(kl_weight(0, 1, args.beta, args.kl_warmup)))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // 2 ** (len(self.args.widths) - 1)
        return (self.args.latent_channels, side, side)

    def encode(self, pixel_values: torch.Tensor):
        """q(z|x): ``(mean, logvar)``, each ``(B, C, h, w)`` (logvar clamped to [-30, 20] by diffusers)."""
        posterior = self.vae.encode(pixel_values).latent_dist
        return posterior.mean, posterior.logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output ``(B, 3, S, S)`` (logits for bce, [-1, 1] pixels otherwise)."""
        return self.vae.decode(z).sample

    def losses(self, pixel_values, noise):
        """NLL and KL per image ``(B,)``, one z = mean + std * noise each."""
        mean, logvar = self.encode(pixel_values)
        out = self.decode(mean + (0.5 * logvar).exp() * noise)
        return reconstruction_nll(out, pixel_values, self.args.recon_loss, self.args.decoder_scale), \
            kl_diag_gaussian(mean, logvar)

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor) -> VAEOutput:
        nll, kl = self.losses(pixel_values, noise)
        dims = pixel_values[0].numel()
        loss = (nll + self.kl_weight * kl).mean() / dims
        return VAEOutput(loss=loss, nll=nll.mean().detach(), kl=kl.mean().detach(), kl_weight=self.kl_weight.clone())

    def step_end(self, step: int, total: float) -> None:
        self.kl_weight.fill_(kl_weight(step, total, self.args.beta, self.args.kl_warmup))

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] decoded from the posterior means."""
        return decoded_pixels(self.decode(self.encode(pixel_values)[0]), self.args.recon_loss)

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] decoded from latents ``z`` (draws from the prior N(0, I) for samples)."""
        return decoded_pixels(self.decode(z), self.args.recon_loss)


class VAEBatchTransform:
    """The loop's ``transform``: uint8 -> [-1, 1] pixels (augmented by ``views``), then the latent noise."""

    def __init__(self, views, latent_shape: tuple[int, int, int]):
        self.views, self.latent_shape = views, latent_shape

    def __call__(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = self.views(batch["pixel_values"], generator)
        noise = torch.randn(len(pixels), *self.latent_shape, generator=generator, device=generator.device)
        return {"pixel_values": pixels, "noise": noise.to(pixels.device)}


def vae_eval_step(views):
    """Per-image sums: NLL and KL with one z from the evaluation generator, squared error of the posterior-mean
    reconstruction, and the value count."""

    def step(model: VAEPretrainer, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = views(batch["pixel_values"])
        noise = torch.randn(len(pixels), *model.latent_shape, generator=generator, device=generator.device)
        nll, kl = model.losses(pixels, noise.to(pixels.device))
        sq = ((model.reconstruct(pixels) - pixels) / 2).pow(2).flatten(1).sum(1)  # in [0, 1] units
        dims = torch.full_like(nll, pixels[0].numel(), dtype=torch.float64)
        return {"nll": nll.double(), "kl": kl.double(), "sq_err": sq.double(), "dims": dims,
                "examples": torch.ones_like(dims)}

    return step


def vae_summary(totals: dict[str, float]) -> dict[str, float]:
    """Per image: NLL, KL and -ELBO in nats; bits per dimension; reconstruction MSE per value."""
    n, dims = max(totals["examples"], 1.0), max(totals["dims"], 1.0)
    neg_elbo = totals["nll"] + totals["kl"]
    return {"nll_nats": totals["nll"] / n, "kl_nats": totals["kl"] / n, "neg_elbo_nats": neg_elbo / n,
            "bits_per_dim": neg_elbo / (dims * math.log(2)), "recon_mse": totals["sq_err"] / dims,
            "examples": totals["examples"]}


@dataclass
class PixelSpec:
    """``hfssl_vae.json`` beside the exported ``AutoencoderKL``: how to feed it and read its decoder."""

    recon_loss: str
    image_size: int
    latent_shape: tuple[int, int, int]

    def save_pretrained(self, folder) -> None:
        text = {"input": "RGB pixels scaled to [-1, 1]", "image_size": self.image_size,
                "latent_shape": list(self.latent_shape), "prior": "N(0, I)", "recon_loss": self.recon_loss,
                "decoder_output": "logits of intensities in [0, 1]: image = 2 * sigmoid(sample) - 1"
                if self.recon_loss == "bce" else "pixels in [-1, 1] (clamp)"}
        (Path(folder) / PIXEL_SPEC).write_text(json.dumps(text, indent=2) + "\n", encoding="utf-8")
