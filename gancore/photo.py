"""Apply a face model to a user's photo: read → detect → align → model → paste back → write.

Shared by every paper plugin's CLI verb (``gancore edit|age|rotate|rerender``)::

    from gancore.photo import apply_to_photo
    result = apply_to_photo("me.jpg", model_fn, resolution=128, out_path="me_edited.png")
    result.boxes              # [(x, y, w, h), ...] of the faces that were edited
    result.crops, result.edited   # [N, 3, R, R] in [-1, 1]: what the model saw and returned

``model_fn`` takes a float batch ``[N, 3, R, R]`` in [-1, 1] (CPU) and returns one of the same
shape; it may move it to any device.  Everything is offline: faces are found with OpenCV's
bundled Haar cascades (frontal face + eyes, then in-plane rotated and profile fallbacks), and
aligned with a similarity transform onto an :class:`AlignTemplate` (normalised crop
coordinates) that matches the training data.  See ``docs/photos.md``.

Coordinates: photo and crop pixel coordinates put pixel *centres* at integers (as OpenCV's
``warpAffine`` does); a normalised crop coordinate ``u`` in [0, 1] is pixel ``u * R - 0.5``.
Boxes are ``(x, y, w, h)`` in photo pixels.  "Left eye" means the eye on the image's left.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "PhotoError",
    "NoFaceFound",
    "AlignTemplate",
    "Face",
    "AlignedFace",
    "PhotoResult",
    "read_photo",
    "as_photo",
    "save_image",
    "detect_faces",
    "select_faces",
    "face_from_box",
    "parse_box",
    "align",
    "paste_back",
    "apply_to_photo",
]

Point = tuple[float, float]
Box = tuple[int, int, int, int]

#: where the eye centres of a real frontal face typically lie inside an OpenCV frontal Haar box,
#: as fractions of the box (x from its left, y from its top).  Used to choose the eye pair and
#: to keep the eye-based and box-based alignments consistent.
HAAR_EYES: tuple[Point, Point] = ((0.30, 0.38), (0.70, 0.38))

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


class PhotoError(ValueError):
    """A photo that cannot be read, written or processed; the message names the file/value."""


class NoFaceFound(PhotoError):
    """No face was detected in the photo (the CLI prints the message and exits with code 2)."""


# ----------------------------------------------------------------------------- template


@dataclass(frozen=True)
class AlignTemplate:
    """Where the face sits in an aligned square crop, in normalised [0, 1] crop coordinates.

    ``eye_left``/``eye_right`` are the eye centres (image-left / image-right eye) used when both
    eyes are detected; ``face_box = (x0, y0, x1, y1)`` is where a frontal Haar detection box
    lands in the crop, used when the eyes are not found.  The defaults match ``synthfaces`` (a
    frontal face centred in the square crop, eyes 24 % of the crop apart at 45 % height);
    :meth:`celeba` gives the usual CelebA 178×178 centre crop.  Plugins trained on other crops
    pass their own (``AlignTemplate.from_eyes(...)`` derives a consistent ``face_box``).
    """

    eye_left: Point = (0.38, 0.45)
    eye_right: Point = (0.62, 0.45)
    face_box: tuple[float, float, float, float] = (0.20, 0.222, 0.80, 0.822)

    def __post_init__(self) -> None:
        for name in ("eye_left", "eye_right"):
            p = getattr(self, name)
            if len(p) != 2 or not all(_finite(v) and 0.0 <= v <= 1.0 for v in p):
                raise PhotoError(f"AlignTemplate.{name} must be (x, y) in [0, 1], got {p!r}")
        if not self.eye_left[0] < self.eye_right[0]:
            raise PhotoError(
                f"AlignTemplate.eye_left must lie left of eye_right (image coordinates), got "
                f"{self.eye_left!r} and {self.eye_right!r}"
            )
        b = self.face_box
        if len(b) != 4 or not all(_finite(v) and 0.0 <= v <= 1.0 for v in b) or not (b[0] < b[2] and b[1] < b[3]):
            raise PhotoError(
                f"AlignTemplate.face_box must be (x0, y0, x1, y1) in [0, 1] with x0 < x1, y0 < y1, got {b!r}"
            )

    @classmethod
    def from_eyes(cls, eye_left: Point, eye_right: Point) -> AlignTemplate:
        """A template with ``face_box`` derived from the eyes by the typical Haar box geometry."""
        (ax, ay), (bx, by) = HAAR_EYES
        w = (eye_right[0] - eye_left[0]) / (bx - ax)
        x0 = eye_left[0] - ax * w
        y0 = (eye_left[1] + eye_right[1]) / 2 - ay * w
        box = tuple(round(min(1.0, max(0.0, v)), 4) for v in (x0, y0, x0 + w, y0 + w))
        return cls(eye_left=tuple(eye_left), eye_right=tuple(eye_right), face_box=box)  # type: ignore[arg-type]

    @classmethod
    def celeba(cls) -> AlignTemplate:
        """CelebA "aligned" images centre-cropped to 178×178 (rows 20..198), as StarGAN/AttGAN do."""
        return cls.from_eyes((69 / 178, 91 / 178), (108 / 178, 91 / 178))

    def pixels(self, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Eye centres and face box ``[x0, y0, x1, y1]`` in crop pixel coordinates."""
        r = float(resolution)
        to_px = lambda v: np.asarray(v, dtype=np.float64) * r - 0.5  # noqa: E731
        return to_px(self.eye_left), to_px(self.eye_right), to_px(self.face_box)


