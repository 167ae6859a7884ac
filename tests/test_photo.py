"""Tests of gancore.photo: reading, detection error paths, alignment and paste-back (fast, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

cv2 = pytest.importorskip("cv2")

from gancore.photo import (  # noqa: E402
    AlignTemplate,
    Face,
    NoFaceFound,
    PhotoError,
    align,
    apply_to_photo,
    detect_faces,
    face_from_box,
    parse_box,
    paste_back,
    read_photo,
    save_image,
    select_faces,
)

R = 64


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def smooth_photo(h: int = 180, w: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth colourful RGB test photo (gradients + blurred blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200 + 30, yy / h * 180 + 40, (xx + yy) / (w + h) * 150 + 60], axis=2)
    blobs = np.zeros((h, w, 3), np.float32)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 25)
        cv2.circle(blobs, (int(cx), int(cy)), int(r), rng.uniform(-60, 60, 3).tolist(), -1)
    img = img + cv2.GaussianBlur(blobs, (0, 0), 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def drawn_face(size: int) -> np.ndarray:
    """A simple high-contrast cartoon face that OpenCV's frontal cascade detects (gray uint8)."""
    img = np.full((size, size), 200, np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c + 5), (int(size * 0.30), int(size * 0.40)), 0, 0, 360, 150, -1)
    ey, dx = int(c - size * 0.07), int(size * 0.12)
    for sx in (-1, 1):
        cv2.ellipse(img, (c + sx * dx, ey - int(size * 0.07)), (int(size * 0.08), int(size * 0.02)), 0, 0, 360, 50, -1)
        cv2.ellipse(img, (c + sx * dx, ey), (int(size * 0.06), int(size * 0.03)), 0, 0, 360, 220, -1)
        cv2.circle(img, (c + sx * dx, ey), int(size * 0.025), 20, -1)
    cv2.ellipse(img, (c, c + int(size * 0.08)), (int(size * 0.04), int(size * 0.02)), 0, 0, 360, 90, -1)
    cv2.ellipse(img, (c, c + int(size * 0.2)), (int(size * 0.1), int(size * 0.03)), 0, 0, 360, 60, -1)
    return cv2.GaussianBlur(img, (0, 0), 2)


def scene_with_faces(specs: list[tuple[int, int, int]], h: int = 420, w: int = 640) -> np.ndarray:
    """RGB photo with drawn faces at (x, y, size)."""
    g = np.full((h, w), 200, np.uint8)
    for x, y, s in specs:
        g[y : y + s, x : x + s] = drawn_face(s)
    return np.dstack([g, (g * 0.9).astype(np.uint8), (g * 0.8).astype(np.uint8)])


def footprint(a) -> np.ndarray:
    """Boolean mask of the photo pixels an aligned crop covers, grown by 2 px."""
    R_ = a.resolution
    inside = np.zeros(a.photo_size, np.uint8)
    pts = ((-0.5, -0.5), (R_ - 0.5, -0.5), (R_ - 0.5, R_ - 0.5), (-0.5, R_ - 0.5))
    corners = np.array([a.matrix @ np.array([x, y, 1.0]) for x, y in pts])
    cv2.fillConvexPoly(inside, np.round(corners).astype(np.int32), 1)
    return cv2.dilate(inside, np.ones((5, 5), np.uint8)).astype(bool)


# a face given by hand (bypassing detection): box and eyes in photo pixels
FACE = Face(box=(80, 40, 80, 80), eyes=((104.0, 70.4), (136.0, 70.4)))


# ----------------------------------------------------------------------------- reading


