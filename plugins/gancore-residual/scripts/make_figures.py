"""Make the figures of docs/results.md (ResGAN section) from a trained run.

    python plugins/gancore-residual/scripts/make_figures.py runs/residual-cpu docs/img

Writes ``residual_samples.png`` (the run's last sample grid, upscaled 3x, rows x0, r0,
G0(x0), x1, r1, G1(x1)) and ``residual_counterfactual.png`` (held-out faces: input, edit,
true counterfactual, residual, ground-truth mask — adds on the left, removes on the right).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image


def main(run_dir: str, out_dir: str, n: int = 6, scale: int = 3) -> None:
    from torchvision.utils import save_image

    from gancore.runs import load_run
    from gancore_residual.schedule import residual_to_image
    from gancore_residual.synth import counterfactuals

    run_path, out = Path(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = sorted((run_path / "samples").glob("step_*.png"))[-1]
    im = Image.open(last)
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(out / "residual_samples.png", optimize=True)

    run = load_run(run_path)
    src = run.data("test")
    labels = src.labels()["attribute"]
    cols = []
    with torch.no_grad():
        for value in (0, 1):
            idx = (labels == value).nonzero().flatten()[:n].tolist()
            G = run.nets["G0" if value == 0 else "G1"]
            x, cf, mask = counterfactuals(src, idx, choose=lambda t: G(t).out.clamp(-1, 1))
            y = G(x)
            cols.append(torch.stack([x, y.out.clamp(-1, 1), cf, residual_to_image(y.residual),
                                     mask.expand(-1, 3, -1, -1) * 2 - 1]))  # [5, n, 3, R, R]
    grid = torch.cat(cols, 1)  # [5 rows, 2n, 3, R, R]
    r = grid.shape[-1]
    up = torch.nn.functional.interpolate(grid.flatten(0, 1), scale_factor=scale, mode="nearest")
    save_image(up * 0.5 + 0.5, out / "residual_counterfactual.png", nrow=2 * n, padding=2, pad_value=1.0)
    print(f"wrote {out / 'residual_samples.png'} (from {last.name}) and {out / 'residual_counterfactual.png'} ({r} px faces)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
