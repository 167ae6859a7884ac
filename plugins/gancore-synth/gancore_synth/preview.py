"""Preview pictures of a data source: a few samples, then one sample with each factor swept.

Each sweep row is labelled with its factor at the left and each image's value under it;
short sweeps share a line (``gancore.grid.grid_image(..., pack=True)``), so the canvas is
about as large as its content.  Used by ``gancore data preview`` and for ``docs/img``::

    python -c "from gancore_synth.synthfaces import SynthFaces; \
        from gancore_synth.preview import preview_grid; \
        preview_grid(SynthFaces(resolution=64), 'faces.png')"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gancore.grid import grid_image

from .synthchairs import ELEVATIONS

__all__ = ["preview_grid", "sweeps", "FACE_SWEEPS", "CHAIR_SWEEPS"]

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
#: how a factor's value is written under its image (default: the number)
_VALUE_NAMES: dict[str, Any] = {
    "glasses": ("none", "eyegl.", "sungl."),
    "hair_color": ("black", "brown", "blond", "red"),
    "gender": ("male", "female"),
    "yaw": lambda v: f"{v:+d}°" if v else "0°",
    "elevation": lambda v: f"{ELEVATIONS[v]:g}°",
}


def _caption(factor: str, value: float) -> str:
    v = int(value) if float(value).is_integer() else value
    name = _VALUE_NAMES.get(factor)
    if callable(name):
        return name(v)
    if name is not None and isinstance(v, int) and 0 <= v < len(name):
        return name[v]
    return str(v)


def sweeps(source: Any, index: int = 0) -> list[tuple[str, list[str], Tensor]]:
    """``(factor, captions, images [n, 3, R, R])`` per sweep: sample ``index`` with one factor swept."""
    table = CHAIR_SWEEPS if getattr(source, "name", "") == "synthchairs" else FACE_SWEEPS
    rows = []
    for name, values in table:
        f = source.factors([index] * len(values))
        f[name] = torch.tensor(values, dtype=f[name].dtype)
        rows.append((name, [_caption(name, v) for v in values], source.render(f)))
    return rows


def preview_grid(source: Any, out_path: str | Path, samples: int | None = None, columns: int | None = None,
                 index: int = 0, with_sweeps: bool = True) -> Path:
    """Save a PNG: ``samples`` samples in rows of ``columns``, then (optionally) one labelled
    row per factor sweep of sample ``index``.

    :param source: any data source; only those with ``factors``/``render`` (synthfaces,
        synthchairs) get sweeps.
    :param columns: samples per row; default: the width, from the widest sweep's to two
        more, that gives the tightest picture (8 to 10 without sweeps).
    :param samples: default: two full rows.
    :returns: the path written.
    """
    has_factors = hasattr(source, "factors") and hasattr(source, "render")
    swept = sweeps(source, index) if with_sweeps and has_factors else []
    widest = max((len(c) for _, c, _ in swept), default=8)
    choices = [columns] if columns is not None else [widest, widest + 1, widest + 2]  # the tightest is kept
    if min(choices) < 1 or (samples is not None and samples < 0):
        raise ValueError(f"preview_grid: need samples >= 0 and columns >= 1, got {samples!r}, {columns!r}")
    most = min(len(source), samples if samples is not None else 2 * max(choices))
    images = source.load(list(range(most)))["image"] if most else None
    # widest first, so that first-fit packing fills the lines (sweeps keep their order otherwise)
    sweep_rows = [(name, imgs, captions) for name, captions, imgs in sorted(swept, key=lambda s: -len(s[1]))]
    name = getattr(source, "name", type(source).__name__)
    profile = getattr(getattr(source, "config", None), "profile", None)
    best = None
    for cols in choices:
        n = min(most, samples if samples is not None else 2 * cols)
        rows: list[tuple[Any, ...]] = [("samples" if i == 0 else "", images[i : i + cols]) for i in range(0, n, cols)]
        rows += sweep_rows
        if not rows:
            raise ValueError("preview_grid: nothing to draw (samples=0 and no sweeps)")
        title = f"{name}{f' ({profile})' if profile else ''}: samples 0-{n - 1}" if n else name
        if swept:
            title += f"; sample {index} with one factor changed per row"
        img = grid_image(rows, labels=True, title=title, pack=True)
        tiles = n + sum(len(r[1]) for r in sweep_rows)
        fill = tiles / (img.width * img.height)  # tiles per pixel: higher is tighter
        if best is None or fill > best[0]:
            best = (fill, img)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    best[1].save(out, optimize=True)
    return out
