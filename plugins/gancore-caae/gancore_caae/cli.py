"""``gancore age``: age a face in a photo with a trained CAAE run.

    gancore age me.jpg --run runs/caae-cpu --out strip.png              # all 10 age groups
    gancore age me.jpg --run runs/caae-cpu --out strip.png --groups 0,4,9
    gancore age me.jpg --run runs/caae-cpu --out old.png --age 65      # one age, pasted into the photo
    gancore age me.jpg --run runs/caae-cpu --out strip.png --box 120,80,200,200

The face is found and aligned like the training data (:mod:`gancore.photo`), encoded once,
and decoded at each requested age group.  A strip has the aligned input on the left, then
one column per group (a row per face with ``--all-faces``).  Problems (no face, unreadable
photo, a run that is not a CAAE run, bad options) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["configure_age", "run_age", "parse_groups", "AgeError", "age_strip", "load_caae_run"]

#: the schedule whose runs this verb can apply.
SCHEDULE = "caae.aae"


class AgeError(ValueError):
    """A bad option or an unusable run; the message says which."""


def configure_age(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo", help="photo with a face (PNG/JPEG/WebP/BMP, any size)")
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="folder of a trained CAAE run (schedule caae.aae)")
    parser.add_argument("--out", required=True, metavar="PATH", help="output image (strip, or the edited photo with --age)")
    parser.add_argument("--groups", default=None, metavar="all|I,J,..",
                        help="age groups of the strip: 'all' (default) or indices 0..9 "
                             "(0-5, 6-10, 11-15, 16-20, 21-30, 31-40, 41-50, 51-60, 61-70, 71+)")
    parser.add_argument("--age", type=float, default=None, metavar="YEARS",
                        help="instead of a strip: render the face at this age and paste it back into the photo")
    parser.add_argument("--box", default=None, metavar="x,y,w,h", help="face box in photo pixels (skip detection)")
    parser.add_argument("--all-faces", action="store_true", help="process every detected face, not only the largest")
    parser.add_argument("--gender", type=int, choices=(0, 1), default=None,
                        help="gender label for runs trained with schedule.gender = true (coded as the training data's 'gender')")
    parser.add_argument("--paste", choices=("replace", "residual"), default="replace",
                        help="with --age: paste the output itself, or only its change over the reconstruction")
    parser.add_argument("--checkpoint", default=None, metavar="DIR", help="a specific checkpoint (default: the latest)")


def parse_groups(text: str | None, groups: int = 10) -> list[int]:
    """``None``/``"all"`` → every group; ``"0,4,9"`` → ``[0, 4, 9]``; errors name the option."""
    if text is None or text.strip().lower() == "all":
        return list(range(groups))
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or not 0 <= int(item) < groups:
            raise AgeError(f"--groups expects 'all' or comma-separated group indices 0..{groups - 1}, got {text!r}")
        out.append(int(item))
    return out


def load_caae_run(run_dir: str, checkpoint: str | None = None) -> Any:
    """The trained run, or :class:`AgeError` if it cannot be loaded or is not a CAAE run."""
    from gancore.runs import load_run

    try:
        run = load_run(run_dir, checkpoint, schedule=SCHEDULE,
                       hint="gancore age needs a run trained with a caae recipe (e.g. recipes/caae-cpu.toml)")
    except (ValueError, OSError) as e:  # RunError, RecipeError, checkpoint errors
        raise AgeError(f"cannot load run {run_dir!r}: {e}") from None
    return run


def age_strip(run: Any, crops: Any, groups: list[int], gender: Any = None) -> Any:
    """``[3, N*R, (1+len(groups))*R]`` in [-1, 1]: each face's crop, then its decodings (encode once)."""
    import torch
    from einops import rearrange

    E, G = run.nets["E"], run.nets["G"]
    with torch.no_grad():
        z = E(crops)  # [N, z_dim], one encoding per face
        outs = [G(z, torch.full((len(z),), g, dtype=torch.long), gender) for g in groups]
    cols = torch.stack([crops, *outs])  # [1+n, N, 3, R, R]
    return rearrange(cols.clamp(-1, 1), "c n ch h w -> ch (n h) (c w)")


