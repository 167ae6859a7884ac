"""True counterfactuals from synthfaces: the same face rendered with one attribute flipped,
and the ground-truth mask of the image region the attribute occupies.

Which scene factor each binary label flips, and which rendered part masks it:

=======================  ===================  ================  ===============
label                    factor               values (0 → 1)    mask part
=======================  ===================  ================  ===============
Eyeglasses               glasses              0 → 1 or 2 *      glasses
eyeglasses               glasses              0 → 1             glasses
sunglasses               glasses              0 → 2             glasses
Smiling / smile          smile                0 → 1             mouth
Mouth_Slightly_Open      mouth_open           0 → 1             mouth
mouth_open               mouth_open           0 → 1             mouth
No_Beard                 beard (inverted)     1 → 0             beard
beard                    beard                0 → 1             beard
Mustache / moustache     moustache            0 → 1             beard
Bangs                    bangs                0 → 1             hair
=======================  ===================  ================  ===============

\\* CelebA's ``Eyeglasses`` counts clear glasses and sunglasses (synthfaces ``glasses`` 1
and 2).  Adding it has two true answers; the face is rendered with each and the one
nearer (L2) to the model's output is the counterfactual (``choose``).  The mask is the
union of the part's coverage in the original and the counterfactual render (a pixel
counts when its coverage exceeds 0.5 in either).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["FLIPS", "require_synthfaces", "counterfactuals"]

#: label → (factor, values meaning "attribute = 0", values meaning "attribute = 1", mask part)
FLIPS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...], str]] = {
    "Eyeglasses": ("glasses", (0,), (1, 2), "glasses"),
    "eyeglasses": ("glasses", (0,), (1,), "glasses"),
    "sunglasses": ("glasses", (0,), (2,), "glasses"),
    "Smiling": ("smile", (0,), (1,), "mouth"),
    "smile": ("smile", (0,), (1,), "mouth"),
    "Mouth_Slightly_Open": ("mouth_open", (0,), (1,), "mouth"),
    "mouth_open": ("mouth_open", (0,), (1,), "mouth"),
    "No_Beard": ("beard", (1,), (0,), "beard"),
    "beard": ("beard", (0,), (1,), "beard"),
    "Mustache": ("moustache", (0,), (1,), "beard"),
    "moustache": ("moustache", (0,), (1,), "beard"),
    "Bangs": ("bangs", (0,), (1,), "hair"),
}


def require_synthfaces(source: Any) -> None:
    """Raise a clear error unless ``source`` can render counterfactuals of its attribute."""
    from .metric import MetricError

    if not (hasattr(source, "factors") and hasattr(source, "render")):
        raise MetricError(
            f"residual.edit needs synthetic data with true counterfactual renders (data.source = 'synthfaces'); "
            f"this run's data is {type(source).__name__}, which has no factors/render"
        )
    attr = source.config.attribute
    if attr not in FLIPS:
        raise MetricError(f"residual.edit cannot flip data.attribute = {attr!r}; it knows {', '.join(FLIPS)}")


def counterfactuals(
    source: Any, indices: Sequence[int], choose: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, true counterfactuals and attribute masks of samples ``indices``.

    :param choose: ``fn(x) -> output`` of the model; used only when the attribute has
        several true "on" values (``Eyeglasses``: clear glasses or sunglasses), to pick the
        one nearest the output.  Without it the first value is used.
    :returns: ``x [B, 3, R, R]``, ``cf [B, 3, R, R]`` (both in [-1, 1]) and
        ``mask [B, 1, R, R]`` in {0, 1}.
    """
    factor, off, on, part = FLIPS[source.config.attribute]
    f = source.factors(list(indices))
    x, m = source.render(f, masks=True)
    has = torch.isin(f[factor], torch.tensor(on))
    options = [on[0]] if choose is None else list(on)
    best_cf, best_mask, best_d = None, None, None
    out = choose(x) if choose is not None and len(options) > 1 else None
    for value in options:
        g = dict(f)
        g[factor] = torch.where(has, torch.full_like(f[factor], off[0]), torch.full_like(f[factor], value))
        cf, mc = source.render(g, masks=True)
        mask = ((m[part] > 0.5) | (mc[part] > 0.5)).float()[:, None]  # [B, 1, R, R]
        if out is None:
            best_cf, best_mask = cf, mask
            break
        d = (out - cf).square().flatten(1).sum(1)  # [B]
        if best_d is None:
            best_cf, best_mask, best_d = cf, mask, d
        else:
            pick = d < best_d
            best_cf = torch.where(pick[:, None, None, None], cf, best_cf)
            best_mask = torch.where(pick[:, None, None, None], mask, best_mask)
            best_d = torch.minimum(d, best_d)
    return x, best_cf, best_mask