def test_read_formats_and_modes(tmp_path):
    rgb = smooth_photo(40, 50)
    for ext in ("png", "jpg", "webp", "bmp"):
        Image.fromarray(rgb).save(tmp_path / f"a.{ext}")
        a = read_photo(tmp_path / f"a.{ext}")
        assert a.shape == (40, 50, 3) and a.dtype == np.uint8
        assert psnr(a, rgb) > 30
    rgba = np.dstack([rgb, np.full((40, 50), 77, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_photo(tmp_path / "rgba.png"), rgba)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    g = read_photo(tmp_path / "gray.png")
    assert g.shape == (40, 50, 3) and np.array_equal(g[..., 1], rgb[..., 0])
    g16 = rgb[..., 0].astype(np.uint16) * 257
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.array_equal(read_photo(tmp_path / "g16.png")[..., 2], rgb[..., 0])
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    assert read_photo(tmp_path / "pal.png").shape == (40, 50, 3)


def test_exif_orientation(tmp_path):
    img = Image.fromarray(smooth_photo(30, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert read_photo(tmp_path / "rot.jpg").shape == (60, 30, 3)


def test_unreadable_files_give_clear_errors(tmp_path):
    (tmp_path / "x.png").write_text("hello, not an image")
    with pytest.raises(PhotoError, match=r"cannot read '.*x\.png': not an image file"):
        read_photo(tmp_path / "x.png")
    with pytest.raises(PhotoError, match=r"cannot read '.*missing\.jpg': no such file"):
        read_photo(tmp_path / "missing.jpg")
    Image.fromarray(smooth_photo(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError, match=r"trunc\.png.*truncated or corrupt"):
        read_photo(tmp_path / "trunc.png")
    with pytest.raises(PhotoError, match="directory"):
        read_photo(tmp_path)


def test_save_image(tmp_path):
    t = torch.rand(3, 16, 20) * 2 - 1
    p = save_image(t, tmp_path / "sub" / "o.png")
    back = read_photo(p)
    assert back.shape == (16, 20, 3)
    assert np.abs(back.astype(float) / 127.5 - 1 - t.permute(1, 2, 0).numpy()).max() < 0.01
    rgba = np.zeros((8, 8, 4), np.uint8)
    save_image(rgba, tmp_path / "o.jpg")  # alpha composited, no crash
    assert read_photo(tmp_path / "o.jpg").shape == (8, 8, 3)
    with pytest.raises(PhotoError, match=r"unknown image extension '\.gif'"):
        save_image(t, tmp_path / "o.gif")
    with pytest.raises(PhotoError, match="shape"):
        save_image(torch.zeros(5, 4, 4), tmp_path / "o.png")


# ----------------------------------------------------------------------------- detection


def test_no_face_error(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    assert detect_faces(noise) == []
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(NoFaceFound, match=r"no face found in '.*blank\.png'.*--box") as err:
        apply_to_photo(tmp_path / "blank.png", lambda x: x, R)
    assert isinstance(err.value, PhotoError)


def test_detects_drawn_faces_largest_first():
    photo = scene_with_faces([(60, 60, 220), (400, 120, 150)])
    faces = detect_faces(photo)
    assert len(faces) == 2
    (x, y, w, h), small = faces[0].box, faces[1].box
    assert 60 <= x + w / 2 <= 280 and 60 <= y + h / 2 <= 280 and w > small[2]
    assert 400 <= small[0] + small[2] / 2 <= 550
    assert faces[0].eyes is not None  # both eyes found → eye-based alignment
    (lx, ly), (rx, ry) = faces[0].eyes
    assert lx < 170 < rx and abs(ly - ry) < 8  # drawn eyes at x = 144, 196 (y ≈ 155)
    assert select_faces(faces, face_index=1) == [faces[1]]
    assert select_faces(faces, all_faces=True) == faces
    with pytest.raises(PhotoError, match="face_index 5 is out of range: found 2"):
        select_faces(faces, face_index=5)


def test_detects_tilted_face_with_rotation_fallback():
    photo = scene_with_faces([(150, 100, 200)], h=400, w=500)
    m = cv2.getRotationMatrix2D((250, 200), -35, 1.0)  # tilt 35° clockwise on screen
    tilted = cv2.warpAffine(photo, m, (500, 400), borderMode=cv2.BORDER_REPLICATE)
    faces = detect_faces(tilted)
    assert len(faces) == 1 and faces[0].source.startswith("frontal@")
    assert 30 < faces[0].angle < 40  # measured from the eyes found in the rotated search


# ----------------------------------------------------------------------------- alignment / paste-back


def test_align_puts_eyes_on_template():
    photo = smooth_photo()
    a = align(photo, FACE, R)
    assert a.crop.shape == (3, R, R) and a.crop.dtype == torch.float32
    assert -1 <= a.crop.min() and a.crop.max() <= 1
    t = AlignTemplate()
    for (u, v), (px, py) in zip((t.eye_left, t.eye_right), FACE.eyes):
        x, y = a.matrix @ np.array([u * R - 0.5, v * R - 0.5, 1.0])
        assert abs(x - px) < 1e-6 and abs(y - py) < 1e-6
    # dark dots drawn at the eyes appear at the template's eye positions in the crop
    dots = photo.copy()
    for px, py in FACE.eyes:
        cv2.circle(dots, (int(px), int(py)), 3, (0, 0, 0), -1)
    crop = align(dots, FACE, R).crop
    for u, v in (t.eye_left, t.eye_right):
        assert crop[:, int(v * R), int(u * R)].max() < -0.8


def test_box_only_alignment_and_custom_template():
    photo = smooth_photo()
    box_face = Face(box=FACE.box)
    a = align(photo, box_face, R)
    fb = np.array(AlignTemplate().face_box) * R - 0.5
    x0, y0 = a.matrix @ np.array([fb[0], fb[1], 1.0])
    assert abs(x0 - 80) < 1.0 and abs(y0 - 40) < 1.0 and abs(a.scale - 80 / (fb[2] - fb[0])) < 1e-6
    celeba = AlignTemplate.celeba()
    assert align(photo, FACE, R, celeba).template == celeba
    with pytest.raises(PhotoError, match="eye_left must lie left of eye_right"):
        AlignTemplate(eye_left=(0.7, 0.4), eye_right=(0.3, 0.4))
    with pytest.raises(PhotoError, match=r"face_box must be .* got"):
        AlignTemplate(face_box=(0.5, 0.5, 0.2, 0.9))


@pytest.mark.parametrize("face", [FACE, Face(box=(150, 100, 120, 120), angle=15.0)])
def test_identity_paste_back_reproduces_photo(face):
    photo = smooth_photo()
    a = align(photo, face, 96)
    out = paste_back(photo, a, a.crop)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert psnr(out, photo) > 35
    assert np.array_equal(paste_back(photo, a, a.crop, mode="residual"), photo)


def test_edit_changes_only_the_face_region():
    photo = smooth_photo()
    a = align(photo, FACE, R)
    out = paste_back(photo, a, -a.crop)  # a drastic edit: invert the crop
    changed = np.any(out != photo, axis=2)
    assert changed.any() and not changed[~footprint(a)].any()
    x, y, w, h = FACE.box
    core = changed[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
    assert core.mean() > 0.95
    # the feathered seam is soft: no large jump at the footprint edge
    face_mask = paste_back(photo, a, -a.crop, region="face")
    assert np.any(face_mask != photo) and np.sum(face_mask != photo) < np.sum(out != photo)


def test_apply_to_photo_with_box_rgba_and_gray(tmp_path):
    rgb = smooth_photo()
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    res = apply_to_photo(tmp_path / "in.png", lambda x: x, R, tmp_path / "out.png", box="80,40,80,80")
    assert res.output.shape == rgba.shape and np.array_equal(res.output[..., 3], rgba[..., 3])
    assert res.crops.shape == res.edited.shape == (1, 3, R, R) and res.boxes == [(80, 40, 80, 80)]
    back = read_photo(tmp_path / "out.png")
    assert back.shape == rgba.shape and psnr(back[..., :3], rgb) > 35
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg")
    res = apply_to_photo(tmp_path / "gray.jpg", lambda x: x * 0, R, tmp_path / "g.jpg", box=(80, 40, 80, 80), mode="residual")
    assert read_photo(tmp_path / "g.jpg").shape == rgb.shape
    with pytest.raises(PhotoError, match=r"model returned \(1, 3, 32, 32\), expected .*\(1, 3, 64, 64\)"):
        apply_to_photo(rgb, lambda x: x[..., :32, :32], R, box=(80, 40, 80, 80))


def test_apply_to_photo_detects_and_edits_all_faces(tmp_path):
    photo = scene_with_faces([(60, 60, 220), (400, 120, 150)])
    res = apply_to_photo(photo, lambda x: -x, R, tmp_path / "o.png", all_faces=True)
    assert len(res.faces) == 2 and res.edited.shape == (2, 3, R, R)
    changed = np.any(res.output != photo, axis=2)
    assert not changed[~(footprint(res.aligned[0]) | footprint(res.aligned[1]))].any()
    for x, y, w, h in res.boxes:
        assert changed[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3].mean() > 0.9


def test_parse_box_and_manual_box_errors():
    assert parse_box("1, 2,30,40") == (1, 2, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "0,0,-5,5", (1, 2, 3, float("nan"))):
        with pytest.raises(PhotoError, match="--box expects x,y,w,h"):
            parse_box(bad)
    with pytest.raises(PhotoError, match="outside the 240x180 photo"):
        face_from_box(smooth_photo(), "500,500,10,10")
