"""CAAE's age groups and how labels are coded for the networks.

The paper and the official code bin ages into 10 groups (0–5, 6–10, 11–15, 16–20, 21–30,
31–40, 41–50, 51–60, 61–70, 71+).  The paper feeds G a 0/1 one-hot; the official code uses
-1/+1 and tiles it (age ×5, gender ×25) so the label has about as many numbers as z.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import repeat

__all__ = [
    "AGE_GROUPS", "GROUP_NAMES", "MID_AGES", "age_to_group", "group_of_age",
    "code_labels", "LabelCoding",
]

#: (first, last) age in years of each group; the last group is open ended (71+).
AGE_GROUPS: tuple[tuple[int, int | None], ...] = (
    (0, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 40), (41, 50), (51, 60), (61, 70), (71, None),
)
#: printable names, e.g. "21-30", "71+".
GROUP_NAMES: tuple[str, ...] = tuple(f"{a}-{b}" if b is not None else f"{a}+" for a, b in AGE_GROUPS)
#: a representative age of each group (its middle; 78 for the open 71+ group), used to
#: render the true counterfactual face at a target group.
MID_AGES: tuple[float, ...] = (3.0, 8.0, 13.0, 18.0, 25.5, 35.5, 45.5, 55.5, 65.5, 78.0)

LabelCoding = Literal["onehot", "pm1"]


def age_to_group(age: torch.Tensor) -> torch.Tensor:
    """Age group index (long, 0..9) of ages in years (any shape, float or int).

    Fractional ages are floored first (a 5.7-year-old is 5, group 0), as whole-year
    datasets like UTKFace count them.
    """
    bounds = torch.tensor([b for _, b in AGE_GROUPS[:-1]], dtype=torch.float32)  # upper bounds 5..70
    return torch.bucketize(torch.floor(age.float()), bounds)  # a <= 5 -> 0, 5 < a <= 10 -> 1, ...



def group_of_age(age: float) -> int:
    """:func:`age_to_group` for one number; a clear error for a negative age."""
    if age < 0:
        raise ValueError(f"age must be >= 0 years, got {age}")
    return int(age_to_group(torch.tensor([float(age)]))[0])


def code_labels(labels: torch.Tensor, classes: int, coding: LabelCoding = "onehot", repeat_by: int = 1) -> torch.Tensor:
    """Code class labels as the vector the networks read.

    :param labels: class indices ``[B]`` (long) or already soft/one-hot weights
        ``[B, classes]`` (float; lets callers blend two age groups).
    :param coding: ``"onehot"`` → 0/1 (paper), ``"pm1"`` → -1/+1 (official code).
    :param repeat_by: tile the code this many times (official code: 5 for age).
    :returns: ``[B, classes * repeat_by]``.
    """
    if labels.dim() == 1:
        if labels.dtype.is_floating_point:
            raise TypeError("class labels must be integer indices [B] or weights [B, classes]")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(f"label values must lie in 0..{classes - 1}, got {labels.min().item()}..{labels.max().item()}")
        onehot = torch.nn.functional.one_hot(labels.long(), classes).float()
    elif labels.dim() == 2 and labels.shape[1] == classes:
        onehot = labels.float()
    else:
        raise ValueError(f"labels must be [B] indices or [B, {classes}] weights, got shape {tuple(labels.shape)}")
    code = onehot * 2.0 - 1.0 if coding == "pm1" else onehot
    return repeat(code, "b k -> b (r k)", r=repeat_by)  # [B, classes * repeat_by]
