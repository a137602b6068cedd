"""Two-view augmentation: each operation against torchvision's own functional implementation, the
independence and reproducibility of the views, and the small-image rule for blur."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from hfssl.vision.transforms import AugmentArgs
from hfssl.vision.views import TwoViews, ViewArgs, augment_view, color_jitter, gaussian_blur

ONLY = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def images(n=6, size=16, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def replay_factors(n: int, seed: int, args: ViewArgs) -> list[torch.Tensor]:
    """The four per-image factors color_jitter draws, in its order."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for width in (args.brightness, args.contrast, args.saturation):
        out.append(torch.empty(n).uniform_(max(0.0, 1 - width), 1 + width, generator=g))
    out.append(torch.empty(n).uniform_(-args.hue, args.hue, generator=g))
    return out


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_each_jitter_operation_equals_torchvision(op):
    args = ViewArgs(**{**ONLY, op: 0.6})
    x = images()
    got = color_jitter(x, args, torch.Generator().manual_seed(3))
    factors = dict(zip(("brightness", "contrast", "saturation", "hue"), replay_factors(len(x), 3, args)))
    fn = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}[op]
    want = torch.stack([fn(img, float(f)) for img, f in zip(x, factors[op])])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_hue_keeps_grey_pixels_and_zero_shift_is_identity():
    grey = images()[:, :1].expand(-1, 3, -1, -1).contiguous()
    args = ViewArgs(**{**ONLY, "hue": 0.5})
    torch.testing.assert_close(color_jitter(grey, args, torch.Generator().manual_seed(0)), grey, atol=1e-5, rtol=0)
    colour = images()
    shifted = color_jitter(colour, args, torch.Generator().manual_seed(0))
    assert (shifted - colour).abs().max() > 0.05  # a real shift on coloured pixels
    torch.testing.assert_close(color_jitter(colour, ViewArgs(**ONLY), torch.Generator()), colour)


def test_gaussian_blur_equals_torchvision_per_image():
    x = images(4, 40)
    sigma = torch.tensor([0.3, 0.8, 1.5, 2.0])
    got = gaussian_blur(x, sigma, 5)
    want = torch.stack([TF.gaussian_blur(img, [5, 5], [float(s), float(s)]) for img, s in zip(x, sigma)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_views_are_independent_reproducible_and_normalised():
    pixels = (images(8, 16) * 255).to(torch.uint8)
    views = TwoViews((0.5,) * 3, (0.25,) * 3, AugmentArgs(), ViewArgs())
    a = views({"pixel_values": pixels, "labels": torch.zeros(8)}, torch.Generator().manual_seed(7))
    b = views({"pixel_values": pixels}, torch.Generator().manual_seed(7))
    assert set(a) == {"view1", "view2"}  # labels never reach the method
    assert a["view1"].shape == a["view2"].shape == (8, 3, 16, 16) and a["view1"].dtype == torch.float32
    torch.testing.assert_close(a["view1"], b["view1"])  # same generator -> same views (exact resume)
    assert not torch.allclose(a["view1"], a["view2"])  # two independent draws
    c = views({"pixel_values": pixels}, torch.Generator().manual_seed(8))
    assert not torch.allclose(a["view1"], c["view1"])
    assert a["view1"].min() >= (0 - 0.5) / 0.25 - 1e-5 and a["view1"].max() <= (1 - 0.5) / 0.25 + 1e-5


def test_blur_and_solarize_follow_their_view_probabilities_and_the_small_image_rule():
    pixels = (images(4, 64) * 255).to(torch.uint8)
    full = AugmentArgs(hflip=0, crop_min_scale=1.0)
    plain = ViewArgs(jitter_prob=0, grayscale_prob=0, blur_prob=0)
    base = augment_view(pixels, full, plain, 0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(base, pixels / 255.0, atol=1e-5, rtol=0)  # full crop, no flip: identity
    blurred = augment_view(pixels, full, ViewArgs(**{**vars(plain), "blur_prob": 1.0}), 0, torch.Generator().manual_seed(1))
    assert (blurred - base).abs().mean() > 0.02
    # BYOL's asymmetry: solarise only the second view
    sol = ViewArgs(**{**vars(plain), "solarize_prob": 0.0, "solarize_prob_2": 1.0})
    torch.testing.assert_close(augment_view(pixels, full, sol, 0, torch.Generator().manual_seed(1)), base)
    torch.testing.assert_close(augment_view(pixels, full, sol, 1, torch.Generator().manual_seed(1)),
                               TF.solarize(base, 0.5))
    small = (images(4, 32) * 255).to(torch.uint8)  # 32 px: blur is off whatever blur_prob says
    off = augment_view(small, full, ViewArgs(**{**vars(plain), "blur_prob": 1.0}), 0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(off, small / 255.0, atol=1e-5, rtol=0)


def test_bad_view_args():
    with pytest.raises(ValueError, match="probability"):
        ViewArgs(blur_prob=1.5)
    with pytest.raises(ValueError, match="hue"):
        ViewArgs(hue=0.7)
    with pytest.raises(ValueError, match="crop_min_scale"):
        AugmentArgs(crop_min_scale=0)


def test_crop_flip_is_one_argument_set_for_views_and_mae():
    """A contrastive view's geometry is exactly MAE's crop + flip from the same generator state."""
    from hfssl.vision.transforms import random_crop_flip

    pixels = (images(6, 24) * 255).to(torch.uint8)
    crop = AugmentArgs(crop_min_scale=0.3, hflip=0.5)
    none = ViewArgs(jitter_prob=0, grayscale_prob=0, blur_prob=0)
    view = augment_view(pixels, crop, none, 0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(view, random_crop_flip(pixels, crop, torch.Generator().manual_seed(5)) / 255.0)
    assert not torch.allclose(view, pixels / 255.0)
