"""A DCGAN-style GAN (Radford et al. 2016, https://arxiv.org/abs/1511.06434) with the usual stabilisers, trained by
the shared loop with ONE optimizer.

- Generator: z ``(B, latent_dim)`` -> linear to ``(C0, S / 2^n, S / 2^n)`` -> n x [ConvTranspose 4x4 stride 2, BN,
  ReLU] -> 3x3 conv -> tanh, images in [-1, 1]. A ``huggingface_hub.PyTorchModelHubMixin`` class: its folder (config +
  safetensors) loads with ``Generator.from_pretrained(folder)``, no remote code.
- Discriminator: a transformers ``ResNetModel`` trunk (:func:`hfssl.vision.backbones.build_backbone`; its pooled
  features by :func:`hfssl.vision.backbones.features`) + a linear score. Spectral norm (Miyato et al. 2018) on every
  conv / linear weight, or not; at export the normalised weights are folded into plain ones so the trunk is an
  ordinary ResNet folder.
- Losses (``gan_loss``): ``non_saturating`` (Goodfellow et al. 2014: D softplus(-D(x)) + softplus(D(G(z))), G
  softplus(-D(G(z)))) or ``hinge`` (Lim & Ye 2017; Miyato et al. 2018: D relu(1 - D(x)) + relu(1 + D(G(z))),
  G -D(G(z))). R1 (Mescheder et al. 2018): gamma / 2 E ||grad_x D(x)||^2 on real images.
- EMA of the generator (Karras et al. 2018; Yazici et al. 2019), the weights that are sampled and exported, with
  TensorFlow's warm-up min(decay, (1 + step) / (10 + step)).
- TTUR (Heusel et al. 2017): D and G learning rates differ through ``lr_scales`` (:func:`hfssl.optim.param_groups`).

One optimizer, simultaneous updates (DESIGN.md, "GANs through the one loop"): ``forward`` returns ``loss = d_loss +
r1 + g_loss`` where d_loss sees the fakes DETACHED (no gradient reaches G) and g_loss sees the discriminator with
its parameters DETACHED (``torch.func.functional_call``: no gradient reaches D). So one backward gives D exactly
the gradient of its own loss and G exactly the gradient of its own, both against the same D, and one AdamW step
(D's groups at D's learning rate) is a D update and a G update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize
from transformers.utils import ModelOutput

from hfssl.ema import ema_update, make_target
from hfssl.errors import UserError
from hfssl.vision.backbones import RESNET_PRESETS, BackboneArgs, build_backbone, feature_dim, features

GAN_LOSSES = ("non_saturating", "hinge")


@dataclass
class GANArgs:
    """The generator, the discriminator and the GAN objective."""

    latent_dim: int = field(default=64, metadata={"help": "Size of the generator's noise vector z."})
    generator_width: int = field(default=32, metadata={"help": "Channels of the generator's last level (doubled per "
                                 "level towards the input)."})
    num_upsamples: int = field(default=3, metadata={"help": "Generator doublings: --image_size must be a multiple of "
                               "2^num_upsamples."})
    discriminator_preset: str = field(default="tiny", metadata={"help": "ResNet preset of the discriminator's trunk: "
                                      f"{', '.join(RESNET_PRESETS)}."})
    discriminator_upsample: int = field(default=2, metadata={"help": "Upsampling of images before the ResNet stem "
                                        "(small_image_upsample of the contrastive recipes)."})
    gan_loss: str = field(default="non_saturating", metadata={"help": "non_saturating or hinge."})
    spectral_norm: bool = field(default=True, metadata={"help": "Spectral norm on the discriminator's weights."})
    r1_gamma: float = field(default=0.0, metadata={"help": "R1 penalty weight on real images (0: off)."})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA of the generator (0: the EMA copies the generator)."})
    discriminator_learning_rate: float = field(default=4e-4, metadata={"help": "D's peak learning rate (TTUR); "
                                               "--learning_rate is the generator's."})
    collapse_window: int = field(default=100, metadata={"help": "Warn when D's batch accuracy stays at 0 or 1 for "
                                 "this many steps in a row (0: never)."})

    def __post_init__(self):
        if self.gan_loss not in GAN_LOSSES:
            raise ValueError(f"--gan_loss must be one of {', '.join(GAN_LOSSES)}, not {self.gan_loss!r}")
        if self.discriminator_preset not in RESNET_PRESETS:
            raise ValueError(f"--discriminator_preset must be one of {', '.join(RESNET_PRESETS)}, "
                             f"not {self.discriminator_preset!r}")
        for name in ("latent_dim", "generator_width", "num_upsamples", "discriminator_upsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("r1_gamma", "discriminator_learning_rate", "collapse_window"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")


class Generator(nn.Module, PyTorchModelHubMixin, library_name="hfssl", tags=["gan", "dcgan", "image-generation"]):
    """DCGAN generator: ``(B, latent_dim)`` noise -> ``(B, channels, image_size, image_size)`` images in [-1, 1]."""

    def __init__(self, latent_dim: int = 64, image_size: int = 32, width: int = 32, num_upsamples: int = 3,
                 channels: int = 3):
        super().__init__()
        step = 2**num_upsamples
        if image_size % step:
            raise UserError(f"--image_size {image_size} is not a multiple of {step}, the generator's upsampling "
                            f"(--num_upsamples {num_upsamples} doublings): use a multiple of {step} (e.g. "
                            f"{max(step, round(image_size / step) * step)}) or change --num_upsamples")
        self.latent_dim, self.start = latent_dim, image_size // step
        widths = [width * 2 ** max(num_upsamples - 1 - i, 0) for i in range(num_upsamples + 1)]
        self.project = nn.Linear(latent_dim, widths[0] * self.start**2, bias=False)
        self.project_norm = nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(*[nn.Sequential(
            nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[i + 1]), nn.ReLU()) for i in range(num_upsamples)])
        self.to_pixels = nn.Conv2d(widths[-1], channels, 3, padding=1)
        for m in self.modules():  # DCGAN's N(0, 0.02) init
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), -1, self.start, self.start)  # (B, C0, s, s)
        x = self.blocks(F.relu(self.project_norm(x)))  # (B, width, S, S)
        return torch.tanh(self.to_pixels(x))


class Discriminator(nn.Module):
    """A transformers ``ResNetModel`` trunk + a linear score ``(B,)``, spectrally normalised if asked."""

    def __init__(self, args: GANArgs, image_size: int):
        super().__init__()
        self.trunk = build_backbone(BackboneArgs(backbone="resnet", preset=args.discriminator_preset,
                                                 small_image_upsample=args.discriminator_upsample), image_size)
        self.head = nn.Linear(feature_dim(self.trunk), 1)
        if args.spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(m)
        self.train()

    def train(self, mode: bool = True):
        """BatchNorm stays in eval mode with its initial statistics (mean 0, variance 1): a per-channel affine map.
        Batch statistics would let D tell a batch of fakes from a batch of reals by the batch alone, and make each
        example's score (and R1's per-example gradient) depend on the others; SN-GAN's discriminator has no
        normalisation but spectral norm either."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(features(self.trunk, images)).squeeze(-1)  # (B,)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """D's loss from its scores on real and generated images."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # -log sigmoid(real) - log(1 - sigmoid(fake))


