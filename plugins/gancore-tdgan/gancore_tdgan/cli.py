"""``gancore rerender``: re-render an image with other tags using a trained TD-GAN run.

    gancore rerender chair.png --run runs/tdgan-chairs-cpu --out new.png --tag view=12
    gancore rerender chair.png --run runs/tdgan-chairs-cpu --out strip.png --sweep view
    gancore rerender face.jpg --run runs/tdgan-faces-cpu --out lit.png --tag light=8 --tag pose=0deg
    gancore rerender face.jpg --run runs/tdgan-faces-cpu --out strip.png --sweep expression

The image goes through R once; the blocks of the given tags are replaced by g(tag) and G
renders the result.  A tag value is a class index (``view=12``) or, for view-like tags, an
angle (``view=30deg``, ``pose=-45deg``: the nearest value the data has).  With ``--sweep TAG``
the output is a strip: the input, then one re-render per value of TAG (other ``--tag``s held).

Objects (runs trained on ``synthchairs`` / ``chairs3d``) are taken whole: the image is
padded to a square on white and resized.  Faces go through :mod:`gancore.photo`: detected,
aligned like the training data, re-rendered, and pasted back into the photo (a strip holds
the aligned crops).  A model trained on synthetic data does nothing useful to real photos.

Problems (unknown tag name or value, unreadable file, no face, a run that is not TD-GAN)
print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure_rerender", "run_rerender", "RerenderError", "parse_tag_values", "load_tdgan_run", "object_tensor",
           "OBJECT_SOURCES"]

SCHEDULE = "tdgan.alternating"
#: data sources whose runs re-render whole objects (everything else is treated as faces).
OBJECT_SOURCES = ("synthchairs", "chairs3d")
_DEGREES = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:deg|°)\s*$")


class RerenderError(ValueError):
    """A bad option or an unusable run; the message says which."""


def configure_rerender(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image of an object or a photo with a face (PNG/JPEG/WebP/BMP, any size)")
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a trained TD-GAN run (schedule tdgan.alternating)")
    parser.add_argument("--out", required=True, metavar="OUT.png", help="output image: the re-render, or the strip with --sweep")
    parser.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                        help="set a tag: a class index (view=12) or an angle for view-like tags (view=30deg); repeatable")
    parser.add_argument("--sweep", default=None, metavar="NAME", help="write a strip over every value of this tag")
    parser.add_argument("--kind", choices=("auto", "object", "face"), default="auto",
                        help="object: take the image whole; face: detect, align, paste back; auto: object for "
                             "synthchairs/chairs3d runs, else face")
    parser.add_argument("--box", default=None, metavar="x,y,w,h", help="face box in photo pixels (skip detection; faces only)")
    parser.add_argument("--all-faces", action="store_true", help="re-render every detected face, not only the largest")
    parser.add_argument("--checkpoint", default=None, metavar="DIR", help="a checkpoint folder of the run (default: the latest)")


def load_tdgan_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> Any:
    """The trained run, or :class:`RerenderError` if it cannot be loaded or is not a TD-GAN run."""
    from gancore.runs import load_run

    try:
        return load_run(run_dir, checkpoint, schedule=SCHEDULE,
                        hint="gancore rerender needs a run trained with a tdgan recipe (e.g. recipes/tdgan-chairs.toml)")
    except (ValueError, OSError) as e:  # RunError, RecipeError, checkpoint errors
        raise RerenderError(f"cannot load run {str(run_dir)!r}: {e}") from None


def _degrees_of(run: Any, tag: str) -> dict[int, float] | None:
    from .tagdata import tag_degrees

    try:
        return tag_degrees(run.data("train").labels(), tag)
    except Exception:  # the training data is not on this machine: angles are then unknown
        return None


def parse_tag_values(specs: list[str], run: Any) -> dict[str, int]:
    """``["view=12", "light=30deg"]`` → ``{tag: class value}``, checked against the run's tags."""
    from .tagdata import nearest_degrees

    classes = run.nets["g"].classes  # tag -> number of values
    out: dict[str, int] = {}
    for spec in specs:
        name, eq, text = spec.partition("=")
        name = name.strip()
        if not eq or not name or not text.strip():
            raise RerenderError(f"--tag expects NAME=VALUE (e.g. view=12 or view=30deg), got {spec!r}")
        if name not in classes:
            raise RerenderError(f"unknown tag {name!r}; this run's tags are {', '.join(classes)}")
        if name in out:
            raise RerenderError(f"--tag {name} is given twice")
        k = classes[name]
        m = _DEGREES.match(text)
        if m:
            degrees = _degrees_of(run, name)
            if not degrees:
                raise RerenderError(f"tag {name!r} has no angles in this run's data; give a value 0..{k - 1}")
            out[name] = nearest_degrees(degrees, float(m.group(1)))
            continue
        try:
            value = int(text)
        except ValueError:
            raise RerenderError(f"tag {name!r} takes a value 0..{k - 1}{' or an angle like 30deg' if name in ('view', 'pose') else ''}, "
                                f"got {text.strip()!r}") from None
        if not 0 <= value < k:
            raise RerenderError(f"tag {name!r} takes a value 0..{k - 1}, got {value}")
        out[name] = value
    return out


