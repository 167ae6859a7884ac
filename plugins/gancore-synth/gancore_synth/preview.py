"""Preview grids of the synthetic data: a few samples and one identity's factor sweeps.

Used to eyeball the renders (``docs/img/synth*.png``)::

    python -c "from gancore_synth.synthfaces import SynthFaces; \
        from gancore_synth.preview import preview_grid; \
        preview_grid(SynthFaces(resolution=64), 'faces.png')"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

__all__ = ["preview_grid", "sweeps"]

#: (factor, values) rows of the face sweeps.
FACE_SWEEPS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("age", (1, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80)),
    ("yaw", (-90, -75, -60, -45, -30, -15, 0, 15, 30, 45, 60, 75, 90)),
    ("glasses", (0, 1, 2)),
    ("smile", (0, 1)),
    ("mouth_open", (0, 1)),
    ("beard", (0, 1)),
    ("moustache", (0, 1)),
    ("bangs", (0, 1)),
    ("hair_color", (0, 1, 2, 3)),
    ("gender", (0, 1)),
    ("skin", (0, 1, 2, 3, 4, 5)),
    ("light", (0, 3, 6, 9, 12, 15, 19)),
)
CHAIR_SWEEPS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("view", tuple(range(0, 31, 3))),
    ("elevation", (0, 1)),
    ("light", (0, 1, 2, 3)),
)


def _to_u8(img: Tensor) -> Tensor:
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def sweeps(source: Any, index: int = 0) -> list[Tensor]:
    """Rows of images ``[n, 3, R, R]``: sample ``index`` with one factor swept per row."""
    table = CHAIR_SWEEPS if getattr(source, "name", "") == "synthchairs" else FACE_SWEEPS
    rows = []
    for name, values in table:
        f = source.factors([index] * len(values))
        f[name] = torch.tensor(values, dtype=f[name].dtype)
        rows.append(source.render(f))
    return rows


def preview_grid(source: Any, out_path: str | Path, samples: int = 16, columns: int = 8, index: int = 0,
                 with_sweeps: bool = True) -> Path:
    """Save a PNG: ``samples`` samples, then (optionally) one row per factor sweep of sample ``index``.

    :param source: a :class:`~gancore_synth.synthfaces.SynthFaces` or ``SynthChairs``.
    :returns: the path written.
    """
    if samples < 0 or columns < 1:
        raise ValueError(f"preview_grid: need samples >= 0 and columns >= 1, got {samples!r}, {columns!r}")
    n = min(samples, len(source))
    rows: list[Tensor] = []
    if n:
        imgs = source.load(list(range(n)))["image"]
        for i in range(0, n, columns):
            rows.append(imgs[i : i + columns])
    if with_sweeps and hasattr(source, "factors") and hasattr(source, "render"):  # sources with factors only
        rows += sweeps(source, index)
    if not rows:
        raise ValueError("preview_grid: nothing to draw (samples=0 and with_sweeps=False)")
    width = max(len(r) for r in rows)
    res = rows[0].shape[-1]
    padded = []
    for r in rows:
        pad = torch.ones(width - len(r), 3, res, res)
        padded.append(torch.cat([r, pad]))
    grid = rearrange(torch.stack(padded), "rows cols c h w -> (rows h) (cols w) c")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_to_u8(grid).numpy()).save(out, optimize=True)
    return out
