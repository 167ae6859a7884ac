"""``gancore edit PHOTO --run RUN_DIR --out OUT.png``: add or remove the run's attribute
(e.g. glasses) on the faces of a photo with a trained ResGAN run.

Each face is found and aligned the way the run's training data was (synthfaces' template,
or the CelebA centre crop for ``data.source = "celeba"``), passed through G0 (add) or G1
(remove), and only the change ``x̃ − x`` — the residual — is pasted back, so the rest of the
photo keeps its full resolution.  ``--direction auto`` asks the run's discriminator whether
each aligned face has the attribute (class 1 vs class 0) and removes or adds it accordingly.

Exit codes: 0 done, 2 a bad input (no face found, unreadable photo, not a ResGAN run, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["configure_edit", "run_edit", "EditError", "load_residual_run", "edit_crops"]

SCHEDULE = "residual.dual"


class EditError(ValueError):
    """A user error of ``gancore edit``; the message says what to change."""


def configure_edit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo", help="photo to edit (PNG/JPEG/WebP/BMP, any size)")
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder trained with recipes/residual*.toml")
    parser.add_argument("--out", required=True, metavar="OUT.png", help="where to write the edited photo")
    parser.add_argument("--attribute", default=None,
                        help="attribute to edit; must be the one the run was trained on (default: that one)")
    parser.add_argument("--direction", choices=("add", "remove", "auto"), default="auto",
                        help="add (G0), remove (G1), or auto: decided per face by the run's discriminator (default)")
    parser.add_argument("--residual", default=None, metavar="RES.png",
                        help="also write, per face: aligned crop | residual r (scaled) | edited crop")
    parser.add_argument("--box", default=None, metavar="x,y,w,h",
                        help="face box in photo pixels, when the detector misses the face")
    parser.add_argument("--all-faces", action="store_true", help="edit every detected face (default: the largest)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder of the run (default: the latest)")


def load_residual_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> Any:
    """Load ``run_dir`` and check that it is a ResGAN run (:class:`EditError` otherwise)."""
    from gancore.runs import RunError, load_run

    try:
        run = load_run(run_dir, checkpoint, schedule=SCHEDULE,
                       hint="`gancore edit` needs a ResGAN run (e.g. trained with `gancore run recipes/residual-cpu.toml`)")
    except RunError as e:
        raise EditError(f"--run {run_dir}: {e}") from None
    return run


def _template(run: Any) -> Any:
    from gancore.photo import AlignTemplate

    return AlignTemplate.celeba() if run.recipe.data.source == "celeba" else None  # None: synthfaces' default


@torch.no_grad()
def edit_crops(run: Any, crops: torch.Tensor, direction: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Edit aligned crops ``[N, 3, R, R]`` in [-1, 1].

    Returns ``(edited [N, 3, R, R], residual [N, 3, R, R], direction per face)``; with
    ``direction="auto"`` a face D puts in class 1 (has the attribute) is sent through G1
    (remove), any other through G0 (add).
    """
    nets = run.nets
    if direction == "auto":
        logits = nets["D"](crops).logits  # [N, 3]
        has = logits[:, 1] > logits[:, 0]  # attribute vs no attribute (the "transformed" class is ignored)
        dirs = ["remove" if h else "add" for h in has.tolist()]
    else:
        dirs = [direction] * len(crops)
    out, res = torch.empty_like(crops), torch.empty_like(crops)
    for d, role in (("add", "G0"), ("remove", "G1")):
        idx = [i for i, di in enumerate(dirs) if di == d]
        if idx:  # each face goes through the one network its direction needs
            y = nets[role](crops[idx])
            out[idx], res[idx] = y.out.clamp(-1, 1), y.residual
    return out, res, dirs


def run_edit(args: argparse.Namespace) -> int:
    from gancore.photo import PhotoError, apply_to_photo, save_image

    from .schedule import residual_to_image

    try:
        run = load_residual_run(args.run, args.checkpoint)
        trained = run.resolved.data_config.attribute
        if args.attribute is not None and args.attribute.lower() != str(trained).lower():
            raise EditError(
                f"--attribute {args.attribute!r}: run {args.run} was trained to edit {trained!r}; train a run for "
                f"{args.attribute!r} (data.attribute = {args.attribute!r}) or leave --attribute out"
            )
        extra: dict[str, Any] = {}

        def fn(crops: torch.Tensor) -> torch.Tensor:
            out, res, dirs = edit_crops(run, crops, args.direction)
            extra.setdefault("residual", []).append(res)
            extra.setdefault("dirs", []).extend(dirs)
            return out

        result = apply_to_photo(args.photo, fn, run.info.resolution, args.out, template=_template(run),
                                all_faces=args.all_faces, box=args.box, mode="residual")
        if args.residual:
            res = torch.cat(extra["residual"])
            tiles = [torch.cat([c, residual_to_image(r[None])[0], e], dim=2)  # [3, R, 3R]
                     for c, r, e in zip(result.crops, res, result.edited)]
            save_image(torch.cat(tiles, dim=1), args.residual)  # faces stacked vertically
    except (EditError, PhotoError) as e:
        print(f"gancore edit: {e}", file=sys.stderr)
        return 2
    for face, d in zip(result.faces, extra.get("dirs", [])):
        x, y, w, h = face.box
        print(f"{d} {trained} on the face at {x},{y},{w},{h} ({face.source})")
    print(f"wrote {result.out_path}" + (f" and {args.residual}" if args.residual else ""))
    return 0
