"""Robust image loading for datasets read from a user's disk.

:func:`load_image` turns one file into a ``FloatTensor[3, R, R]`` in [-1, 1], whatever
the file holds: JPEG or PNG, grayscale, RGBA or palette with transparency (composited on
a neutral background), 16-bit PNG, CMYK, EXIF-rotated photos, and huge images (decoded
at reduced size where the format allows, then reduced before resampling).  A file that
cannot be decoded (missing, truncated, corrupt, absurdly large) raises :class:`BadImage`.

:class:`ImageFolderLoader` loads a batch with a small thread pool.  It never raises for
a bad file: it records it in a :class:`LoadReport`, remembers it, and replaces the
sample by the next readable index (deterministically: the replacement depends only on
which files are bad), so a batch always has the size asked for.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .base import DataError

__all__ = ["BadImage", "Crop", "load_image", "LoadReport", "ImageFolderLoader"]

log = logging.getLogger("gancore.data")

#: ``"center"`` (largest centred square), ``"stretch"`` (whole image, aspect not kept)
#: or a box ``(left, top, right, bottom)`` in pixels.
Crop = Union[str, tuple[float, float, float, float]]

#: files larger than this many pixels are refused (PIL's decompression-bomb limit × 2).
MAX_PIXELS = 2 * 89_478_485
#: images above this many pixels are noted as "huge" in a :class:`LoadReport`.
HUGE_PIXELS = 4_000_000


class BadImage(DataError):
    """A file that cannot be turned into an image; ``reason`` is a short category."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def _box(crop: Crop, size: tuple[int, int], reference: tuple[int, int] | None) -> tuple[float, ...]:
    """The crop box in pixels of an image of ``size`` (after EXIF rotation)."""
    w, h = size
    if isinstance(crop, str):
        if crop == "center":
            s = min(w, h)
            return ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        if crop == "stretch":
            return (0.0, 0.0, float(w), float(h))
        raise ValueError(f"crop must be 'center', 'stretch' or a (left, top, right, bottom) box, not {crop!r}")
    if len(crop) != 4:
        raise ValueError(f"a crop box has 4 numbers (left, top, right, bottom), not {crop!r}")
    left, top, right, bottom = (float(v) for v in crop)
    if reference is not None:  # box given for a reference size: scale to this image
        sx, sy = w / reference[0], h / reference[1]
        left, right, top, bottom = left * sx, right * sx, top * sy, bottom * sy
    return (max(0.0, left), max(0.0, top), min(float(w), right), min(float(h), bottom))


def _to_rgb(img: Image.Image, background: tuple[int, int, int], notes: set[str]) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, noting what was converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" or mode == "PA":
        notes.add("palette")
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            notes.add("16-bit")
            arr = arr / 257.0
        elif mode == "I":
            notes.add("16-bit" if arr.max(initial=0) > 255 else "grayscale")
            arr = arr / 257.0 if arr.max(initial=0) > 255 else arr
        else:  # float image: [0, 1] or [0, 255]
            notes.add("float")
            arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        notes.add("grayscale")
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("1", "L"):
        notes.add("grayscale")
        return img.convert("RGB")
    if mode in ("LA", "La", "RGBA", "RGBa"):
        notes.add("alpha")
        if mode in ("LA", "La"):
            notes.add("grayscale")
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "CMYK":
        notes.add("cmyk")
        return img.convert("RGB")
    notes.add(mode.lower())  # YCbCr, LAB, HSV, RGBX, ...
    return img.convert("RGB")


def _is_16bit(img: Image.Image) -> bool:
    """A 48/64-bit PNG that PIL decodes to 8-bit RGB(A) (its tile rawmode says 16)."""
    return any(str(getattr(t, "args", "") or "").endswith("16B") for t in getattr(img, "tile", []) or [])