DEFAULT_TEMPLATE = AlignTemplate()


# ----------------------------------------------------------------------------- faces


@dataclass(frozen=True)
class Face:
    """One face in a photo.

    ``box``: ``(x, y, w, h)`` photo pixels.  ``eyes``: image-left and image-right eye centres in
    photo pixels, or ``None`` when they were not found.  ``angle``: in-plane tilt of the face in
    degrees (direction of the eye line, clockwise on screen), used for box-only alignment.
    ``source``: which detector found it (``frontal``, ``frontal@+25``, ``profile``,
    ``profile-mirrored``, ``manual``).
    """

    box: Box
    eyes: tuple[Point, Point] | None = None
    angle: float = 0.0
    source: str = "frontal"

    @property
    def area(self) -> int:
        return int(self.box[2]) * int(self.box[3])


@dataclass
class AlignedFace:
    """An aligned crop and the affine that maps crop pixels to photo pixels (for pasting back)."""

    crop: torch.Tensor  #: ``[3, R, R]`` float32 in [-1, 1]
    matrix: np.ndarray  #: ``[2, 3]`` float64, crop pixel (x, y, 1) → photo pixel (x, y)
    face: Face
    resolution: int
    template: AlignTemplate
    photo_size: tuple[int, int]  #: (height, width) of the photo it came from

    @property
    def inverse(self) -> np.ndarray:
        """``[2, 3]`` affine photo pixel → crop pixel."""
        return cv2_invert(self.matrix)

    @property
    def scale(self) -> float:
        """Photo pixels per crop pixel."""
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))


@dataclass
class PhotoResult:
    """What :func:`apply_to_photo` did: the photo before/after and each face's crop and output."""

    photo: np.ndarray  #: the input, ``[H, W, 3|4]`` uint8
    output: np.ndarray  #: the result, same shape as ``photo``
    faces: list[Face]
    aligned: list[AlignedFace]
    crops: torch.Tensor  #: ``[N, 3, R, R]`` in [-1, 1], what the model saw
    edited: torch.Tensor  #: ``[N, 3, R, R]`` in [-1, 1], what the model returned
    out_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def boxes(self) -> list[Box]:
        return [f.box for f in self.faces]


# ----------------------------------------------------------------------------- reading / writing


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a dependency
        raise PhotoError(f"face detection needs opencv-python-headless<5 ({exc})") from exc
    if not hasattr(cv2, "CascadeClassifier"):  # pragma: no cover - OpenCV 5 dropped it
        raise PhotoError(
            f"OpenCV {cv2.__version__} has no CascadeClassifier; install opencv-python-headless<5"
        )
    return cv2


