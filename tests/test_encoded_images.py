"""Encoded storage (images above 64 px): the files' bytes kept, decoded in the DataLoader's workers, random resized
crops taken from the original image (checked against torchvision's resized_crop on the same box), every mode to
RGB, broken files named and counted, small images upscaled, crops fixed by (seed, epoch, row) whatever the worker
count, and a resumed MAE run ending bit-identical to an uninterrupted one."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from hfssl.vision.data import ImageDataArgs, close_decode_failures, load_images, storage_for
from hfssl.vision.encoded import ENCODED, ROW, SOURCE
from hfssl.vision.loader import (
    DECODE_FAILURES,
    PIXELS,
    PIXELS_2,
    as_pixels,
    collate_images,
    log_decode_failures,
)
from hfssl.vision.transforms import (
    AugmentArgs,
    EncodedCrops,
    crop_seed,
    random_resized_crop_boxes,
    training_data,
)

ROOT = Path(__file__).resolve().parents[1]
S = 72  # above 64 px: encoded by default


def _png_with_bad_data() -> bytes:
    """A PNG whose chunks all pass their checksums but whose pixel data is not zlib: only decoding finds it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 90, 80, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"certainly not zlib data") + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder mixing sizes (larger and smaller than the crop), modes and broken files."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    rows, cols = np.indices((150, 200))
    photo = np.stack([127 + 120 * np.sin(rows / (7 + c)) * np.cos(cols / (9 + c)) for c in range(3)], -1)
    files = {
        "photo": Image.fromarray(np.clip(photo + rng.normal(0, 4, photo.shape), 0, 255).astype(np.uint8)),
        "tall": Image.fromarray(rng.integers(0, 255, (130, 90, 3), dtype=np.uint8)),
        "small": Image.new("RGB", (30, 20), (10, 200, 30)),  # smaller than the 72-px crop: upscaled
        "grey": Image.new("L", (100, 80), 100),
        "rgba": Image.new("RGBA", (90, 90), (200, 0, 0, 128)),
        "sixteen": Image.fromarray(np.full((80, 80), 32896, np.uint16)),  # 128 * 257: 128, by the bit depth
        "cmyk": Image.new("CMYK", (96, 80), (0, 255, 255, 0)),
    }
    for name, image in files.items():
        (root / name).mkdir()
        image.save(root / name / ("x.jpg" if name in ("photo", "cmyk") else "x.png"))
    (root / "broken").mkdir()
    jpeg = (root / "photo" / "x.jpg").read_bytes()
    (root / "broken" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # header fine, end marker missing
    (root / "broken" / "garbage.png").write_bytes(b"this is not a picture")
    return root


def args(folder: Path, **kw) -> ImageDataArgs:
    return ImageDataArgs(data=str(folder), image_size=S, eval_fraction=0, cache_dir=str(folder.parent / "cache"), **kw)


def by_class(data, name: str) -> int:
    """The training row of the class folder ``name``."""
    labels = data.train["label"]
    return labels.index(data.label_names.index(name))


def test_storage_is_chosen_by_size_and_source_and_can_be_forced(folder, tmp_path):
    assert storage_for(ImageDataArgs(image_size=64), 64) == "decoded"
    assert storage_for(ImageDataArgs(image_size=65), 65) == "encoded"
    assert storage_for(ImageDataArgs(storage="decoded"), 224) == "decoded"
    assert storage_for(ImageDataArgs(storage="encoded"), 32) == "encoded"
    data = load_images(args(folder))
    assert data.storage == "encoded" and sorted(data.train.column_names) == sorted([ENCODED, ROW, SOURCE, "label"])
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 90, 90, 3), np.uint8))  # arrays are decoded whatever their size
    assert load_images(ImageDataArgs(data=str(tmp_path / "a.npz"), image_size=S, eval_fraction=0)).storage == "decoded"


def test_files_are_kept_as_they_are_and_broken_ones_named_and_counted(folder):
    data = load_images(args(folder))
    assert len(data.train) == 7 and "stored encoded" in str(data.report)
    assert sorted(p.rsplit("/", 1)[1] for p, _ in data.report.skipped) == ["cut.jpg", "garbage.png"]
    row = data.train[by_class(data, "photo")]
    assert row[ENCODED] == (folder / "photo" / "x.jpg").read_bytes()  # the file itself, not a re-encoding


