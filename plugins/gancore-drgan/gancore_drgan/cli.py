"""``gancore rotate`` and ``gancore verify``: apply a trained DR-GAN run to photos.

    gancore rotate me.jpg --run runs/drgan-cpu --out strip.png                 # every pose the run has
    gancore rotate me.jpg --run runs/drgan-cpu --out strip.png --yaw -90,-45,0,45,90
    gancore rotate a.jpg b.jpg c.jpg --run runs/drgan-multi-cpu --out strip.png  # one person, fused with ω
    gancore rotate me.jpg --run runs/drgan-cpu --out front.png --frontal       # frontal face pasted back
    gancore verify a.jpg b.jpg --run runs/drgan-cpu [--json]

Each photo's face is found and aligned like the training data (:mod:`gancore.photo`; the
largest face of each photo, or ``--box``), encoded once by G_enc; several photos of one
person are fused with G_enc's confidences ω (a single-image run, which has no ω, takes
their plain mean).  ``rotate`` decodes the identity at each requested pose (z = 0) into a
strip: the aligned inputs, then one column per pose; with ``--frontal`` it pastes the
frontal face back into the first photo.  ``verify`` compares the cosine of f(A) and f(B)
with the threshold chosen on held-out identities and stored with the run
(``RUN/drgan_verify.json``, written by ``gancore eval`` or, if missing, here).

A model trained on synthfaces has never seen a real face: on real photos it produces
synthetic-looking faces and meaningless similarities.  Train on real data for real photos
(``data.source = "multipie"`` or ``"cfp"`` with ``data.root``).  Problems (no face, an
unreadable file, a run that is not a DR-GAN run, a pose the run does not have) print one
line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

__all__ = ["configure_rotate", "run_rotate", "configure_verify", "run_verify", "RotateError", "load_drgan_run",
           "run_yaws", "face_crops", "identity_of", "rotation_strip"]

#: the schedule whose runs these verbs apply.
SCHEDULE = "drgan.schedule"


class RotateError(ValueError):
    """A bad option or an unusable run; the message says which."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="folder of a trained DR-GAN run (schedule drgan.schedule)")
    parser.add_argument("--box", action="append", default=None, metavar="x,y,w,h",
                        help="face box in photo pixels, skipping detection: once for all photos or once per photo, in order")
    parser.add_argument("--checkpoint", default=None, metavar="DIR", help="a specific checkpoint (default: the latest)")


def configure_rotate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="photo(s) of one person (PNG/JPEG/WebP/BMP, any size)")
    parser.add_argument("--out", required=True, metavar="STRIP.png", help="output: the strip, or the photo with --frontal")
    _common(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--yaw", default=None, metavar="DEG,DEG,..",
                       help="poses of the strip in degrees, e.g. -90,-45,0,45,90 (default: every pose of the run; "
                            "pose indices for runs whose data has no angles)")
    group.add_argument("--frontal", action="store_true", help="render the frontal face and paste it back into the (first) photo")
    # let "--yaw -90,-45,0" through: argparse takes only plain negative numbers for values
    parser._negative_number_matcher = re.compile(r"^-\d[\d.,-]*$")  # noqa: SLF001 - no public hook for this