def _decode(
    path: str | Path,
    resolution: int,
    crop: Crop,
    reference: tuple[int, int] | None,
    background: tuple[int, int, int],
) -> tuple[torch.Tensor, set[str]]:
    """The work of :func:`load_image`; also returns the conversions made."""
    notes: set[str] = set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette chatter; real failures raise
            with Image.open(path) as img:
                w0, h0 = img.size
                if w0 * h0 > MAX_PIXELS:
                    raise BadImage(path, "too large", f"{w0}x{h0} pixels")
                if w0 * h0 > HUGE_PIXELS:
                    notes.add("huge")
                if _is_16bit(img):
                    notes.add("16-bit")
                orientation = img.getexif().get(0x0112, 1)
                if orientation not in (1, None):
                    notes.add("exif-rotated")
                # decode big JPEGs at reduced size: the crop must still be ≥ resolution
                if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                    ow, oh = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
                    bx = _box(crop, (ow, oh), reference)
                    side = min(bx[2] - bx[0], bx[3] - bx[1])
                    if side > 2 * resolution:
                        scale = resolution / side
                        img.draft(img.mode, (max(1, int(w0 * scale)), max(1, int(h0 * scale))))
                img.load()
                if orientation not in (1, None):
                    img = ImageOps.exif_transpose(img)
                img = _to_rgb(img, background, notes)
    except BadImage:
        raise
    except FileNotFoundError as e:
        raise BadImage(path, "missing", str(e)) from None
    except Image.DecompressionBombError as e:
        raise BadImage(path, "too large", str(e)) from None
    except Image.UnidentifiedImageError:
        raise BadImage(path, "not an image", "PIL cannot identify the format") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, ZeroDivisionError) as e:
        reason = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise BadImage(path, reason, f"{type(e).__name__}: {e}") from None
    box = _box(crop, img.size, reference)
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise BadImage(path, "empty crop", f"crop {crop} of a {img.size[0]}x{img.size[1]} image")
    out = img.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)
    arr = np.asarray(out, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
    return t, notes


def load_image(
    path: str | Path,
    resolution: int,
    crop: Crop = "center",
    *,
    reference: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (128, 128, 128),
) -> torch.Tensor:
    """Load one image as ``FloatTensor[3, resolution, resolution]`` in [-1, 1].

    :param crop: ``"center"``, ``"stretch"`` or a ``(left, top, right, bottom)`` box in
        pixels of the (EXIF-rotated) image; the box is clipped to the image.
    :param reference: if given, ``crop`` is a box in pixels of an image of this
        ``(width, height)`` and is scaled to the actual size.
    :param background: RGB that transparent pixels are composited on.
    :raises BadImage: missing, truncated, corrupt or too-large files.
    """
    return _decode(path, resolution, crop, reference, background)[0]


@dataclass
class LoadReport:
    """What an :class:`ImageFolderLoader` met: conversions and skipped files (each file once)."""

    loaded: int = 0
    converted: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    replaced: int = 0
    keep_examples: int = 5

    def _example(self, key: str, path: str) -> None:
        paths = self.examples.setdefault(key, [])
        if len(paths) < self.keep_examples:
            paths.append(path)

    def note_converted(self, path: str, notes: set[str]) -> None:
        for n in sorted(notes):
            self.converted[n] += 1
            self._example(n, path)

    def note_skipped(self, path: str, reason: str) -> None:
        self.skipped[reason] += 1
        self._example(reason, path)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line per kind of event, with the first few paths."""
        lines = [f"{self.loaded} images loaded, {self.num_skipped} files skipped, {self.replaced} samples replaced"]
        for title, counts in (("converted", self.converted), ("skipped", self.skipped)):
            for key, count in sorted(counts.items()):
                lines.append(f"  {title} {key}: {count} (e.g. {', '.join(self.examples.get(key, []))})")
        return "\n".join(lines)


class ImageFolderLoader:
    """Loads batches of image files with a small thread pool, never failing on a bad file.

    A bad file is counted in :attr:`report`, remembered, and its sample replaced by the
    next index whose file is readable (wrapping around), so the batch keeps its size and
    the replacement is the same in every run.
    """

    def __init__(
        self,
        resolution: int,
        crop: Crop = "center",
        *,
        reference: tuple[int, int] | None = None,
        background: tuple[int, int, int] = (128, 128, 128),
        workers: int = 4,
        max_consecutive_bad: int = 1000,
    ) -> None:
        self.resolution, self.crop, self.reference, self.background = resolution, crop, reference, background
        self.workers = max(1, workers)
        self.max_consecutive_bad = max_consecutive_bad
        self.report = LoadReport()
        self.bad: set[int] = set()
        self._seen: set[str] = set()

    def _one(self, path: str | Path) -> tuple[torch.Tensor | None, set[str] | BadImage]:
        try:
            return _decode(path, self.resolution, self.crop, self.reference, self.background)
        except BadImage as e:
            return None, e

    def _map(self, paths: list[str | Path]) -> list[tuple[torch.Tensor | None, set[str] | BadImage]]:
        if self.workers == 1 or len(paths) == 1:
            return [self._one(p) for p in paths]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(paths))) as pool:
            return list(pool.map(self._one, paths))

    def _record(self, path: str | Path, result: set[str] | BadImage) -> None:
        key = str(path)
        if isinstance(result, BadImage):
            if key not in self._seen:
                self._seen.add(key)
                self.report.note_skipped(key, result.reason)
                log.warning("skipping unreadable image %s", result)
            return
        self.report.loaded += 1
        if result and key not in self._seen:
            self._seen.add(key)
            self.report.note_converted(key, result)

    def load_paths(self, paths: Sequence[str | Path]) -> tuple[torch.Tensor, list[int]]:
        """Load ``paths``; returns the images of the readable ones and their positions."""
        results = self._map(list(paths))
        images, kept = [], []
        for k, (path, (img, res)) in enumerate(zip(paths, results)):
            self._record(path, res)
            if img is not None:
                images.append(img)
                kept.append(k)
        r = self.resolution
        return (torch.stack(images) if images else torch.empty(0, 3, r, r)), kept

    def load(
        self, indices: Sequence[int], path_of: Callable[[int], str | Path], count: int
    ) -> tuple[torch.Tensor, list[int]]:
        """Load samples ``indices`` of ``count``; returns images ``[B, 3, R, R]`` and the
        indices actually used (a bad sample's next readable index)."""
        if count <= 0:
            raise DataError("cannot load from an empty data source")
        want = [int(i) for i in indices]
        for i in want:
            if not 0 <= i < count:
                raise DataError(f"sample index {i} out of range (the source has {count} samples)")
        used = [self._next_good(i, i, count) for i in want]
        images: list[torch.Tensor | None] = [None] * len(want)
        pending = list(range(len(want)))
        while pending:
            todo = sorted({used[k] for k in pending})
            results = dict(zip(todo, self._map([path_of(j) for j in todo])))
            for j in todo:
                self._record(path_of(j), results[j][1])
                if results[j][0] is None:
                    self.bad.add(j)
            still = []
            for k in pending:
                img = results[used[k]][0]
                if img is None:
                    used[k] = self._next_good(want[k], used[k], count)
                    still.append(k)
                else:
                    images[k] = img
            pending = still
        self.report.replaced += sum(u != w for u, w in zip(used, want))
        return torch.stack(images), used  # type: ignore[arg-type]

    def _next_good(self, start: int, j: int, count: int) -> int:
        """First index from ``j`` on (wrapping) not known to be bad."""
        steps = 0
        while j in self.bad:
            j = (j + 1) % count
            steps += 1
            if steps >= count or len(self.bad) >= count:
                raise DataError(f"no readable image in the data source:\n{self.report.summary()}")
        if (j - start) % count > self.max_consecutive_bad:
            raise DataError(
                f"more than {self.max_consecutive_bad} unreadable images in a row after sample {start}; "
                f"is the image folder right?\n{self.report.summary()}"
            )
        return j
