"""Pose classes and yaw angles.

DR-GAN's pose code is a class index 0..N_p−1 (label ``pose`` of the data).  What angle a
class means comes from the data's ``yaw`` label (synthfaces' ``multipie`` profile and the
Multi-PIE reader: 15° steps, −90°..90° for 13 poses, −60°..60° for the CVPR protocol's 9);
sources without yaw (CFP: frontal / profile) have no angles, and the CLI then takes pose
indices instead of degrees.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pose_yaws", "standard_yaws", "frontal_pose", "parse_yaws", "PoseError", "yaw_name"]


class PoseError(ValueError):
    """A requested pose the model has no class for; the message lists the ones it has."""


def standard_yaws(poses: int) -> list[float] | None:
    """Yaws of the Multi-PIE layouts: 13 poses −90..90° or the 9 central ones −60..60°, 15° apart."""
    if poses in (13, 9, 7, 5, 3):
        half = (poses - 1) // 2
        return [15.0 * (k - half) for k in range(poses)]
    return None


def pose_yaws(labels: dict[str, torch.Tensor], poses: int) -> list[float] | None:
    """Mean ``yaw`` of each pose class in a label table (None without a ``yaw`` label or if a class is absent)."""
    if "yaw" not in labels or "pose" not in labels:
        return None
    pose, yaw = labels["pose"].long(), labels["yaw"].float()
    out = []
    for p in range(poses):
        sel = pose == p
        if not bool(sel.any()):
            return None
        out.append(round(float(yaw[sel].mean()), 3))
    return out


def frontal_pose(yaws: Sequence[float] | None, poses: int) -> int:
    """The class nearest 0° yaw (the middle class when angles are unknown)."""
    if yaws is None:
        return poses // 2 if poses > 2 else 0
    return min(range(len(yaws)), key=lambda p: abs(yaws[p]))


def yaw_name(yaw: float | None, pose: int) -> str:
    return f"{yaw:+.0f}°" if yaw is not None else f"pose {pose}"


def parse_yaws(text: str, yaws: Sequence[float] | None, poses: int) -> list[int]:
    """``"-90,-45,0"`` (degrees) → pose classes; with no known angles, ``"0,1"`` are class indices.

    Every value must be one of the model's poses; the error lists them.
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise PoseError(f"--yaw expects comma-separated angles, got {text!r}")
    out = []
    for item in items:
        try:
            v = float(item)
        except ValueError:
            raise PoseError(f"--yaw expects numbers (degrees), got {item!r}") from None
        if yaws is None:
            if not v.is_integer() or not 0 <= v < poses:
                raise PoseError(f"this run's poses have no known angles; give pose indices 0..{poses - 1}, got {item!r}")
            out.append(int(v))
            continue
        best = min(range(len(yaws)), key=lambda p: abs(yaws[p] - v))
        if abs(yaws[best] - v) > 1.0:
            have = ", ".join(f"{y:g}" for y in yaws)
            raise PoseError(f"the run has no pose at {v:g}°; its poses are {have} (degrees)")
        out.append(best)
    return out
