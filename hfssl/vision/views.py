"""Two independent augmented views of each image, batched on the training device (SimCLR / MoCo / BYOL).

Each view is drawn on its own: random resized crop + horizontal flip (:mod:`hfssl.vision.transforms`),
then, each with its own probability per image, colour jitter (brightness, contrast, saturation, hue),
grayscale, Gaussian blur and solarisation; all random numbers come from the step's generator (exact
resume). Differences from torchvision's per-image ``ColorJitter``: the four jitter operations run in
the fixed order brightness -> contrast -> saturation -> hue (torchvision permutes them per call), and the
hue shift is a rotation of the chroma plane in YIQ space (a linear approximation of torchvision's
HSV shift, exact for grey pixels, which it leaves unchanged as torchvision does).

Per-method defaults follow the papers (SimCLR 2002.05709 appendix A; MoCo v2 2003.04297; BYOL
2006.07733 table 6, with its asymmetric blur / solarisation between the two views). Blur is switched
off for images of 32 px and less (CIFAR practice: a 23-px kernel on a 32-px image erases the object).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hfssl.vision.transforms import AugmentArgs, normalize, random_crop_flip

SMALL_FOR_BLUR = 32
_GREY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale weights (ITU-R 601 luma)


@dataclass
class ViewArgs:
    """The colour operations of a contrastive view (defaults: SimCLR's); the crop and flip that come first
    are :class:`hfssl.vision.transforms.AugmentArgs`, shared with MAE and fine-tuning."""

    jitter_prob: float = field(default=0.8, metadata={"help": "Probability of colour jitter per view."})
    brightness: float = field(default=0.4, metadata={"help": "Brightness factor drawn from [1 - b, 1 + b]."})
    contrast: float = field(default=0.4, metadata={"help": "Contrast factor drawn from [1 - c, 1 + c]."})
    saturation: float = field(default=0.4, metadata={"help": "Saturation factor drawn from [1 - s, 1 + s]."})
    hue: float = field(default=0.1, metadata={"help": "Hue shift drawn from [-h, h] (fraction of a turn, <= 0.5)."})
    grayscale_prob: float = field(default=0.2, metadata={"help": "Probability of converting a view to grey."})
    blur_prob: float = field(default=0.5, metadata={"help": "Gaussian blur probability, first view (off <= 32 px)."})
    blur_prob_2: float | None = field(default=None, metadata={"help": "Blur probability, second view (None: same)."})
    solarize_prob: float = field(default=0.0, metadata={"help": "Solarisation probability, first view."})
    solarize_prob_2: float | None = field(default=None, metadata={"help": "Solarisation, second view (None: same)."})

    def __post_init__(self):
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "blur_prob_2", "solarize_prob",
                     "solarize_prob_2"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name}={value} must be a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue={self.hue} must be in [0, 0.5]")

    def view_probs(self, view: int) -> tuple[float, float]:
        """(blur, solarise) probabilities of view 0 or 1."""
        if view == 0:
            return self.blur_prob, self.solarize_prob
        blur = self.blur_prob if self.blur_prob_2 is None else self.blur_prob_2
        sol = self.solarize_prob if self.solarize_prob_2 is None else self.solarize_prob_2
        return blur, sol


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.empty(n, device=g.device).uniform_(low, high, generator=g)  # (n,)


def _bernoulli(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=g.device, generator=g) < p  # (n,) bool


def grey(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] -> luma ``(B, 1, H, W)``."""
    w = torch.tensor(_GREY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, args: ViewArgs, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue with per-image factors; ``x`` ``(B, 3, H, W)`` in [0, 1]."""
    B = x.shape[0]
    view = (B, 1, 1, 1)
    b = _uniform(B, max(0.0, 1 - args.brightness), 1 + args.brightness, g).view(view)
    c = _uniform(B, max(0.0, 1 - args.contrast), 1 + args.contrast, g).view(view)
    s = _uniform(B, max(0.0, 1 - args.saturation), 1 + args.saturation, g).view(view)
    h = _uniform(B, -args.hue, args.hue, g)  # (B,)
    x = (x * b).clamp(0, 1)
    mean = grey(x).mean((2, 3), keepdim=True)  # (B, 1, 1, 1) torchvision blends with the mean grey level
    x = (c * x + (1 - c) * mean).clamp(0, 1)
    x = (s * x + (1 - s) * grey(x)).clamp(0, 1)
    if args.hue > 0:
        rgb_to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                                  device=x.device, dtype=x.dtype)
        yiq_to_rgb = torch.linalg.inv(rgb_to_yiq)
        theta = 2 * torch.pi * h
        cos, sin = theta.cos(), theta.sin()
        rot = torch.zeros(B, 3, 3, device=x.device, dtype=x.dtype)  # (B, 3, 3) rotation of (I, Q)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = yiq_to_rgb @ rot @ rgb_to_yiq  # (B, 3, 3)
        x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per image ``(B,)``; reflect padding, like torchvision."""
    B, C, H, W = x.shape
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)  # (K,)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))  # (B, K)
    k = (k / k.sum(-1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, B * C, H, W), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C)  # along W
    y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)  # along H
    return y.view(B, C, H, W)


def augment_view(pixels: torch.Tensor, crop: AugmentArgs, args: ViewArgs, view: int, g: torch.Generator) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> one augmented view in [0, 1] ``(B, 3, S, S)`` (not yet normalised)."""
    B, _, H, W = pixels.shape
    x = random_crop_flip(pixels, crop, g) / 255.0  # (B, 3, S, S)
    mask = lambda p: _bernoulli(B, p, g).view(B, 1, 1, 1)  # noqa: E731
    if args.jitter_prob > 0:
        x = torch.where(mask(args.jitter_prob), color_jitter(x, args, g), x)
    if args.grayscale_prob > 0:
        x = torch.where(mask(args.grayscale_prob), grey(x).expand_as(x), x)
    blur_p, sol_p = args.view_probs(view)
    if blur_p > 0 and H > SMALL_FOR_BLUR:
        kernel = max(3, int(0.1 * H) // 2 * 2 + 1)  # ~10 % of the side, odd (SimCLR)
        sigma = _uniform(B, 0.1, 2.0, g)
        x = torch.where(mask(blur_p), gaussian_blur(x, sigma, kernel), x)
    if sol_p > 0:
        x = torch.where(mask(sol_p), torch.where(x >= 0.5, 1 - x, x), x)
    return x


class TwoViews:
    """A ``fit`` transform: ``{"pixel_values": uint8 (B, 3, S, S)}`` -> ``{"view1", "view2"}`` normalised
    float, two independent augmentations of each image (labels dropped: pretraining never sees them)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop: AugmentArgs, args: ViewArgs):
        self.mean, self.std, self.crop, self.args = tuple(mean), tuple(std), crop, args

    def __call__(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        # encoded storage: the loader's workers cut each view's crop from the original image (pixel_values_2 is
        # the second view's, and self.crop is then off); decoded storage: both views are cropped here
        pixels = [batch["pixel_values"], batch.get("pixel_values_2", batch["pixel_values"])]
        views = [augment_view(pixels[v], self.crop, self.args, v, generator) for v in (0, 1)]
        return {f"view{v + 1}": normalize(x * 255.0, self.mean, self.std) for v, x in enumerate(views)}
