"""Multi-image DR-GAN's fusion (CVPR Fig. 3): one identity from n images of a subject.

    f(x_1, ..., x_n) = Σ_i ω_i f(x_i) / Σ_i ω_i

with the confidences ω_i ∈ (0, 1) that G_enc predicts per image.  Images of a batch are
laid out group after group (``group`` ``[N]``: 0..G−1, contiguous, as a grouped stream
delivers them); every group is fused into one row.  During training a random subset of
each group is dropped from the fusion (dropout on ω), so that one model serves any n from
1 to n_max — but never every image of a group.
"""

from __future__ import annotations

import torch

__all__ = ["fuse", "drop_confidences", "local_groups", "group_count"]

#: the smallest Σω the fusion divides by (the official code adds 1e-6 to the sum).
EPS = 1e-6


def local_groups(group: torch.Tensor) -> torch.Tensor:
    """Group indices renumbered from 0 (a micro-batch of a grouped stream may start at any group)."""
    return group.long() - group[:1].long()


def group_count(group: torch.Tensor) -> int:
    """Number of groups of contiguous ``group`` indices starting at 0 (one scalar read)."""
    return int(group[-1]) + 1 if group.numel() else 0


def fuse(f: torch.Tensor, omega: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """Confidence-weighted mean of the features of each group: ``[G, F]``.

    :param f: features ``[N, F]``; :param omega: confidences ``[N]`` (0 = left out);
    :param group: group of each image ``[N]`` in 0..groups−1.
    Invariant to the order of images within a group; a group of one image gives its ``f``.
    """
    if f.dim() != 2 or omega.shape != f.shape[:1] or group.shape != f.shape[:1]:
        raise ValueError(f"fuse expects f [N, F], omega [N], group [N]; got {tuple(f.shape)}, "
                         f"{tuple(omega.shape)}, {tuple(group.shape)}")
    idx = group.long()
    num = f.new_zeros(groups, f.shape[1]).index_add(0, idx, omega[:, None].to(f.dtype) * f)  # Σ ω_i f_i
    den = f.new_zeros(groups).index_add(0, idx, omega.to(f.dtype))  # Σ ω_i
    return num / den.clamp_min(EPS)[:, None]


def drop_confidences(omega: torch.Tensor, group: torch.Tensor, groups: int, p: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``omega`` with each image dropped (set to 0) with probability ``p``, never all of a group.

    In a group whose every image drew "drop", the image with the largest draw is kept, so
    each group keeps at least one image.  No rescaling is needed: the fusion divides by Σω.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"confidence dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return omega
    r = torch.rand(omega.shape, device=omega.device, generator=generator)  # [N]
    best = torch.full((groups,), -1.0, device=omega.device).scatter_reduce(0, group.long(), r, "amax")
    keep = (r >= p) | (r == best[group.long()])
    return omega * keep.to(omega.dtype)
