"""Helper for tests/test_clip.py: run under ``torch.distributed.run --nproc_per_node 2`` (gloo, CPU).

Each process builds the same tiny dual encoder (same seed, dropout off), takes its half of a fixed global batch
of pairs, computes hfssl's CLIP loss (its images against every process's captions through ``gather_with_grad``),
backpropagates it and saves ``rank{r}.pt`` (the loss and every parameter's gradient) into the folder given as
the only argument.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hfssl.distributed import world_info
from hfssl.methods.clip import CLIPArgs, CLIPPretrainer, build_dual_encoder

N_PER_PROCESS = 3


def model_and_batch(world: int = 2):
    """The same model and global batch in every process (and in the test's one-process reference)."""
    torch.manual_seed(0)
    args = CLIPArgs(vision_preset="tiny", text_preset="tiny", projection_dim=8, patch_size=4)
    model = CLIPPretrainer(build_dual_encoder(args, image_size=8, vocab_size=30, pad_id=0)[0]).eval()
    g = torch.Generator().manual_seed(1)
    n = world * N_PER_PROCESS
    ids = torch.randint(5, 30, (n, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 4:] = 0  # some padded captions
    batch = {"pixel_values": torch.randn(n, 3, 8, 8, generator=g), "input_ids": ids, "attention_mask": mask,
             "token_type_ids": torch.zeros_like(ids)}
    return model, batch


def main(out: Path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    info = world_info()
    model, batch = model_and_batch(info.world_size)
    rows = slice(info.rank * N_PER_PROCESS, (info.rank + 1) * N_PER_PROCESS)
    loss = model(**{k: v[rows] for k, v in batch.items()}).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    torch.save({"world": (info.rank, info.world_size), "loss": loss.detach(), "grads": grads}, out / f"rank{info.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