def generator_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """G's loss from D's scores on its images: -D(G(z)) (hinge) or the non-saturating -log sigmoid(D(G(z)))."""
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


def r1_penalty(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over the batch (create_graph: D's update differentiates through it)."""
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def ema_momentum(step: int, decay: float) -> float:
    """TensorFlow's ExponentialMovingAverage with num_updates: min(decay, (1 + step) / (10 + step))."""
    return min(decay, (1 + step) / (10 + step))


@dataclass
class GANOutput(ModelOutput):
    loss: torch.Tensor | None = None
    d_loss: torch.Tensor | None = None
    g_loss: torch.Tensor | None = None
    r1: torch.Tensor | None = None
    d_accuracy: torch.Tensor | None = None  # mean of (real scored > 0) and (fake scored < 0)


class GANPretrainer(nn.Module):
    """Generator, its EMA and the discriminator; ``forward(pixel_values, z)`` -> ``.loss`` (see the module doc)."""

    def __init__(self, args: GANArgs, image_size: int, learning_rate: float):
        super().__init__()
        self.args = args
        self.generator = Generator(args.latent_dim, image_size, args.generator_width, args.num_upsamples)
        self.generator_ema = make_target(self.generator)  # no grad: the optimizer leaves it out
        self.discriminator = Discriminator(args, image_size)
        # TTUR: hfssl.optim.param_groups gives D's parameters lr x this scale (the schedule scales both alike)
        scale = args.discriminator_learning_rate / learning_rate if learning_rate > 0 else 1.0
        self.lr_scales = {"discriminator": scale}
        self.last_accuracy = None

    def forward(self, pixel_values: torch.Tensor, z: torch.Tensor) -> GANOutput:
        kind, gamma = self.args.gan_loss, self.args.r1_gamma
        fake = self.generator(z)  # (B, 3, S, S)
        real = pixel_values.detach().requires_grad_(gamma > 0)
        real_scores, fake_scores = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = discriminator_loss(real_scores, fake_scores, kind)
        r1 = 0.5 * gamma * r1_penalty(real_scores, real) if gamma > 0 else torch.zeros((), device=real.device)
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}  # D's weights as constants
        g_loss = generator_loss(functional_call(self.discriminator, frozen, (fake,)), kind)
        accuracy = ((real_scores > 0).float().mean() + (fake_scores < 0).float().mean()).detach() / 2
        self.last_accuracy = float(accuracy)
        return GANOutput(loss=d_loss + r1 + g_loss, d_loss=d_loss.detach(), g_loss=g_loss.detach(),
                         r1=r1.detach(), d_accuracy=accuracy)

    @torch.no_grad()
    def step_end(self, step: int) -> None:
        """After the optimizer step: the generator's EMA."""
        ema_update(self.generator_ema, self.generator, ema_momentum(step, self.args.ema_decay))

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from the EMA generator (eval mode: BN running statistics)."""
        was = self.generator_ema.training
        self.generator_ema.eval()
        images = self.generator_ema(z)
        self.generator_ema.train(was)
        return images


class CollapseWatch:
    """``on_step_end`` helper: one warning line when D's batch accuracy stays pinned at 0 or 1 for ``window`` steps
    in a row (D wins outright, or G fools it completely: the other side gets no useful signal). A non-finite loss is
    not its business: the loop stops the run on it."""

    def __init__(self, window: int, log=print):
        self.window, self.log, self.run, self.value, self.warned = window, log, 0, None, False

    def __call__(self, accuracy: float | None, step: int) -> bool:
        pinned = accuracy is not None and accuracy in (0.0, 1.0)
        self.run = self.run + 1 if pinned and accuracy == self.value else (1 if pinned else 0)
        self.value = accuracy if pinned else None
        if not pinned:
            self.warned = False
        if self.window and self.run >= self.window and not self.warned:
            self.warned = True
            who = "the discriminator wins every comparison: the generator's gradient is uninformative" \
                if accuracy == 1.0 else "the discriminator is fooled on every image: it has collapsed"
            self.log(f"warning: discriminator accuracy pinned at {accuracy:g} for the last {self.run} steps (to step "
                     f"{step}): {who}; try --r1_gamma 1 or --spectral_norm true, a lower "
                     "--discriminator_learning_rate, or --gan_loss hinge")
            return True
        return False


def folded_trunk(model: GANPretrainer):
    """A new ``ResNetModel`` holding the discriminator's trunk with spectral norm folded into plain weights: each
    normalised weight as eval mode computes it (the stored power-iteration vectors, no further iteration). Built
    afresh, not deep-copied: removing a parametrization from a copy would delete the property from the class the
    copy shares with the training model."""
    trunk = model.discriminator.trunk
    was = trunk.training
    trunk.eval()
    state = {}
    with torch.no_grad():
        for name, module in trunk.named_modules():
            if "parametrizations" in name.split("."):  # the spectral-norm machinery itself (original, _u, _v)
                continue
            prefix = f"{name}." if name else ""
            if parametrize.is_parametrized(module):
                for tensor in module.parametrizations:
                    state[prefix + tensor] = getattr(module, tensor).detach().clone()  # W / sigma
            for key, value in module.named_parameters(recurse=False):
                state[prefix + key] = value.detach().clone()
            for key, value in module.named_buffers(recurse=False):
                state[prefix + key] = value.detach().clone()
    trunk.train(was)
    plain = type(trunk)(copy.deepcopy(trunk.config))
    plain.load_state_dict(state, strict=True)  # every tensor placed, none left over
    return plain.to(next(trunk.parameters()).device).eval()


class GANBatchTransform:
    """The loop's ``transform``: uint8 -> [-1, 1] real images (augmented by ``views``) and the step's noise z."""

    def __init__(self, views, latent_dim: int):
        self.views, self.latent_dim = views, latent_dim

    def __call__(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pixels = self.views(batch["pixel_values"], generator)
        z = torch.randn(len(pixels), self.latent_dim, generator=generator, device=generator.device)
        return {"pixel_values": pixels, "z": z.to(pixels.device)}


class GANEvaluation:
    """The evaluation hooks of ``fit``: before each evaluation the EMA generator draws samples from fixed noise and
    :func:`hfssl.vision.frechet.sample_quality`-style figures are computed against fixed held-out images (Frechet
    distance and precision / recall in the fixed random feature space; not comparable to published FID); the eval
    step scores held-out real images with D (its accuracy on them: near 1 with a gap to the training batches'
    accuracy means D memorises)."""

    def __init__(self, real: torch.Tensor, noise: torch.Tensor, views, k: int = 3):
        from hfssl.vision.frechet import reference_features

        self.noise, self.views, self.k = noise, views, k
        self.real = reference_features(real) if len(real) > k else None
        self.quality: dict[str, float] = {}

    def before_evaluate(self, model: GANPretrainer, step: int) -> None:
        from hfssl.vision.frechet import frechet_between, precision_recall, reference_features

        if self.real is None:
            return
        device = next(model.parameters()).device
        fake = torch.cat([model.sample(self.noise[i: i + 256].to(device)) for i in range(0, len(self.noise), 256)])
        feats = reference_features(fake)
        precision, recall = precision_recall(self.real, feats, self.k)
        self.quality = {"frechet_random_features": frechet_between(self.real, feats), "precision": precision,
                        "recall": recall}

    def eval_step(self, model: GANPretrainer, batch: dict, generator) -> dict[str, torch.Tensor]:
        scores = model.discriminator(self.views(batch["pixel_values"]))
        return {"d_real_correct": (scores > 0).double(), "examples": torch.ones_like(scores, dtype=torch.float64)}

    def summary(self, totals: dict[str, float]) -> dict[str, float]:
        return {"d_real_accuracy": totals["d_real_correct"] / max(totals["examples"], 1.0), **self.quality}
