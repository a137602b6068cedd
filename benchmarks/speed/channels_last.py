"""The transformers ResNet's forward + backward with channels-first input (what `model(pixel_values)` gets
from an image processor or a torchvision pipeline) against the channels-last input hfssl's
`hfssl.vision.backbones.features` passes, on the same weights and batch. Prints both times, their ratio
and the largest difference between the two sets of features and of stem gradients, relative to their
largest magnitude (float rounding only: summation order differs between the kernels).

    python benchmarks/speed/channels_last.py                                  # small ResNet, 32 px upsampled to 64
    python benchmarks/speed/channels_last.py --preset resnet50 --size 224 --batch_size 64 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from step_common import sync  # noqa: E402

from hfssl.vision.backbones import BackboneArgs, build_backbone, features  # noqa: E402


def plain(model, x: torch.Tensor) -> torch.Tensor:
    """The plain transformers call on a channels-first batch."""
    return model(pixel_values=x.contiguous()).pooler_output.flatten(1)


def step(forward, model, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and the stem's weight gradient of one forward + backward."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        h = forward(model, x)
    h.float().square().mean().backward()
    return h.detach().float(), model.embedder.embedder.convolution.weight.grad.clone()


def timed(forward, model, x, bf16: bool, repeats: int) -> float:
    step(forward, model, x, bf16)  # warm-up (oneDNN / cuDNN pick their kernels)
    times = []
    for _ in range(repeats):
        sync(x.device)
        start = time.perf_counter()
        step(forward, model, x, bf16)
        sync(x.device)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--size", type=int, default=64, help="side of the input the backbone sees")
    p.add_argument("--batch_size", type=int, default=512, help="images per forward (two views of 256)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_backbone(BackboneArgs(backbone="resnet", preset=args.preset, small_image_stem=False),
                           args.size).to(args.device)
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=args.device)
    print(f"ResNet {args.preset}, {args.batch_size} x {args.size}x{args.size}, {args.device}, "
          f"{torch.get_num_threads()} threads: forward + backward, best of {args.repeats}")
    print("| precision | channels-first (plain) s | channels-last (hfssl) s | speed-up | feature diff | grad diff |")
    print("|---|---|---|---|---|---|")
    for bf16 in (False, True):
        t_first, t_last = timed(plain, model, x, bf16, args.repeats), timed(features, model, x, bf16, args.repeats)
        (h1, g1), (h2, g2) = step(plain, model, x, bf16), step(features, model, x, bf16)
        dh = (h1 - h2).abs().max().item() / h1.abs().max().item()
        dg = (g1 - g2).abs().max().item() / g1.abs().max().item()
        print(f"| {'bf16' if bf16 else 'fp32'} | {t_first:.3f} | {t_last:.3f} | {t_first / t_last:.2f}x "
              f"| {dh:.1e} | {dg:.1e} |")


if __name__ == "__main__":
    main()