def configure_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo_a", metavar="A", help="first photo")
    parser.add_argument("photo_b", metavar="B", help="second photo")
    _common(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="cosine threshold for 'same' (default: the one stored with the run, chosen on held-out identities)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def load_drgan_run(run_dir: str, checkpoint: str | None = None) -> Any:
    """The trained run, or :class:`RotateError` if it cannot be loaded or is not a DR-GAN run."""
    from gancore.runs import load_run

    try:
        return load_run(run_dir, checkpoint, schedule=SCHEDULE,
                        hint="gancore rotate/verify need a run trained with a drgan recipe (e.g. recipes/drgan-cpu.toml)")
    except (ValueError, OSError) as e:  # RunError, RecipeError, checkpoint errors
        raise RotateError(f"cannot load run {run_dir!r}: {e}") from None


def run_yaws(run: Any) -> list[float] | None:
    """The yaw of each of the run's pose classes (from its training data; the standard
    Multi-PIE table when that data is not on this machine)."""
    from .poses import pose_yaws, standard_yaws

    poses = run.nets["G_dec"].poses
    try:
        yaws = pose_yaws(run.data("train").labels(), poses)
    except (ValueError, OSError):  # e.g. a real dataset's root that this machine lacks
        yaws = None
    if yaws is None and "yaw" in _provided(run):
        yaws = standard_yaws(poses)
    return yaws


def _provided(run: Any) -> tuple[str, ...]:
    try:
        return tuple(run.resolved.data_spec.load().provided_labels(run.resolved.data_config))
    except Exception:  # noqa: BLE001 - only used to decide whether angles exist
        return ()


def _boxes(boxes: list[str] | None, n: int) -> list[str | None]:
    if not boxes:
        return [None] * n
    if len(boxes) == 1:
        return boxes * n
    if len(boxes) != n:
        raise RotateError(f"--box was given {len(boxes)} times for {n} photos: give it once (all photos) or once per photo")
    return list(boxes)


def face_crops(photos: list[str], resolution: int, boxes: list[str] | None, report: bool = True) -> Any:
    """The aligned crop of each photo's largest face (or its ``--box``): ``[N, 3, R, R]``; with
    ``report``, one line per photo naming the box it used (``x,y,w,h``, what ``--box`` takes)."""
    import torch

    from gancore.photo import apply_to_photo

    crops = []
    for photo, box in zip(photos, _boxes(boxes, len(photos))):
        res = apply_to_photo(photo, lambda c: c, resolution, out_path=None, box=box)
        crops.append(res.crops[0])
        if report:
            x, y, w, h = res.faces[0].box
            print(f"{photo}: the face at {x},{y},{w},{h} ({res.faces[0].source})")
    return torch.stack(crops)


def identity_of(run: Any, crops: Any) -> Any:
    """One identity ``[1, F]`` from the crops of one person: fused with ω (plain mean without ω)."""
    import torch

    from .fusion import fuse
    from .metric import encode

    f, omega = encode(run.nets["G_enc"], crops)
    return fuse(f, omega, torch.zeros(len(f), dtype=torch.long), 1)


def rotation_strip(run: Any, crops: Any, poses: list[int]) -> Any:
    """``[3, R, (N + len(poses))·R]``: the aligned inputs, then the fused identity at each pose (z = 0)."""
    import torch

    dec = run.nets["G_dec"]
    f = identity_of(run, crops)
    with torch.no_grad():
        out = dec(f.expand(len(poses), -1), torch.tensor(poses)).float()
    if out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    cols = torch.cat([crops, out.clamp(-1, 1)])  # [N + P, 3, R, R]
    return torch.cat(list(cols), dim=2)  # side by side


def run_rotate(args: argparse.Namespace) -> int:
    """The verb: returns 0, or 2 with a one-line message on stderr."""
    import torch

    from gancore.photo import PhotoError, apply_to_photo, save_image

    from .poses import PoseError, frontal_pose, parse_yaws, yaw_name

    try:
        run = load_drgan_run(args.run, args.checkpoint)
        dec = run.nets["G_dec"]
        yaws = run_yaws(run)
        poses = parse_yaws(args.yaw, yaws, dec.poses) if args.yaw else list(range(dec.poses))
        R = run.info.resolution
        crops = face_crops(args.photos, R, args.box)
        if args.frontal:
            front = frontal_pose(yaws, dec.poses)
            with torch.no_grad():
                face = dec(identity_of(run, crops), torch.tensor([front])).float().clamp(-1, 1)
            face = face.expand(-1, 3, -1, -1) if face.shape[1] == 1 else face
            box = _boxes(args.box, len(args.photos))[0]
            res = apply_to_photo(args.photos[0], lambda c: face.expand(len(c), -1, -1, -1), R, out_path=args.out,
                                 box=box, mode="replace")
            print(f"pasted the frontal face ({len(args.photos)} photo(s) fused) into {args.photos[0]}; wrote {res.out_path}")
            return 0
        path = save_image(rotation_strip(run, crops, poses), args.out)
        names = ", ".join(yaw_name(yaws[p] if yaws else None, p) for p in poses)
        print(f"wrote {path}: {len(args.photos)} input(s), then {names}")
        return 0
    except (RotateError, PhotoError, PoseError) as e:
        print(f"gancore rotate: {e}", file=sys.stderr)
        return 2


def stored_threshold(run: Any) -> tuple[float, str]:
    """The run's verification threshold (computed on held-out identities and stored if missing)."""
    from .metric import VERIFY_FILE, verification_threshold, write_verify_file

    path = run.dir / VERIFY_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return float(data["threshold"]), str(path)
        except (ValueError, KeyError, TypeError) as e:
            raise RotateError(f"{path} is not a verification threshold file ({e}); delete it to recompute") from None
    print(f"gancore verify: no {VERIFY_FILE} in {run.dir}; choosing the threshold on the run's held-out identities",
          file=sys.stderr)
    result = verification_threshold(run)
    write_verify_file(run, result)
    return float(result["threshold"]), str(path)


def run_verify(args: argparse.Namespace) -> int:
    """The verb: prints the similarity and the decision; 0, or 2 with a one-line message."""
    import torch.nn.functional as F

    from gancore.photo import PhotoError

    from .metric import encode

    try:
        run = load_drgan_run(args.run, args.checkpoint)
        crops = face_crops([args.photo_a, args.photo_b], run.info.resolution, args.box, report=not args.json)
        f, _ = encode(run.nets["G_enc"], crops)
        cos = float(F.cosine_similarity(f[0:1], f[1:2]))
        if args.threshold is not None:
            threshold, source = float(args.threshold), "--threshold"
        else:
            threshold, source = stored_threshold(run)
        same = cos >= threshold
        if args.json:
            print(json.dumps({"a": args.photo_a, "b": args.photo_b, "cosine": round(cos, 6), "threshold": threshold,
                              "same": same, "threshold_from": source}))
        else:
            verdict = "same person" if same else "different people"
            print(f"{args.photo_a} vs {args.photo_b}: cosine {cos:.4f} {'>=' if same else '<'} threshold "
                  f"{threshold:.4f} ({source}): {verdict}")
        return 0
    except (RotateError, PhotoError) as e:
        print(f"gancore verify: {e}", file=sys.stderr)
        return 2
