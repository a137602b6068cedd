"""Image data: every PIL mode to RGB, any size to the model's, bad files skipped and named, empty data refused,
arrays / IDX / save_to_disk / imagefolder inputs, the embedded subset, and the batched augmentation."""

from __future__ import annotations

import gzip
import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from hfssl.vision.arrays import arrays_to_pixels, read_idx
from hfssl.vision.data import FASHION_MNIST_LABELS, ImageDataArgs, load_images
from hfssl.vision.loader import PIXELS, collate_images, pixels_from_bytes
from hfssl.vision.transforms import ImageViews, normalize, random_resized_crop_boxes, resized_crop

S = 16


def _pixels(data, label_name: str) -> np.ndarray:
    """The decoded (3, S, S) image of the class folder ``label_name`` (one image per folder)."""
    i = data.label_names.index(label_name)
    rows = [r for r in data.train if r["label"] == i]
    assert len(rows) == 1
    return pixels_from_bytes([rows[0][PIXELS]])[0].numpy()


def folder_args(folder) -> ImageDataArgs:
    """The test folder at S x S, no held-out split, with a private datasets cache."""
    return ImageDataArgs(data=str(folder), image_size=S, eval_fraction=0, cache_dir=str(folder.parent / "cache"))


def _palette_image() -> Image.Image:
    image = Image.new("P", (33, 33), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    return image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An imagefolder: one class folder per kind of image, plus a folder of broken files."""
    root = tmp_path_factory.mktemp("images")
    files = {
        "grey": Image.new("L", (20, 30), 100),
        "rgba": Image.new("RGBA", (40, 17), (200, 0, 0, 128)),  # half-transparent red over white
        "palette": _palette_image(),
        "cmyk": Image.new("CMYK", (50, 12), (0, 255, 255, 0)),  # red
        "sixteen": Image.fromarray(np.full((25, 25), 32896, np.uint16)),  # I;16, 128 * 257
        "halves": Image.fromarray(np.concatenate([np.zeros((32, 32), np.uint8), np.full((32, 32), 255, np.uint8)], 1)),
    }
    for name, image in files.items():
        (root / name).mkdir()
        image.save(root / name / ("x.jpg" if name == "cmyk" else "x.png"))
    (root / "broken").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    (root / "broken" / "truncated.png").write_bytes(buf.getvalue()[:120])
    (root / "broken" / "garbage.jpg").write_bytes(b"this is not a picture")
    return root


def test_every_mode_becomes_rgb_at_the_model_size(folder):
    data = load_images(folder_args(folder))
    assert data.image_size == S and len(data.train) == 6 and data.eval is None
    assert Image.open(folder / "sixteen/x.png").mode == "I;16"  # the file really is 16-bit
    assert (_pixels(data, "grey") == 100).all()
    rgba = _pixels(data, "rgba")  # 200 * a + 255 * (1 - a), a = 128 / 255
    assert np.abs(rgba[0] - 227.4).max() <= 1 and np.abs(rgba[1] - 127.0).max() <= 1 and np.abs(rgba[2] - 127.0).max() <= 1
    assert (_pixels(data, "palette").reshape(3, -1).T == [10, 20, 30]).all()
    cmyk = _pixels(data, "cmyk").astype(int)  # JPEG: near red
    assert cmyk[0].min() > 240 and cmyk[1:].max() < 15
    assert (_pixels(data, "sixteen") == 128).all()
    halves = _pixels(data, "halves")  # 64x32 -> 16x16: left half black, right half white, one blurred column each side
    assert (halves[:, :, : S // 2 - 1] == 0).all() and (halves[:, :, S // 2 + 1 :] == 255).all()


def test_broken_files_are_skipped_counted_and_named(folder):
    data = load_images(folder_args(folder))
    assert sorted(p.rsplit("/", 1)[1] for p, _ in data.report.skipped) == ["garbage.jpg", "truncated.png"]
    text = str(data.report)
    assert "2 skipped" in text and "garbage.jpg" in text and "truncated.png" in text and "6 train" in text
    assert "broken" in data.label_names  # the class exists; its images were dropped, not the run


def test_decoding_is_cached(folder):
    first = load_images(folder_args(folder)).train
    second = load_images(folder_args(folder)).train
    assert first.cache_files and first.cache_files == second.cache_files


def test_only_broken_files_or_no_files_is_an_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"no training images.*a\.png"):
        load_images(ImageDataArgs(data=str(tmp_path / "bad")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_images(ImageDataArgs(data=str(tmp_path / "empty")))
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="N > 0"):
        load_images(ImageDataArgs(data=str(tmp_path / "none.npz")))
    with pytest.raises(FileNotFoundError):
        load_images(ImageDataArgs(data=str(tmp_path / "missing")))


def test_save_to_disk_with_image_column_and_string_labels(tmp_path):
    good = [Image.new("RGB", (9 + i, 7), (i, 2 * i, 3 * i)) for i in range(4)]
    ds = datasets.Dataset.from_dict({"img": [*good, None], "kind": ["b", "a", "b", "a", "a"]},
                                    features=datasets.Features({"img": datasets.Image(), "kind": datasets.Value("string")}))
    ds = ds.cast_column("img", datasets.Image(decode=False))
    ds = datasets.Dataset.from_dict({"img": [*ds["img"][:4], {"bytes": b"junk", "path": None}], "kind": ds["kind"]},
                                    features=ds.features).cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    data = load_images(ImageDataArgs(data=str(tmp_path / "saved"), image_column="img", label_column="kind",
                                     image_size=8, eval_fraction=0))
    assert data.label_names == ["a", "b"] and len(data.train) == 4
    assert data.report.skipped[0][0] == "row 4"
    batch = collate_images([data.train[i] for i in range(4)])
    assert batch[PIXELS].shape == (4, 3, 8, 8) and batch[PIXELS].dtype == torch.uint8
    assert batch["labels"].tolist() == [1, 0, 1, 0]
    assert batch[PIXELS][3].reshape(3, -1).T.tolist()[0] == [3, 6, 9]  # row order and colours kept


def test_npz_arrays_any_layout_and_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)  # channels first
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6) % 2, x_test=x[:2].astype(np.float32) / 255, y_test=[1, 0],
             label_names=np.array(["cat", "dog"]))
    data = load_images(ImageDataArgs(data=str(tmp_path / "a.npz"), image_size=8, normalize="imagenet"))
    assert len(data.train) == 6 and len(data.eval) == 2 and data.label_names == ["cat", "dog"]
    assert torch.equal(pixels_from_bytes(data.train[PIXELS]), torch.from_numpy(x))
    assert torch.equal(pixels_from_bytes(data.eval[PIXELS]), torch.from_numpy(x[:2]))  # floats in 0..1 scaled back
    assert data.mean == (0.485, 0.456, 0.406)
    assert (arrays_to_pixels(np.full((1, 4, 4, 4), [0, 0, 0, 0], np.uint8), 4, "t") == 255).all()  # clear -> white


def _png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG written by hand (``arr`` (H, W, 3) uint16): Pillow cannot write one."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w, _ = arr.shape
    rows = b"".join(b"\0" + arr[i].astype(">u2").tobytes() for i in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_images_are_scaled_by_their_bit_depth_not_their_maximum(tmp_path):
    """A dark 16-bit scan (values up to 255 of 65,535) must stay dark: 65535 is white, whatever the image holds."""
    dark = np.arange(S * S, dtype=np.uint16).reshape(S, S) % 256  # 0 .. 255
    expected = np.round(dark.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 0 or 1
    (tmp_path / "f" / "grey").mkdir(parents=True)
    Image.fromarray(dark).save(tmp_path / "f" / "grey" / "x.png")
    assert Image.open(tmp_path / "f" / "grey" / "x.png").mode == "I;16"
    rgb = np.stack([dark, np.full_like(dark, 32896), np.full_like(dark, 65535)], -1)  # (S, S, 3)
    (tmp_path / "f" / "rgb").mkdir()
    (tmp_path / "f" / "rgb" / "x.png").write_bytes(_png16_rgb(rgb))
    data = load_images(folder_args(tmp_path / "f"))
    grey = _pixels(data, "grey")
    assert (grey == expected).all() and grey.max() == 1  # scaled by its own maximum (255) it read 0..255
    colour = _pixels(data, "rgb")  # Pillow keeps the high byte of each 16-bit sample: the same 65535 scale
    assert (colour[0] == dark >> 8).all() and (colour[1] == 128).all() and (colour[2] == 255).all()
    np.savez(tmp_path / "dark.npz", x=dark[None].repeat(2, 0))  # uint16 arrays too
    arrays = load_images(ImageDataArgs(data=str(tmp_path / "dark.npz"), image_size=S, eval_fraction=0))
    assert (pixels_from_bytes(arrays.train[PIXELS])[0].numpy() == expected).all()
    np.savez(tmp_path / "huge.npz", x=np.full((2, S, S), 1e6, np.float32))
    with pytest.raises(ValueError, match="1e.06.*0..65535"):
        load_images(ImageDataArgs(data=str(tmp_path / "huge.npz"), image_size=S))


def test_idx_files_read_like_the_format_says(tmp_path):
    images = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    header = bytes([0, 0, 8, 3]) + (3).to_bytes(4, "big") + (5).to_bytes(4, "big") + (4).to_bytes(4, "big")
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([2, 0, 1]))
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    data = load_images(ImageDataArgs(data=str(tmp_path), image_size=4, eval_fraction=0))
    assert data.train["label"] == [2, 0, 1]
    (tmp_path / "cut-images-idx3-ubyte").write_bytes(header + images.tobytes()[:10])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "cut-images-idx3-ubyte")


def test_embedded_fashion_mnist():
    data = load_images(ImageDataArgs(image_size=28))
    assert (len(data.train), len(data.eval)) == (10_000, 1_000) and data.label_names == FASHION_MNIST_LABELS
    assert np.bincount(data.eval["label"]).tolist() == [100] * 10
    first = pixels_from_bytes(data.train[:1][PIXELS])[0]
    assert torch.equal(first[0], first[1]) and first.float().mean() > 10  # grey images, not blank
    assert 0.2 < data.mean[0] < 0.4 and data.mean[0] == data.mean[2]


def test_batched_crop_equals_torchvision_resized_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 24, 24), generator=g, dtype=torch.uint8)
    boxes = random_resized_crop_boxes(64, 24, 24, g, scale=(0.2, 1.0))
    flip = torch.rand(64, generator=g) < 0.5
    ours = resized_crop(images, boxes, 24, flip)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(images[i].float(), top, left, h, w, [24, 24], antialias=False)
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        m = 24 // (2 * min(h, w)) + 1  # torchvision clamps to the crop edge within half an input pixel
        assert torch.allclose(ours[i][:, m:-m, m:-m], ref[:, m:-m, m:-m], atol=1e-3), i
    whole = torch.tensor([[0, 0, 24, 24]] * 64)
    assert torch.allclose(resized_crop(images, whole, 24, flip), torch.where(flip[:, None, None, None],
                                                                             images.flip(-1), images).float(), atol=1e-3)


def test_crop_boxes_are_valid_seeded_and_fall_back_like_torchvision():
    boxes = random_resized_crop_boxes(4000, 32, 48, torch.Generator().manual_seed(1), scale=(0.2, 1.0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 48).all()
    area = (h * w).float() / (32 * 48)
    assert area.min() > 0.17 and area.max() <= 1.0 and (w.float() / h).min() > 0.69 and (w.float() / h).max() < 1.45
    again = random_resized_crop_boxes(4000, 32, 48, torch.Generator().manual_seed(1), scale=(0.2, 1.0))
    assert torch.equal(boxes, again)
    # nothing can fit in an 8x64 strip at 90 % area: torchvision's centre crop, h = 8, w = round(8 * 4 / 3)
    fallback = random_resized_crop_boxes(5, 8, 64, torch.Generator().manual_seed(0), scale=(0.9, 1.0))
    assert fallback.tolist() == [[0, 26, 8, 11]] * 5


def test_views_normalise_and_augment_only_when_asked():
    from hfssl.vision.transforms import AugmentArgs

    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    plain = ImageViews((0.5, 0.4, 0.3), (0.2, 0.2, 0.1))
    expected = (pixels.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.2, 0.1]).view(1, 3, 1, 1)
    assert torch.allclose(plain(pixels), expected) and torch.allclose(normalize(pixels, plain.mean, plain.std), expected)
    aug = ImageViews(plain.mean, plain.std, AugmentArgs())
    a, b = aug(pixels, torch.Generator().manual_seed(3)), aug(pixels, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, expected)
    with pytest.raises(ValueError, match="generator"):
        aug(pixels)
