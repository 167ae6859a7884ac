"""What TD-GAN's evaluation and CLI need to know about tags in the data.

- :func:`tag_degrees`: the angle of each value of a view-like tag (``view`` → the
  ``azimuth`` label, ``pose`` → ``yaw``), so ``--tag view=30deg`` and the figures' "every
  30°" can be turned into class values.
- :func:`images_with_tag`: the true image of samples with one tag changed.  A source that
  renders counterfactuals (synthchairs, synthfaces: ``factors`` + ``render``) draws the same
  sample with only that factor changed (same chair or face, same light, background, …);
  otherwise the split is searched for the sample with the same identity and every other
  key label equal (real 3D chairs: the render of that model at that view).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["tag_degrees", "set_tag", "LabelIndex", "images_with_tag", "nearest_degrees"]

#: labels that give a view-like tag's angle in degrees.
DEGREE_LABELS = {"view": "azimuth", "pose": "yaw"}


def tag_degrees(labels: dict[str, torch.Tensor], tag: str) -> dict[int, float] | None:
    """``{value: degrees}`` of a view-like tag from the data's labels, or None if it has no angle."""
    comp = DEGREE_LABELS.get(tag)
    if comp is None or comp not in labels or tag not in labels:
        return None
    v, d = labels[tag], labels[comp].float()
    keep = (v >= 0) & torch.isfinite(d)
    v, d = v[keep], d[keep]
    return {int(k): float(d[v == k].mean()) for k in v.unique().tolist()}


def nearest_degrees(degrees: dict[int, float], angle: float) -> int:
    """The value whose angle is nearest to ``angle`` (on the circle)."""
    def dist(a: float) -> float:
        return abs((a - angle + 180.0) % 360.0 - 180.0)

    return min(degrees, key=lambda k: (dist(degrees[k]), k))


def set_tag(factors: dict[str, torch.Tensor], tag: str, value: int,
            degrees: dict[int, float] | None = None) -> dict[str, torch.Tensor] | None:
    """``factors`` with tag ``tag`` set to ``value``, or None if this source's factors cannot express it.

    Knows the synthetic sources: a tag that is itself a factor (synthchairs ``view``,
    ``light``; synthfaces ``light``) is set directly; synthfaces' ``pose`` is its ``yaw``
    (the pose's angle) and its ``expression`` is ``smile + 2·mouth_open``.  ``identity`` is
    never set this way (an identity is many factors).
    """
    if tag == "identity":
        return None
    f = dict(factors)
    n = len(next(iter(f.values())))
    if tag == "pose" and "yaw" in f and "pose" not in f:
        if not degrees or value not in degrees:
            return None
        f["yaw"] = torch.full((n,), degrees[value], dtype=f["yaw"].dtype)
        return f
    if tag == "expression" and "smile" in f and "mouth_open" in f and "expression" not in f:
        f["smile"] = torch.full((n,), value % 2, dtype=f["smile"].dtype)
        f["mouth_open"] = torch.full((n,), value // 2, dtype=f["mouth_open"].dtype)
        return f
    if tag in f:
        f[tag] = torch.full((n,), value, dtype=f[tag].dtype)
        return f
    return None


class LabelIndex:
    """Sample index by the values of some labels: ``find((id, view, elev))`` → index or None."""

    def __init__(self, labels: dict[str, torch.Tensor], keys: Sequence[str]) -> None:
        self.keys = list(keys)
        cols = torch.stack([labels[k].long() for k in self.keys], 1).tolist()
        self.table: dict[tuple[int, ...], int] = {}
        for i, row in enumerate(cols):
            self.table.setdefault(tuple(row), i)

    def find(self, row: Sequence[int]) -> int | None:
        return self.table.get(tuple(int(v) for v in row))


def images_with_tag(source: Any, labels: dict[str, torch.Tensor], index: LabelIndex | None, idx: Sequence[int],
                    tag: str, value: int, degrees: dict[int, float] | None = None,
                    render: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """True images of samples ``idx`` with ``tag`` set to ``value``: ``(images [B, C, H, W] or None, found [B] bool)``.

    With ``render`` and a source that renders counterfactuals, every sample is drawn again
    with only that factor changed; otherwise ``index`` (keyed by identity and the other
    labels that must stay equal, ``tag`` among them) finds each sample's twin in the split.
    Rows not found are zeros with ``found`` False.
    """
    idx = list(idx)
    if render and hasattr(source, "factors") and hasattr(source, "render"):
        f = set_tag(source.factors(idx), tag, value, degrees)
        if f is not None:
            return source.render(f), torch.ones(len(idx), dtype=torch.bool)
    if index is None:
        return None, torch.zeros(len(idx), dtype=torch.bool)
    pos = index.keys.index(tag)
    twins = []
    for i in idx:
        row = [int(labels[k][i]) for k in index.keys]
        row[pos] = value
        twins.append(index.find(row))
    found = torch.tensor([t is not None for t in twins], dtype=torch.bool)
    if not bool(found.any()):
        return None, found
    got = source.load([t for t in twins if t is not None])["image"]
    out = torch.zeros(len(idx), *got.shape[1:])
    out[found] = got
    return out, found
