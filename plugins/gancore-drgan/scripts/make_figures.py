"""Make the figures of docs/results.md (DR-GAN section) from trained, evaluated runs.

    python plugins/gancore-drgan/scripts/make_figures.py runs/drgan-cpu docs/img drgan_cpu
    python plugins/gancore-drgan/scripts/make_figures.py runs/drgan-multi-cpu docs/img drgan_multi_cpu

Writes ``PREFIX_samples.png`` (the run's last sample grid) and, from ``gancore eval``'s
figures, ``PREFIX_rotations.png`` (pairs of rows: a held-out input and its rotation to every
pose; beneath, the true renders at those poses) and, for multi-image runs,
``PREFIX_fused.png`` (n inputs of one identity; beneath, the fused identity at every pose),
each upscaled ``scale`` times (nearest neighbour) so that 48 px faces are visible.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image


def _up(src: Path, dst: Path, scale: int) -> None:
    im = Image.open(src)
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(dst, optimize=True)
    print(f"wrote {dst} (from {src})")


def main(run_dir: str, out_dir: str, prefix: str, scale: int = 2) -> int:
    run, out = Path(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = sorted((run / "samples").glob("step_*.png"))
    if not samples:
        print(f"{run} has no sample grids", file=sys.stderr)
        return 2
    _up(samples[-1], out / f"{prefix}_samples.png", scale)
    for name in ("rotations", "fused"):
        fig = run / "eval" / f"drgan_{name}.png"
        if fig.is_file():
            _up(fig, out / f"{prefix}_{name}.png", scale)
        elif name == "rotations":
            print(f"{fig} is missing: run gancore eval {run} first", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(*sys.argv[1:4], *(int(a) for a in sys.argv[4:5])))