def cv2_invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _pil_to_array(img: Any, name: str) -> np.ndarray:
    """A PIL image of any mode → ``[H, W, 3]`` (or ``[H, W, 4]`` if it has alpha) uint8."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"), dtype=np.uint8).copy()
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.size and a.max() > 255):
            a = a / 257.0  # 16-bit range → 8-bit
        elif mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGB")
    out = np.asarray(img, dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:  # pragma: no cover - defensive
        raise PhotoError(f"cannot read {name!r}: unsupported image mode {mode!r}")
    return out.copy()


def read_photo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read JPEG/PNG/WebP/BMP/... into ``[H, W, 3]`` RGB uint8 (``[H, W, 4]`` RGBA if it has alpha).

    EXIF orientation is applied; grayscale, palette and 16-bit images become 8-bit RGB.
    Raises :class:`PhotoError` naming the file for anything unreadable.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise PhotoError(f"cannot read '{p}': no such file")
    if p.is_dir():
        raise PhotoError(f"cannot read '{p}': it is a directory, expected an image file")
    try:
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _pil_to_array(img, str(p))
    except UnidentifiedImageError:
        raise PhotoError(
            f"cannot read '{p}': not an image file (expected JPEG, PNG, WebP, BMP, ...)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise PhotoError(f"cannot read '{p}': image is too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(f"cannot read '{p}': file is truncated or corrupt ({exc})") from None


def as_photo(photo: Any) -> np.ndarray:
    """Accept a path, a PIL image or a uint8 array; return ``[H, W, 3|4]`` uint8."""
    if isinstance(photo, (str, os.PathLike)):
        return read_photo(photo)
    try:
        from PIL import Image

        if isinstance(photo, Image.Image):
            return _pil_to_array(photo, "<PIL image>")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(photo, np.ndarray):
        a = photo
        if a.dtype == np.uint16:
            a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        if a.dtype != np.uint8:
            raise PhotoError(f"photo array must be uint8 (or uint16), got dtype {photo.dtype}")
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
            raise PhotoError(f"photo array must be [H, W], [H, W, 3] or [H, W, 4], got shape {tuple(photo.shape)}")
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        return np.ascontiguousarray(a)
    raise PhotoError(f"expected a photo path, PIL image or uint8 array, got {type(photo).__name__}")


def _to_uint8_image(image: Any) -> np.ndarray:
    """Tensor in [-1, 1] (``[3,H,W]``, ``[1,3,H,W]``, ``[H,W]``, ``[1,H,W]``) or uint8 array → HWC uint8."""
    if isinstance(image, torch.Tensor):
        t = image.detach().to("cpu", torch.float32)
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise PhotoError(
                f"save_image expects a tensor [3, H, W] or [1, 3, H, W] in [-1, 1], got shape {tuple(image.shape)}"
            )
        if not torch.isfinite(t).all():
            raise PhotoError("save_image: tensor contains NaN or infinite values")
        a = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return a
    return as_photo(image)


def save_image(image: Any, path: str | os.PathLike[str], *, quality: int = 95) -> Path:
    """Write a tensor in [-1, 1] or a uint8 array/PIL image as PNG/JPEG/WebP/BMP (by extension).

    Alpha is kept for PNG/WebP; JPEG/BMP get it composited over white.  Parent folders are
    created and the file is written atomically.
    """
    from PIL import Image

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise PhotoError(
            f"cannot write '{p}': unknown image extension {p.suffix!r} (expected one of {', '.join(IMAGE_SUFFIXES)})"
        )
    a = _to_uint8_image(image)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 4 and suffix in (".jpg", ".jpeg", ".bmp"):
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.rint(a[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(a), "RGBA" if a.shape[2] == 4 else "RGB")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}[suffix]
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=p.parent)
        os.close(fd)
        try:
            img.save(tmp, fmt, **kwargs)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise PhotoError(f"cannot write '{p}': {exc}") from None
    return p


# ----------------------------------------------------------------------------- detection

_CASCADES: dict[str, Any] = {}


def _cascade(name: str) -> Any:
    cv2 = _cv2()
    if name not in _CASCADES:
        path = os.path.join(cv2.data.haarcascades, name)
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise PhotoError(f"cannot load OpenCV cascade '{path}' (is opencv-python-headless<5 installed?)")
        _CASCADES[name] = c
    return _CASCADES[name]


def _gray(photo: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    # no histogram equalisation: the cascades normalise each window's variance themselves,
    # and equalising flat (synthetic, studio-backdrop) images destroys detections.
    return cv2.cvtColor(np.ascontiguousarray(photo[..., :3]), cv2.COLOR_RGB2GRAY)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _find_eyes(gray: np.ndarray, box: Sequence[int]) -> tuple[Point, Point] | None:
    """Best image-left/right eye pair inside a face box of ``gray`` (pixel-centre coordinates)."""
    x, y, w, h = (int(v) for v in box)
    H, W = gray.shape
    y0, y1 = max(0, y + int(0.12 * h)), min(H, y + int(0.62 * h))
    x0, x1 = max(0, x), min(W, x + w)
    if y1 - y0 < 8 or x1 - x0 < 16:
        return None
    roi = gray[y0:y1, x0:x1]
    min_eye = max(6, int(w * 0.10))
    max_eye = max(min_eye + 1, int(w * 0.40))
    (ax, ay), (bx, by) = HAAR_EYES
    for name in ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml"):
        found = _cascade(name).detectMultiScale(
            roi, scaleFactor=1.1, minNeighbors=3, minSize=(min_eye, min_eye), maxSize=(max_eye, max_eye)
        )
        centres = [(x0 + ex + (ew - 1) / 2.0, y0 + ey + (eh - 1) / 2.0, ew) for ex, ey, ew, eh in found]
        best: tuple[float, tuple[Point, Point]] | None = None
        for i, (lx, ly, lw) in enumerate(centres):
            for rx, ry, rw in centres[i + 1 :]:
                if rx < lx:
                    (lx, ly, lw), (rx, ry, rw) = (rx, ry, rw), (lx, ly, lw)
                dist = math.hypot(rx - lx, ry - ly)
                if not (0.22 * w <= dist <= 0.70 * w) or abs(ry - ly) > 0.35 * dist:
                    continue
                if not (lx < x + 0.5 * w < rx) or max(lw, rw) > 1.8 * min(lw, rw):
                    continue
                err = (
                    math.hypot((lx - x) / w - ax, (ly - y) / h - ay)
                    + math.hypot((rx - x) / w - bx, (ry - y) / h - by)
                )
                if best is None or err < best[0]:
                    best = (err, ((lx, ly), (rx, ry)))
        if best is not None:
            return best[1]
    return None


def _detect(gray: np.ndarray, cascade: str, min_size: int, min_neighbors: int) -> list[tuple[int, int, int, int]]:
    found = _cascade(cascade).detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(min_size, min_size)
    )
    return [tuple(int(v) for v in b) for b in found]  # type: ignore[misc]


def _rotated(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``gray`` rotated counter-clockwise on screen by ``degrees`` on an enlarged canvas, and
    the 2×3 affine original → rotated."""
    cv2 = _cv2()
    H, W = gray.shape
    m = cv2.getRotationMatrix2D(((W - 1) / 2.0, (H - 1) / 2.0), degrees, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(math.ceil(W * c + H * s)), int(math.ceil(W * s + H * c))
    m[0, 2] += (nw - W) / 2.0
    m[1, 2] += (nh - H) / 2.0
    out = cv2.warpAffine(gray, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, m


def _apply(m: np.ndarray, x: float, y: float) -> Point:
    return (float(m[0, 0] * x + m[0, 1] * y + m[0, 2]), float(m[1, 0] * x + m[1, 1] * y + m[1, 2]))


def detect_faces(
    photo: Any,
    *,
    eyes: bool = True,
    rotations: Sequence[float] = (-25.0, 25.0),
    profile: bool = True,
    min_size: int | None = None,
    min_neighbors: int = 5,
    max_side: int = 1280,
) -> list[Face]:
    """All faces in ``photo``, largest first (an empty list when there is none).

    Frontal Haar cascade first (with eye search inside each box).  Only when it finds nothing:
    the frontal cascade on the photo rotated by each of ``rotations`` degrees (tilted heads),
    then the profile cascade on the photo and on its mirror image (faces turned either way).
    Photos larger than ``max_side`` are searched at reduced size; boxes are in full-size pixels.
    """
    cv2 = _cv2()
    img = as_photo(photo)
    H, W = img.shape[:2]
    gray_full = _gray(img)
    scale = min(1.0, max_side / float(max(H, W)))
    gray = gray_full
    if scale < 1.0:
        small = (max(1, round(W * scale)), max(1, round(H * scale)))
        gray = cv2.resize(gray_full, small, interpolation=cv2.INTER_AREA)
    sx, sy = W / gray.shape[1], H / gray.shape[0]
    ms = int(min_size) if min_size is not None else max(24, int(0.04 * min(gray.shape)))
    ms = min(ms, max(8, min(gray.shape) - 1))

    def full_box(cx: float, cy: float, w: float, h: float) -> Box:
        """Box centred on (cx, cy) in detection pixels → integer box in photo pixels."""
        fw, fh = w * sx, h * sy
        fx, fy = (cx + 0.5) * sx - 0.5 - (fw - 1) / 2, (cy + 0.5) * sy - 0.5 - (fh - 1) / 2
        return (int(round(fx)), int(round(fy)), max(1, int(round(fw))), max(1, int(round(fh))))

    faces: list[Face] = []
    for b in _detect(gray, "haarcascade_frontalface_default.xml", ms, min_neighbors):
        x, y, w, h = b
        box = full_box(x + (w - 1) / 2, y + (h - 1) / 2, w, h)
        faces.append(_face_with_eyes(gray_full, box, "frontal", eyes))

    if not faces:
        for deg in rotations:
            rg, m = _rotated(gray, float(deg))
            inv = cv2_invert(m)
            for x, y, w, h in _detect(rg, "haarcascade_frontalface_default.xml", ms, min_neighbors):
                cx, cy = _apply(inv, x + (w - 1) / 2, y + (h - 1) / 2)
                box = full_box(cx, cy, w, h)
                face_eyes = None
                if eyes:
                    e = _find_eyes(rg, (x, y, w, h))
                    if e is not None:
                        pts = [_apply(inv, *p) for p in e]
                        pts = [((px + 0.5) * sx - 0.5, (py + 0.5) * sy - 0.5) for px, py in pts]
                        face_eyes = (pts[0], pts[1])
                angle = float(deg)
                if face_eyes is not None:
                    (lx, ly), (rx, ry) = face_eyes
                    angle = math.degrees(math.atan2(ry - ly, rx - lx))
                faces.append(Face(box=box, eyes=face_eyes, angle=angle, source=f"frontal@{deg:+g}"))

    if not faces and profile:
        flipped = np.ascontiguousarray(gray[:, ::-1])
        gw = gray.shape[1]
        for src, g in (("profile", gray), ("profile-mirrored", flipped)):
            for x, y, w, h in _detect(g, "haarcascade_profileface.xml", ms, min_neighbors):
                if src == "profile-mirrored":
                    x = gw - x - w
                faces.append(Face(box=full_box(x + (w - 1) / 2, y + (h - 1) / 2, w, h), source=src))

    kept: list[Face] = []
    for f in faces:  # earlier (higher-priority) detections win over overlapping later ones
        if all(_iou(f.box, k.box) <= 0.3 for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.area, reverse=True)
    return kept


def _face_with_eyes(gray_full: np.ndarray, box: Box, source: str, eyes: bool) -> Face:
    e = _find_eyes(gray_full, box) if eyes else None
    angle = math.degrees(math.atan2(e[1][1] - e[0][1], e[1][0] - e[0][0])) if e else 0.0
    return Face(box=box, eyes=e, angle=angle, source=source)


def parse_box(text: str | Sequence[float]) -> Box:
    """``"x,y,w,h"`` (or a 4-sequence) → integer box; :class:`PhotoError` on anything else."""
    parts: Sequence[Any] = text.replace(" ", "").split(",") if isinstance(text, str) else text
    try:
        vals = [float(v) for v in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
        raise PhotoError(f"--box expects x,y,w,h in pixels with w, h > 0 (e.g. 120,80,200,200), got {text!r}")
    return tuple(int(round(v)) for v in vals)  # type: ignore[return-value]


def face_from_box(photo: Any, box: str | Sequence[float], *, eyes: bool = True) -> Face:
    """A :class:`Face` from a hand-given box (``--box``), with eyes searched inside it."""
    img = as_photo(photo)
    b = parse_box(box)
    H, W = img.shape[:2]
    x, y, w, h = b
    if x >= W or y >= H or x + w <= 0 or y + h <= 0:
        raise PhotoError(f"box {x},{y},{w},{h} lies outside the {W}x{H} photo")
    return _face_with_eyes(_gray(img), b, "manual", eyes)


def select_faces(
    faces: list[Face], *, face_index: int = 0, all_faces: bool = False, name: str = "the photo"
) -> list[Face]:
    """Pick the faces to process (largest first); :class:`NoFaceFound` when there is none."""
    if not faces:
        raise NoFaceFound(
            f"no face found in {name}: the detector (OpenCV Haar cascades) needs a roughly frontal "
            "face of at least ~40 px; give the face box by hand with --box x,y,w,h"
        )
    if all_faces:
        return list(faces)
    if not -len(faces) <= face_index < len(faces):
        raise PhotoError(
            f"face_index {face_index} is out of range: found {len(faces)} face(s) in {name} "
            f"(valid: 0..{len(faces) - 1}, largest first)"
        )
    return [faces[face_index]]


# ----------------------------------------------------------------------------- alignment


def _similarity(src: Sequence[Point], dst: Sequence[Point]) -> np.ndarray:
    """2×3 similarity mapping src[0]→dst[0], src[1]→dst[1] exactly."""
    s0, s1 = complex(*src[0]), complex(*src[1])
    d0, d1 = complex(*dst[0]), complex(*dst[1])
    if abs(s1 - s0) < 1e-9 or abs(d1 - d0) < 1e-9:
        raise PhotoError(f"cannot align: eye points coincide ({dst[0]}, {dst[1]})")
    a = (d1 - d0) / (s1 - s0)
    b = d0 - a * s0
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def alignment_matrix(face: Face, resolution: int, template: AlignTemplate | None = None) -> np.ndarray:
    """2×3 affine crop pixel → photo pixel putting ``face`` where ``template`` expects it."""
    t = template or DEFAULT_TEMPLATE
    el, er, fb = t.pixels(resolution)
    if face.eyes is not None:
        return _similarity([tuple(el), tuple(er)], face.eyes)
    x, y, w, h = face.box
    crop_w, crop_h = fb[2] - fb[0], fb[3] - fb[1]
    s = math.sqrt((w * h) / (crop_w * crop_h))
    a = s * complex(math.cos(math.radians(face.angle)), math.sin(math.radians(face.angle)))
    cc = complex((fb[0] + fb[2]) / 2, (fb[1] + fb[3]) / 2)
    pc = complex(x + (w - 1) / 2, y + (h - 1) / 2)
    b = pc - a * cc
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def _footprint(m: np.ndarray, resolution: int, shape: tuple[int, int], pad: float) -> tuple[int, int, int, int] | None:
    """Photo-pixel bounding rectangle ``(x0, y0, x1, y1)`` (exclusive) of the crop, clipped."""
    r = resolution - 0.5
    pts = np.array([_apply(m, cx, cy) for cx, cy in ((-0.5, -0.5), (r, -0.5), (-0.5, r), (r, r))])
    H, W = shape
    x0 = max(0, int(math.floor(pts[:, 0].min() - pad)))
    y0 = max(0, int(math.floor(pts[:, 1].min() - pad)))
    x1 = min(W, int(math.ceil(pts[:, 0].max() + pad)) + 1)
    y1 = min(H, int(math.ceil(pts[:, 1].max() + pad)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def align(photo: Any, face: Face, resolution: int, template: AlignTemplate | None = None) -> AlignedFace:
    """Cut the face out of ``photo`` as the training data was aligned: ``[3, R, R]`` in [-1, 1].

    Uses a similarity transform from the eyes when both were found, else from the face box
    (and ``face.angle``).  Large faces are area-downsampled first so the crop is not aliased;
    parts of the crop outside the photo are filled by reflection.
    """
    cv2 = _cv2()
    if not isinstance(resolution, int) or isinstance(resolution, bool) or not 8 <= resolution <= 4096:
        raise PhotoError(f"resolution must be an integer in 8..4096, got {resolution!r}")
    img = as_photo(photo)
    H, W = img.shape[:2]
    t = template or DEFAULT_TEMPLATE
    m = alignment_matrix(face, resolution, t)
    s = float(math.hypot(m[0, 0], m[1, 0]))
    rect = _footprint(m, resolution, (H, W), pad=2 * s + 2)
    rgb = np.ascontiguousarray(img[..., :3])
    if rect is None:
        raise PhotoError(f"face box {face.box} lies outside the {W}x{H} photo")
    x0, y0, x1, y1 = rect
    roi = rgb[y0:y1, x0:x1]
    # crop px → roi px
    m_roi = m.copy()
    m_roi[0, 2] -= x0
    m_roi[1, 2] -= y0
    if s > 1.5:  # shrink the region first (area average) so the warp does not alias
        nw, nh = max(1, round(roi.shape[1] / s)), max(1, round(roi.shape[0] / s))
        fx, fy = nw / roi.shape[1], nh / roi.shape[0]
        roi = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
        m_roi = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5]]) @ np.vstack([m_roi, [0, 0, 1]])
    crop = cv2.warpAffine(
        roi, m_roi, (resolution, resolution),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101,
    )
    tensor = torch.from_numpy(crop).permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()
    return AlignedFace(crop=tensor, matrix=m, face=face, resolution=resolution, template=t, photo_size=(H, W))


# ----------------------------------------------------------------------------- paste-back


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def blend_mask(
    resolution: int, feather: float = 0.08, region: str = "crop", template: AlignTemplate | None = None
) -> np.ndarray:
    """``[R, R]`` float32 mask in [0, 1] (crop space): 1 inside, a soft ramp ``feather × R``
    wide, exactly 0 on the crop's outermost pixels.  ``region="face"`` limits it to an
    ellipse around the template's face box (keeps the photo's own background/hair)."""
    if not (_finite(feather) and 0.0 <= feather <= 0.5):
        raise PhotoError(f"feather must be a fraction of the crop size in [0, 0.5], got {feather!r}")
    if region not in ("crop", "face"):
        raise PhotoError(f"region must be 'crop' or 'face', got {region!r}")
    R = resolution
    i = np.arange(R, dtype=np.float64)
    edge = np.minimum(i, R - 1 - i)  # 0 on the outermost pixel
    width = max(1.0, feather * R)
    ramp = _smoothstep(edge / width)
    mask = np.minimum(ramp[None, :], ramp[:, None])
    if region == "face":
        t = template or DEFAULT_TEMPLATE
        _, _, fb = t.pixels(R)
        cx, cy = (fb[0] + fb[2]) / 2, (fb[1] + fb[3]) / 2
        ax, ay = 0.62 * (fb[2] - fb[0]), 0.70 * (fb[3] - fb[1])
        xx, yy = np.meshgrid(i, i)
        r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
        mask = mask * _smoothstep((1.0 - r) * min(ax, ay) / width)
    return mask.astype(np.float32)


def _crop_to_hwc(edited: Any, resolution: int) -> np.ndarray:
    if not isinstance(edited, torch.Tensor):
        edited = torch.as_tensor(np.asarray(edited))
    t = edited.detach().to("cpu", torch.float32)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if tuple(t.shape) != (3, resolution, resolution):
        raise PhotoError(
            f"edited crop must have shape [3, {resolution}, {resolution}] in [-1, 1], got {tuple(edited.shape)}"
        )
    if not torch.isfinite(t).all():
        raise PhotoError("edited crop contains NaN or infinite values")
    return ((t.clamp(-1, 1) + 1.0) * 127.5).permute(1, 2, 0).numpy().astype(np.float32)


def paste_back(
    photo: Any,
    aligned: AlignedFace,
    edited_crop: Any,
    *,
    feather: float = 0.08,
    region: str = "crop",
    mode: Literal["replace", "residual"] = "replace",
) -> np.ndarray:
    """Warp ``edited_crop`` (``[3, R, R]`` in [-1, 1]) back into ``photo`` and blend it in.

    The crop is warped with the inverse alignment and mixed with a feathered mask
    (:func:`blend_mask`), so no seam shows and pixels outside the crop's footprint are untouched.
    ``mode="residual"`` adds only the change ``edited - crop`` (keeps the photo's full-resolution
    detail; right for small edits such as attributes/age); ``"replace"`` pastes the output
    itself (needed when the model redraws the face, e.g. pose rotation).
    Returns a uint8 array of the photo's size: RGB, or RGBA with the original alpha.
    """
    cv2 = _cv2()
    if mode not in ("replace", "residual"):
        raise PhotoError(f"mode must be 'replace' or 'residual', got {mode!r}")
    img = as_photo(photo)
    H, W = img.shape[:2]
    if (H, W) != tuple(aligned.photo_size):
        ah, aw = aligned.photo_size
        raise PhotoError(f"photo is {W}x{H} but the face was aligned on a {aw}x{ah} photo")
    R = aligned.resolution
    new = _crop_to_hwc(edited_crop, R)
    if mode == "residual":
        new = new - _crop_to_hwc(aligned.crop, R)
    mask = blend_mask(R, feather, region, aligned.template)
    out = img.copy()
    rect = _footprint(aligned.matrix, R, (H, W), pad=2.0)
    if rect is None:
        return out
    x0, y0, x1, y1 = rect
    # photo roi px → crop px
    inv = cv2_invert(aligned.matrix) @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(
        new, inv, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    m = cv2.warpAffine(
        mask, inv, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
    )
    m = np.clip(m, 0.0, 1.0)[..., None]
    base = img[y0:y1, x0:x1, :3].astype(np.float32)
    if mode == "residual":
        blended = base + m * warped
    else:
        blended = base * (1.0 - m) + warped * m
    out[y0:y1, x0:x1, :3] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- the whole thing


def apply_to_photo(
    path: Any,
    fn: Callable[[torch.Tensor], torch.Tensor],
    resolution: int,
    out_path: str | os.PathLike[str] | None = None,
    template: AlignTemplate | None = None,
    all_faces: bool = False,
    *,
    face_index: int = 0,
    box: str | Sequence[float] | None = None,
    feather: float = 0.08,
    region: str = "crop",
    mode: Literal["replace", "residual"] = "replace",
    batch_size: int = 16,
) -> PhotoResult:
    """Read → detect (or use ``box``) → align → ``fn(crops)`` → paste back → write ``out_path``.

    ``fn`` maps ``[N, 3, R, R]`` in [-1, 1] to the same shape (called under ``torch.no_grad``,
    at most ``batch_size`` faces at a time).  Raises :class:`NoFaceFound` when no face is found,
    :class:`PhotoError` for unreadable files, bad boxes or a wrongly shaped model output.
    """
    name = f"'{path}'" if isinstance(path, (str, os.PathLike)) else "the photo"
    img = as_photo(path)
    if box is not None:
        faces = [face_from_box(img, box)]
    else:
        faces = select_faces(detect_faces(img), face_index=face_index, all_faces=all_faces, name=name)
    t = template or DEFAULT_TEMPLATE
    aligned = [align(img, f, resolution, t) for f in faces]
    crops = torch.stack([a.crop for a in aligned])
    outs = []
    with torch.no_grad():
        for i in range(0, len(aligned), max(1, int(batch_size))):
            batch = crops[i : i + batch_size]
            y = fn(batch.clone())
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(batch.shape):
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise PhotoError(
                    f"the model returned {got}, expected a tensor of shape {tuple(batch.shape)} in [-1, 1]"
                )
            outs.append(y.detach().to("cpu", torch.float32))
    edited = torch.cat(outs).clamp(-1, 1)
    output = img
    for a, e in zip(aligned, edited):
        output = paste_back(output, a, e, feather=feather, region=region, mode=mode)
    written = save_image(output, out_path) if out_path is not None else None
    return PhotoResult(
        photo=img, output=output, faces=faces, aligned=aligned, crops=crops, edited=edited, out_path=written
    )