def test_every_mode_becomes_rgb_and_small_images_are_upscaled(folder):
    data = load_images(args(folder))
    pixels = as_pixels(data.train, S)  # centre squares, decoded when fetched
    px = {name: pixels[by_class(data, name)][PIXELS].numpy() for name in data.label_names if name != "broken"}
    assert all(p.shape == (3, S, S) and p.dtype == np.uint8 for p in px.values())
    assert (px["grey"] == 100).all() and (px["sixteen"] == 128).all()
    assert (px["small"].reshape(3, -1).T == [10, 200, 30]).all()  # 30x20 upscaled to 72x72, not an error
    rgba = px["rgba"]  # 200 * a + 255 * (1 - a), a = 128 / 255, on white
    assert np.abs(rgba[0] - 227.4).max() <= 1 and np.abs(rgba[1:] - 127.0).max() <= 1
    assert px["cmyk"][0].min() > 240 and px["cmyk"][1:].max() < 15


def test_random_crop_is_torchvisions_resized_crop_of_the_original_image(folder):
    """The crop box is drawn like RandomResizedCrop.get_params on the ORIGINAL image (200x150, not a pre-squashed
    square) and resized with PIL, as torchvision does on PIL images; reference: torchvision's resized_crop."""
    data = load_images(args(folder))
    crop = AugmentArgs(crop_min_scale=0.08, hflip=0.5)
    i = by_class(data, "photo")
    ds = data.train.select_columns([ENCODED, ROW, SOURCE]).with_transform(EncodedCrops(S, crop, seed=3, epoch=1, views=2))
    out = ds[i]
    original = Image.open(folder / "photo" / "x.jpg").convert("RGB")
    g = torch.Generator().manual_seed(crop_seed(3, 1, data.train[i][ROW]))
    for key in (PIXELS, PIXELS_2):  # two independent views, in this order from the same draws
        top, left, h, w = random_resized_crop_boxes(1, 150, 200, g, (0.08, 1.0))[0].tolist()
        flip = bool(torch.rand(1, generator=g) < 0.5)
        expected = TF.resized_crop(TF.pil_to_tensor(original), top, left, h, w, [S, S], antialias=True)
        expected = TF.horizontal_flip(expected) if flip else expected
        diff = (out[key].int() - expected.int()).abs()
        # PIL's box resize reads the pixels just outside the box where torchvision's crop-then-resize repeats the edge
        assert diff.float().mean() < 1.5 and (diff[:, 3:-3, 3:-3] <= 3).float().mean() > 0.98, diff.float().mean()
    assert not torch.equal(out[PIXELS], out[PIXELS_2])


def test_crops_depend_on_seed_epoch_and_row_only_not_on_the_workers(folder):
    data = load_images(args(folder))
    epoch_data, device_crop = training_data(data, AugmentArgs(), seed=7, views=2)
    assert device_crop.augment is False  # nothing left to crop on the device

    def batches(epoch: int, workers: int) -> list[dict]:
        loader = DataLoader(epoch_data(epoch).shuffle(seed=epoch), batch_size=3, collate_fn=collate_images,
                            num_workers=workers)
        return list(loader)

    one, two = batches(0, 0), batches(0, 2)
    assert len(one) == 3 and one[0][PIXELS].shape == (3, 3, S, S) and one[0][PIXELS_2].dtype == torch.uint8
    for a, b in zip(one, two):
        assert torch.equal(a[PIXELS], b[PIXELS]) and torch.equal(a[PIXELS_2], b[PIXELS_2])
    later = batches(1, 0)  # another epoch: the same images, other crops
    assert not any(torch.equal(a[PIXELS], b[PIXELS]) for a, b in zip(one, later))


