"""Robust image loading: odd modes are converted, bad files raise BadImage / are skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancore.data.base import DataError
from gancore.data.images import BadImage, ImageFolderLoader, load_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def _write(tmp: Path, name: str, img: Image.Image, **kw) -> Path:
    path = tmp / name
    img.save(path, **kw)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    f = {
        "rgb_png": _write(tmp_path, "rgb.png", Image.fromarray(RGB)),
        "rgb_jpg": _write(tmp_path, "rgb.jpg", Image.fromarray(RGB), quality=95),
        "gray": _write(tmp_path, "gray.png", Image.fromarray(RGB[..., 0])),
        "gray16": _write(tmp_path, "gray16.png", Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)),
        "rgba": _write(tmp_path, "rgba.png", Image.fromarray(np.dstack([RGB, np.zeros((30, 40), np.uint8)]))),
        "palette": _write(tmp_path, "pal.png", Image.fromarray(RGB).convert("P")),
        "cmyk": _write(tmp_path, "cmyk.jpg", Image.fromarray(RGB).convert("CMYK"), quality=95),
        "bw": _write(tmp_path, "bw.png", Image.fromarray(RGB[..., 0] > 128)),
    }
    good = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    f["truncated"] = tmp_path / "truncated.jpg"
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    f["garbage"] = tmp_path / "garbage.png"
    return f


def test_rgb_range_and_shape(files):
    x = load_image(files["rgb_png"], 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert -1 <= float(x.min()) and float(x.max()) <= 1
    full = load_image(files["rgb_png"], 30, crop="center")  # 30x30 centre of 40x30: no resampling
    expect = torch.from_numpy(RGB[:, 5:35].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(full, expect, atol=1e-5)


def test_crop_box_and_reference(files):
    box = load_image(files["rgb_png"], 10, crop=(0, 0, 10, 10))
    expect = torch.from_numpy(RGB[:10, :10].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(box, expect, atol=1e-5)
    # the same box given for an image twice the size is halved
    half = load_image(files["rgb_png"], 10, crop=(0, 0, 20, 20), reference=(80, 60))
    assert torch.allclose(half, expect, atol=1e-5)
    with pytest.raises(BadImage, match="empty crop"):
        load_image(files["rgb_png"], 8, crop=(100, 100, 200, 200))


def test_grayscale_16bit_and_bw_become_rgb(files):
    g = load_image(files["gray"], 16)
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    g16 = load_image(files["gray16"], 16)
    assert torch.allclose(g16, g, atol=1e-6)  # 16-bit scaled down to the same 8-bit values
    assert load_image(files["bw"], 16).shape == (3, 16, 16)


def test_rgba_composited_on_background(files):
    x = load_image(files["rgba"], 8, background=(128, 128, 128))  # alpha 0 everywhere
    assert torch.allclose(x, torch.full_like(x, 128 / 127.5 - 1), atol=1e-6)
    white = load_image(files["rgba"], 8, background=(255, 255, 255))
    assert torch.allclose(white, torch.ones_like(white))


def test_palette_and_cmyk(files):
    ref = load_image(files["rgb_png"], 16)
    assert (load_image(files["palette"], 16) - ref).abs().mean() < 0.1
    assert (load_image(files["cmyk"], 16) - ref).abs().mean() < 0.1


def test_exif_orientation(tmp_path):
    img = Image.fromarray(RGB)  # 40 wide, 30 high
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = _write(tmp_path, "rot.png", img, exif=exif)
    x = load_image(path, 30, crop="stretch")
    rotated = np.asarray(Image.fromarray(RGB).transpose(Image.Transpose.ROTATE_270).resize((30, 30), Image.BICUBIC))
    expect = torch.from_numpy(rotated.copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert (x - expect).abs().mean() < 0.02


def test_huge_image_is_decoded_small(tmp_path):
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = 255
    path = _write(tmp_path, "huge.jpg", Image.fromarray(big), quality=50)
    loader = ImageFolderLoader(32)
    x, used = loader.load([0], lambda i: path, 1)
    assert x.shape == (1, 3, 32, 32) and used == [0]
    assert float(x[0, :, :, :8].mean()) < -0.9 and float(x[0, :, :, -8:].mean()) > 0.9
    assert loader.report.converted["huge"] == 1


def test_bad_files_raise_badimage_naming_path(files, tmp_path):
    with pytest.raises(BadImage, match="truncated") as e:
        load_image(files["truncated"], 16)
    assert str(files["truncated"]) in str(e.value)
    with pytest.raises(BadImage, match="not an image"):
        load_image(files["garbage"], 16)
    with pytest.raises(BadImage, match="missing") as e:
        load_image(tmp_path / "nope.jpg", 16)
    assert isinstance(e.value, DataError) and e.value.reason == "missing"


def test_loader_replaces_bad_by_next_good_and_counts(files):
    order = [files[k] for k in ("rgb_png", "truncated", "garbage", "gray", "rgba", "gray16")]
    loader = ImageFolderLoader(8, workers=2)
    x, used = loader.load([1, 2, 0, 5], order.__getitem__, len(order))
    assert x.shape == (4, 3, 8, 8)
    assert used == [3, 3, 0, 5]  # bad 1 and 2 → next good index 3
    r = loader.report
    assert dict(r.skipped) == {"truncated": 1, "not an image": 1}
    assert r.converted["grayscale"] == 2 and r.converted["16-bit"] == 1
    assert r.examples["truncated"] == [str(files["truncated"])]
    assert r.replaced == 2
    # the same request again: same answer, files not counted twice
    _, again = loader.load([1, 2, 0, 5], order.__getitem__, len(order))
    assert again == used and r.num_skipped == 2
    assert "truncated: 1" in r.summary()


def test_loader_wraps_around_and_gives_up_when_all_bad(files):
    order = [files["rgb_png"], files["truncated"]]
    loader = ImageFolderLoader(8)
    _, used = loader.load([1], order.__getitem__, 2)
    assert used == [0]
    all_bad = ImageFolderLoader(8)
    with pytest.raises(DataError, match="no readable image"):
        all_bad.load([0], [files["truncated"], files["garbage"]].__getitem__, 2)


def test_load_paths_keeps_good_positions(files):
    loader = ImageFolderLoader(8)
    x, kept = loader.load_paths([files["rgb_jpg"], files["garbage"], files["cmyk"]])
    assert kept == [0, 2] and x.shape == (2, 3, 8, 8)
    assert loader.report.converted["cmyk"] == 1
