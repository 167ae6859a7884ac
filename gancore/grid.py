"""Image grids saved as PNG: the engine's sample grids, metrics' figures, data previews.

A grid is a list of rows ``(label, images)``, each ``images`` ``[N, C, H, W]`` in [-1, 1]
(C = 1 or 3), optionally ``(label, images, captions)`` with one caption per image.  Tiles
are 1 px apart on white.  Options:

- ``labels=True`` writes each row's label at the left of the row;
- captions, when a row has them, are written under its tiles;
- ``title`` adds one line of text above the grid (cut at the grid's width);
- ``pack=True`` puts a row on the first line that still has room for it, so short rows
  share lines instead of leaving the canvas mostly empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["Row", "grid_image", "save_grid"]

#: ``(label, images)`` or ``(label, images, captions)``
Row = Union[tuple[str, torch.Tensor], tuple[str, torch.Tensor, Sequence[str]]]

_PAD = 1
_INK = (40, 40, 40)
_PAPER = (255, 255, 255)


def _font(tile: int) -> Any:
    size = max(10, min(14, tile // 5))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _write(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, font: Any) -> None:
    """Draw ``text`` with its ink's top-left corner at ``(x, y)``."""
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((x - left, y - top), text, fill=_INK, font=font)


def _tiles(images: torch.Tensor, where: str) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` from ``[N, C, H, W]`` in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{where}: images must be [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
    x = images.detach().float().cpu().clamp(-1, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def grid_image(rows: Sequence[Row], *, labels: bool = False, title: str | None = None, pack: bool = False) -> Image.Image:
    """The grid as a PIL image (see the module docstring for ``rows`` and the options)."""
    if not rows:
        raise ValueError("grid_image: no rows to draw")
    tiles, captions, names = [], [], []
    for i, row in enumerate(rows):
        if len(row) not in (2, 3):
            raise ValueError(f"grid_image: row {i} must be (label, images) or (label, images, captions)")
        t = _tiles(row[1], f"grid_image: row {i} ({row[0]!r})")
        cap = list(row[2]) if len(row) == 3 else None  # type: ignore[misc]
        if cap is not None and len(cap) != len(t):
            raise ValueError(f"grid_image: row {i} ({row[0]!r}) has {len(t)} images but {len(cap)} captions")
        tiles.append(t)
        captions.append(cap)
        names.append(str(row[0]))
    th = max(t.shape[1] for t in tiles)
    tw = max(t.shape[2] for t in tiles)
    font = _font(th)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(_text_size(measure, "Ag-09", font)[1], 1) + 4
    # a segment is [label][tile][tile]...; a line's first label gets a common column width
    # (so lines start aligned), a label after another segment on the same line only its own
    own_w = [(_text_size(measure, n, font)[0] + 10 if n else 0) if labels else 0 for n in names]
    lead_w = max(own_w)
    # a captioned row's tiles are spaced at least as wide as its widest caption
    pitch = [max(tw, max((_text_size(measure, str(c), font)[0] + 4 for c in cap), default=0)) + _PAD
             if cap else tw + _PAD for cap in captions]
    body = [len(t) * p for t, p in zip(tiles, pitch)]
    limit = lead_w + max(body)
    lines: list[list[int]] = []
    room: list[int] = []
    for i in range(len(rows)):
        need = own_w[i] + body[i]
        target = next((k for k, r in enumerate(room) if r >= need), None) if pack else None
        if target is None:
            lines.append([i])
            room.append(limit - lead_w - body[i])
        else:
            lines[target].append(i)
            room[target] -= need
    line_heights = [th + _PAD + (line_h if any(captions[i] for i in line) else 0) for line in lines]
    top = line_h if title else 0
    width = _PAD + limit  # a title longer than the grid is cut, never widens it
    height = top + _PAD + sum(line_heights)

    canvas = Image.new("RGB", (width, height), _PAPER)
    draw = ImageDraw.Draw(canvas)
    if title:
        _write(draw, _PAD + 2, 2, title, font)
    y = top + _PAD
    for line, lh in zip(lines, line_heights):
        x = _PAD
        for j, i in enumerate(line):
            if labels and names[i]:
                _, h = _text_size(draw, names[i], font)
                _write(draw, x + (2 if j == 0 else 6), y + (th - h) // 2, names[i], font)
            x += lead_w if j == 0 else own_w[i]
            cell = pitch[i] - _PAD
            for k, tile in enumerate(tiles[i]):
                canvas.paste(Image.fromarray(tile.numpy()), (x + (cell - tile.shape[1]) // 2, y + (th - tile.shape[0]) // 2))
                if captions[i]:
                    text = str(captions[i][k])
                    w, _ = _text_size(draw, text, font)
                    _write(draw, x + (cell - w) // 2, y + th + 2, text, font)
                x += pitch[i]
        y += lh
    return canvas


def save_grid(rows: Sequence[Row], path: str | Path, *, labels: bool = False, title: str | None = None,
              pack: bool = False) -> Path | None:
    """Save rows of images as one PNG (written to a temporary name, then renamed).

    Without options: a row per entry, ``max(N)`` tiles wide, 1 px white between tiles.
    Returns the path written, or None when ``rows`` is empty (nothing is written).
    """
    if not rows:
        return None
    image = grid_image(rows, labels=labels, title=title, pack=pack)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    image.save(tmp, optimize=True)
    os.replace(tmp, path)
    return path