def test_a_file_only_decoding_finds_broken_is_named_and_replaced(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.new("RGB", (90, 80), (50, 60, 70)).save(tmp_path / "f" / name / "ok.png")
    (tmp_path / "f" / "a" / "bad.png").write_bytes(_png_with_bad_data())
    data = load_images(args(tmp_path / "f"))
    assert len(data.train) == 3 and not data.report.skipped  # its header and checksums are fine
    with pytest.warns(UserWarning, match=r"bad\.png could not be decoded.*grey image"):
        rows = as_pixels(data.train, S)[:3]
    assert sum(bool((p == 128).all()) for p in rows[PIXELS]) == 1


def test_files_failing_in_the_loaders_workers_are_counted_once_across_workers_and_epochs(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.new("RGB", (90, 80), (50, 60, 70)).save(tmp_path / "f" / name / "ok.png")
        (tmp_path / "f" / name / "bad.png").write_bytes(_png_with_bad_data())
    data = load_images(args(tmp_path / "f"))
    log = log_decode_failures(tmp_path / "run")
    try:
        epoch_data, _ = training_data(data, AugmentArgs(), seed=0, views=2)
        for epoch in (0, 1):  # the same two files fail in every epoch, in whichever worker fetches them (a
            # worker's warnings go to its own stderr, never to this process: hence the log)
            for batch in DataLoader(epoch_data(epoch), batch_size=2, collate_fn=collate_images, num_workers=2):
                assert batch[PIXELS].shape == (2, 3, S, S)
    finally:
        metrics = {}
        line = close_decode_failures(data.report, metrics)
    assert len(log.read_text().splitlines()) == 4  # every failure is written, by the workers
    failed = sorted(source for source, _ in data.report.failed_when_read)
    assert failed == sorted(str(tmp_path / "f" / name / "bad.png") for name in ("a", "b"))
    assert line.startswith("warning: 2 image(s) failed to decode when read") and "a/bad.png" in line
    assert metrics == {"images_failed_to_decode": 2} and log == tmp_path / "run" / DECODE_FAILURES
    assert "2 failed to decode when read during the run" in str(data.report)  # what the model card shows
    with pytest.warns(UserWarning, match="could not be decoded"):  # in this process: warned, no longer logged
        as_pixels(data.train, S)[:4]
    assert len(log.read_text().splitlines()) == 4


def test_max_side_reencodes_once_keeping_the_aspect_ratio(folder):
    data = load_images(args(folder, max_side=100))
    photo = Image.open(io.BytesIO(data.train[by_class(data, "photo")][ENCODED]))
    assert photo.size == (100, 75) and photo.format == "JPEG"
    small = Image.open(io.BytesIO(data.train[by_class(data, "small")][ENCODED]))
    assert small.size == (30, 20) and small.format == "PNG"  # already within the limit: kept as it is


def run(*flags) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/mae.py"), *map(str, flags)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_resumed_encoded_run_ends_bit_identical(folder, tmp_path):
    """4 steps straight, against the same run resumed from its step-2 checkpoint with 2 loader workers instead of
    none (7 images, batch 3: the resume crosses an epoch, whose crops differ)."""
    common = ["--data", folder, "--cache_dir", tmp_path / "cache", "--image_size", S, "--patch_size", 8, "--preset",
              "tiny", "--decoder_hidden_size", 32, "--decoder_num_hidden_layers", 1, "--eval_fraction", 0,
              "--per_device_train_batch_size", 3, "--max_steps", 4, "--save_steps", 2, "--logging_steps", 1,
              "--num_pictures", 0, "--seed", 5]
    run(*common, "--output_dir", tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed/checkpoints/step-4")
    shutil.rmtree(tmp_path / "resumed/model")
    run(*common, "--output_dir", tmp_path / "resumed", "--resume", "--dataloader_num_workers", 2)
    a, b = load_file(tmp_path / "straight/model/model.safetensors"), load_file(tmp_path / "resumed/model/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_names_and_counts_files_that_fail_when_read_in_its_output_and_card(tmp_path):
    (tmp_path / "f" / "a").mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (90, 80), (50 * i, 60, 70)).save(tmp_path / "f" / "a" / f"ok{i}.png")
    (tmp_path / "f" / "a" / "bad.png").write_bytes(_png_with_bad_data())
    out = tmp_path / "out"
    proc = run("--data", tmp_path / "f", "--cache_dir", tmp_path / "cache", "--image_size", S, "--patch_size", 8,
               "--preset", "tiny", "--decoder_hidden_size", 32, "--decoder_num_hidden_layers", 1, "--eval_fraction", 0,
               "--per_device_train_batch_size", 3, "--max_steps", 3, "--logging_steps", 1, "--num_pictures", 0,
               "--dataloader_num_workers", 2, "--output_dir", out)
    bad = str(tmp_path / "f" / "a" / "bad.png")
    assert "warning: 1 image(s) failed to decode when read during the run" in proc.stdout and bad in proc.stdout
    assert {line.split("\t")[0] for line in (out / DECODE_FAILURES).read_text().splitlines()} == {bad}
    card = (out / "model" / "README.md").read_text()
    assert "1 failed to decode when read during the run" in card and "bad.png" in card


def test_large_jpegs_decode_at_reduced_scale_and_rotated_ones_upright(tmp_path, monkeypatch):
    """A 1600x1200 photograph-like JPEG cropped to 72 px is decoded at 1/8 scale (DCT scaling): the result stays
    within a few grey levels of the full decode; an EXIF-rotated JPEG is cropped from its upright image."""
    from hfssl.vision.encoded import centre_square, decode_crops, resized_crop_pil

    rows, cols = np.indices((1200, 1600))
    x = np.stack([127 + 120 * np.sin(rows / (40 + 9 * c)) * np.cos(cols / (55 + 7 * c)) for c in range(3)], -1)
    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, "JPEG", quality=95)
    full = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    expected = resized_crop_pil(full, centre_square(1600, 1200), S, False)
    from PIL.JpegImagePlugin import JpegImageFile

    decoded_at = []
    draft = JpegImageFile.draft
    def recording_draft(im, *args):
        result = draft(im, *args)
        decoded_at.append(im.size)  # the size the decoder will produce
        return result

    monkeypatch.setattr(JpegImageFile, "draft", recording_draft)
    (got,) = decode_crops(buf.getvalue(), S, lambda w, h: [(None, False)])
    assert decoded_at == [(200, 150)]  # 1/8 of 1600x1200: 1200/8 = 150 >= the 72-px crop
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright is 90 degrees clockwise
    Image.fromarray(x[:300, :200].astype(np.uint8)).save(rotated, "JPEG", quality=95, exif=exif)
    upright = Image.open(io.BytesIO(rotated.getvalue()))
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(upright).convert("RGB")
    assert upright.size == (300, 200)
    sizes = []
    (got,) = decode_crops(rotated.getvalue(), S, lambda w, h: sizes.append((w, h)) or [((0, 0, 200, 100), True)])
    assert sizes == [(300, 200)]
    assert np.array_equal(got, resized_crop_pil(upright, (0, 0, 200, 100), S, True))


def test_worker_memory_does_not_grow_with_the_batches_it_sends(tmp_path):
    """A DataLoader worker's private memory (RssAnon) stays flat over 60 batches. A plain torch.stack in the
    collate leaked one batch per batch (here 1.2 MB each: +70 MB); default_collate's shared-memory stack does not."""
    import psutil

    def private_mb(pid: int) -> float:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) / 1024

    for i in range(16):
        (tmp_path / "f" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((120, 200, 3), 10 * i, np.uint8)).save(tmp_path / "f" / "a" / f"{i}.jpg")
    data = load_images(ImageDataArgs(data=str(tmp_path / "f"), image_size=160, eval_fraction=0,
                                     cache_dir=str(tmp_path / "cache")))
    epoch_data, _ = training_data(data, AugmentArgs(), seed=0)
    loader = DataLoader(epoch_data(0), batch_sampler=[list(range(16))] * 60, collate_fn=collate_images, num_workers=1)
    sizes = []
    for batch in loader:
        assert batch[PIXELS].shape == (16, 3, 160, 160)
        sizes.append(private_mb(psutil.Process().children()[0].pid))
    assert sizes[-1] - sizes[10] < 20, sizes  # a batch a batch would be +59 MB


def test_settings_record_the_resolved_storage_and_older_checkpoints_resume_on_the_decoded_path(tmp_path):
    from hfssl.checkpoint import check_settings
    from hfssl.errors import UserError
    from hfssl.vision.data import settle

    assert (settle(ImageDataArgs(image_size=224)).storage, settle(ImageDataArgs()).storage) == ("encoded", "decoded")
    assert settle(ImageDataArgs()).normalize == "dataset" and settle(ImageDataArgs(), model_stats=True).normalize is None
    before = {"seed": 1, "image_size": 32, "normalize": "dataset"}  # a checkpoint written before storage modes
    now = {**before, "storage": "decoded", "max_side": None, "jpeg_quality": 90, "model_name_or_path": None}
    check_settings(before, now, tmp_path)  # what those runs did: resumes
    with pytest.raises(UserError, match="storage 'decoded' -> 'encoded'"):
        check_settings(before, {**now, "storage": "encoded"}, tmp_path)