def object_tensor(path: str, resolution: int) -> Any:
    """An object image taken whole: alpha over white, padded to a square on white, resized: ``[1, 3, R, R]`` in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    from gancore.photo import read_photo

    a = read_photo(path)  # [H, W, 3|4] uint8
    if a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.rint(a[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    h, w = a.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), 255, np.uint8)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = a
    img = Image.fromarray(canvas).resize((resolution, resolution), Image.Resampling.LANCZOS)
    t = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    return t / 127.5 - 1


def _renders(run: Any, x: Any, fixed: dict[str, int], sweep: str | None) -> Any:
    """``[V, N, 3, R, R]``: each sweep value (or just ``fixed``) re-rendered from one pass of R."""
    import torch

    nets = run.nets
    with torch.no_grad():
        rep = dict(nets["R"](x))
        for tag, v in fixed.items():
            rep[tag] = nets["g"].embed(tag, torch.full((len(x),), v, dtype=torch.long))
        if sweep is None:
            return nets["G"](rep)[None]
        outs = []
        for v in range(nets["g"].classes[sweep]):
            outs.append(nets["G"]({**rep, sweep: nets["g"].embed(sweep, torch.full((len(x),), v, dtype=torch.long))}))
        return torch.stack(outs)


def _strip(x: Any, outs: Any) -> Any:
    """``[3, N·R, (1+V)·R]``: each input followed by its re-renders."""
    import torch
    from einops import rearrange

    cols = torch.cat([x[None], outs])  # [1+V, N, 3, R, R]
    return rearrange(cols.clamp(-1, 1), "c n ch h w -> ch (n h) (c w)")


def _print_faces(faces: Any, line: str) -> None:
    """One line per face naming its box (``x,y,w,h``, what ``--box`` takes) and its detector."""
    for row, face in enumerate(faces, 1):
        x, y, w, h = face.box
        print(line.format(face=f"the face at {x},{y},{w},{h} ({face.source})", row=row))


def run_rerender(args: argparse.Namespace) -> int:
    """The verb: returns 0, or 2 with a one-line message on stderr."""
    from gancore.photo import PhotoError, apply_to_photo, save_image

    try:
        run = load_tdgan_run(args.run, args.checkpoint)
        R = run.info.resolution
        fixed = parse_tag_values(args.tag, run)
        classes = run.nets["g"].classes
        if args.sweep is not None:
            if args.sweep not in classes:
                raise RerenderError(f"unknown tag {args.sweep!r} for --sweep; this run's tags are {', '.join(classes)}")
            if args.sweep in fixed:
                raise RerenderError(f"--sweep {args.sweep} and --tag {args.sweep}=... contradict each other; give one")
        kind = args.kind
        if kind == "auto":
            kind = "object" if run.resolved.recipe.data.source in OBJECT_SOURCES else "face"
        if kind == "object" and (args.box or args.all_faces):
            raise RerenderError("--box and --all-faces are for faces; objects are taken whole (or pass --kind face)")
        what = ", ".join(f"{t}={v}" for t, v in fixed.items()) or "its own tags"
        if kind == "object":
            x = object_tensor(args.image, R)
            outs = _renders(run, x, fixed, args.sweep)
            path = save_image(_strip(x, outs) if args.sweep else outs[0, 0], args.out)
        elif args.sweep is not None:
            res = apply_to_photo(args.image, lambda c: c, R, out_path=None, box=args.box, all_faces=args.all_faces)
            path = save_image(_strip(res.crops, _renders(run, res.crops, fixed, args.sweep)), args.out)
            _print_faces(res.faces, "strip row {row}: {face}")
        else:
            res = apply_to_photo(args.image, lambda c: _renders(run, c, fixed, None)[0], R, out_path=args.out,
                                 box=args.box, all_faces=args.all_faces)
            path = res.out_path
            _print_faces(res.faces, "re-rendered {face}")
        if args.sweep:
            print(f"wrote {path}: input + {classes[args.sweep]} values of {args.sweep} ({what} held)")
        else:
            print(f"wrote {path}: re-rendered with {what}")
        return 0
    except (RerenderError, PhotoError) as e:
        print(f"gancore rerender: {e}", file=sys.stderr)
        return 2