def _gender(run: Any, value: int | None, n: int) -> Any:
    import torch

    if run.schedule.config.gender:
        if value is None:
            raise AgeError("this run is conditioned on gender (schedule.gender = true); pass --gender 0 or --gender 1")
        return torch.full((n,), value, dtype=torch.long)
    if value is not None:
        raise AgeError("--gender is only for runs trained with schedule.gender = true; this run is not")
    return None


def _aging_fn(run: Any, group: int, gender: int | None, residual: bool) -> Any:
    """The crop → aged crop function for ``--age``.

    ``residual``: keep the photo's detail and add only the model's *change*
    ``G(z, target) - G(z, own)``, where the face's own group is estimated as the one whose
    decoding reconstructs the crop best (analysis by synthesis; the photo's age is unknown).
    """
    import torch

    E, G = run.nets["E"], run.nets["G"]

    def fn(crops: torch.Tensor) -> torch.Tensor:
        n = len(crops)
        gen = _gender(run, gender, n)
        z = E(crops)  # [N, z_dim]
        aged = G(z, torch.full((n,), group, dtype=torch.long), gen)
        if not residual:
            return aged
        every = torch.stack([G(z, torch.full((n,), k, dtype=torch.long), gen) for k in range(G.age_groups)])  # [K, N, 3, R, R]
        own = (every - crops).square().flatten(2).mean(2).argmin(0)  # [N] best-reconstructing group
        ref = every[own, torch.arange(n)]
        return (crops + aged - ref).clamp(-1, 1)

    return fn


def _print_faces(faces: Any, line: str) -> None:
    """One line per face naming the box it used, as ``gancore edit`` does (``x,y,w,h``, what
    ``--box`` takes); ``line`` has ``{face}`` and ``{row}`` fields."""
    for row, face in enumerate(faces, 1):
        x, y, w, h = face.box
        print(line.format(face=f"the face at {x},{y},{w},{h} ({face.source})", row=row))


def run_age(args: argparse.Namespace) -> int:
    """The verb: returns 0, or 2 with a one-line message on stderr."""
    from gancore.photo import PhotoError, apply_to_photo, save_image

    from .labels import GROUP_NAMES, group_of_age

    try:
        if args.age is not None and args.groups is not None:
            raise AgeError("give either --age (one image pasted into the photo) or --groups (a strip), not both")
        if args.age is not None and not 0 <= args.age <= 150:
            raise AgeError(f"--age expects years in 0..150, got {args.age:g}")
        groups = parse_groups(args.groups)
        run = load_caae_run(args.run, args.checkpoint)
        R = run.info.resolution
        _gender(run, args.gender, 1)  # check the option against the run before looking for faces
        if args.age is not None:
            g = group_of_age(args.age)
            fn = _aging_fn(run, g, args.gender, residual=args.paste == "residual")
            # residual: add only the change to the photo (its own detail stays); replace: paste the output
            res = apply_to_photo(args.photo, fn, R, out_path=args.out, box=args.box, all_faces=args.all_faces,
                                 mode=args.paste)
            _print_faces(res.faces, f"aged {{face}} to {GROUP_NAMES[g]} (age {args.age:g}, paste {args.paste})")
            print(f"wrote {res.out_path}")
            return 0
        res = apply_to_photo(args.photo, lambda c: c, R, out_path=None, box=args.box, all_faces=args.all_faces)
        strip = age_strip(run, res.crops, groups, _gender(run, args.gender, len(res.crops)))
        path = save_image(strip, args.out)
        names = ", ".join(GROUP_NAMES[g] for g in groups)
        _print_faces(res.faces, "strip row {row}: {face}")
        print(f"wrote {path}: {len(res.faces)} face(s) x [input, {names}]")
        return 0
    except (AgeError, PhotoError) as e:
        print(f"gancore age: {e}", file=sys.stderr)
        return 2
