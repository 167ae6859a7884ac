"""What models trained on synthfaces do to a real photo: the figures and numbers of
docs/photos.md ("Real photos and synthfaces-trained models") and the README.

    pip install scikit-image        # only for this script: it holds the photo
    python scripts/real_photo_figures.py --residual runs/residual-cpu --caae runs/caae-cpu --out docs/img

The photo is scikit-image's ``astronaut`` (``skimage.data.astronaut()``): Eileen Collins,
NASA portrait, public domain ("No known copyright restrictions").  It is the only real face
photo used, and only here: no test and no gancore code depends on it.

Every result on the photo is made by the CLI verbs exactly as a user runs them
(``gancore edit``, ``gancore age``), in a temporary folder.  Writes
``real_photo_residual.png`` and ``real_photo_caae.png`` and prints the numbers the docs quote.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

PANEL = 160  # px of each photo panel


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _gancore(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gancore", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gancore {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _box(stdout: str) -> tuple[int, int, int, int]:
    """The face box a verb printed (``... the face at x,y,w,h (...)``)."""
    text = stdout.split("the face at ", 1)[1].split(" ", 1)[0]
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h


def _region(box: tuple[int, int, int, int], size: tuple[int, int], margin: float = 0.6) -> tuple[int, int, int, int]:
    """A square around the face box, ``margin`` of its side added on each side, inside the photo."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    cx, cy = x + w // 2, y + h // 2
    left = min(max(cx - side // 2, 0), size[0] - side)
    top = min(max(cy - side // 2, 0), size[1] - side)
    return left, top, left + side, top + side


def _panel(img: Image.Image, label: str, size: int = PANEL) -> Image.Image:
    """``img`` resized to ``size`` px wide, with a label strip under it."""
    img = img.convert("RGB")
    h = round(img.height * size / img.width)
    img = img.resize((size, h), Image.LANCZOS if img.width > size else Image.NEAREST)
    lines = [x for x in label.split("\n") if x][:2]
    out = Image.new("RGB", (size, h + 4 + 15 * len(lines)), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((3, h + 2 + 15 * i), line, fill=(0, 0, 0), font=_font())
    return out


def _row(panels: list[Image.Image], title: str) -> Image.Image:
    h = max(p.height for p in panels)
    w = max(sum(p.width for p in panels) + 6 * (len(panels) - 1), int(_font(14).getlength(title)) + 6)
    out = Image.new("RGB", (w, h + 20), "white")
    ImageDraw.Draw(out).text((2, 2), title, fill=(0, 0, 0), font=_font(14))
    x = 0
    for p in panels:
        out.paste(p, (x, 20))
        x += p.width + 6
    return out


def _stack(rows: list[Image.Image]) -> Image.Image:
    w = max(r.width for r in rows)
    out = Image.new("RGB", (w, sum(r.height for r in rows) + 10 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height + 10
    return out


def _tensor_image(t: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` in [-1, 1] → PIL."""
    return Image.fromarray(((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())


def _sharpness(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian of the grey image in the face box: photo detail."""
    import cv2

    x, y, w, h = box
    grey = np.asarray(img.convert("L"), dtype=np.float64)[y : y + h, x : x + w]
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _change(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Mean and 99th percentile of |a - b| in the face box, grey levels (0..255)."""
    x, y, w, h = box
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))[y : y + h, x : x + w]
    return float(d.mean()), float(np.percentile(d, 99))


def residual_figure(run_dir: str, photo: Path, tmp: Path, out: Path) -> list[str]:
    from gancore.runs import load_run
    from gancore_residual.schedule import residual_to_image

    src = Image.open(photo)
    made = {}
    for d in ("add", "remove"):
        made[d] = tmp / f"edit_{d}.png"
        stdout = _gancore("edit", str(photo), "--run", run_dir, "--direction", d, "--out", str(made[d]),
                          "--residual", str(tmp / f"edit_{d}_res.png"))
        box = _box(stdout)
    region = _region(box, src.size)
    notes = [f"face box {','.join(map(str, box))}"]
    panels = [_panel(src.crop(region), "the photo")]
    for d in ("add", "remove"):
        res = Image.open(made[d])
        mean, p99 = _change(src, res, box)
        notes.append(f"edit --direction {d}: mean |change| in the face box {mean:.2f} grey levels (99th pct {p99:.1f})")
        panels.append(_panel(res.crop(region), f"gancore edit\n--direction {d}"))
        diff = np.abs(np.asarray(res, np.int16) - np.asarray(src, np.int16)).clip(0, 255 // 8) * 8
        panels.append(_panel(Image.fromarray(diff.astype(np.uint8)).crop(region), f"|{d} - photo| x8"))
    tiles = Image.open(tmp / "edit_add_res.png")  # crop | residual | edited, at the run's resolution
    panels.append(_panel(tiles, "aligned crop | residual\n(scaled) | edited (add)", size=3 * PANEL // 2))
    rows = [_row(panels, f"ResGAN trained on synthfaces (run {Path(run_dir).name}), on a real photo")]

    run = load_run(run_dir)
    data = run.data("test")
    labels = data.labels()["attribute"]
    with torch.no_grad():
        synth = []
        for value, role in ((0, "G0"), (1, "G1")):
            i = int((labels == value).nonzero()[0])
            x = data.load([i])["image"]
            y = run.nets[role](x)
            synth += [_panel(_tensor_image(x[0]), "held-out synthface"),
                      _panel(_tensor_image(y.out[0]), f"{role}: {'add' if value == 0 else 'remove'}"),
                      _panel(_tensor_image(residual_to_image(y.residual)[0]), "residual (scaled)")]
            d = (y.out.clamp(-1, 1) - x).abs().mul(127.5)
            notes.append(f"{role} on a held-out synthface: mean |change| {float(d.mean()):.2f} grey levels "
                         f"(99th pct {float(d.flatten().quantile(0.99)):.1f}), over the whole {x.shape[-1]} px crop")
    rows.append(_row(synth, "the same run on its own kind of data (held-out synthfaces)"))
    path = out / "real_photo_residual.png"
    _stack(rows).save(path, optimize=True)
    return [f"wrote {path}", *notes]


def caae_figure(run_dir: str, photo: Path, tmp: Path, out: Path) -> list[str]:
    from gancore.runs import load_run
    from gancore_caae.cli import age_strip

    src = Image.open(photo)
    stdout = _gancore("age", str(photo), "--run", run_dir, "--out", str(tmp / "strip.png"))
    box = _box(stdout)
    notes = [f"face box {','.join(map(str, box))}"]
    region = _region(box, src.size)
    strip = Image.open(tmp / "strip.png")
    rows = [_row([_panel(strip, "", size=strip.width)],
                 f"CAAE trained on synthfaces (run {Path(run_dir).name}): gancore age on a real photo")]
    run = load_run(run_dir)
    x = run.data("test").load([0, 1])["image"]
    with torch.no_grad():
        synth = age_strip(run, x, list(range(10)))
    img = _tensor_image(synth)
    rows.append(_row([_panel(img, "", size=img.width)],
                     "the same run on held-out synthfaces (each row: input, then age groups 0-5 ... 71+)"))
    panels = [_panel(src.crop(region), "the photo")]
    before = _sharpness(src, box)
    notes.append(f"Laplacian variance in the face box: photo {before:.0f}")
    for paste in ("replace", "residual"):
        path = tmp / f"age70_{paste}.png"
        _gancore("age", str(photo), "--run", run_dir, "--out", str(path), "--age", "70", "--paste", paste)
        res = Image.open(path)
        mean, p99 = _change(src, res, box)
        notes.append(f"--age 70 --paste {paste}: Laplacian variance {_sharpness(res, box):.0f}, "
                     f"mean |change| {mean:.2f} grey levels (99th pct {p99:.1f})")
        panels.append(_panel(res.crop(region), f"--age 70\n--paste {paste}"))
    rows.append(_row(panels, "gancore age --age 70, pasted into the photo"))
    path = out / "real_photo_caae.png"
    _stack(rows).save(path, optimize=True)
    return [f"wrote {path}", *notes]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residual", help="a trained ResGAN run (recipes/residual-cpu.toml)")
    parser.add_argument("--caae", help="a trained CAAE run (recipes/caae-cpu.toml)")
    parser.add_argument("--out", default="docs/img", help="folder for the PNGs")
    args = parser.parse_args(argv)
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("this script needs scikit-image for its photo: pip install scikit-image") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        photo = tmp / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo)
        lines = []
        if args.residual:
            lines += residual_figure(args.residual, photo, tmp, out)
        if args.caae:
            lines += caae_figure(args.caae, photo, tmp, out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
