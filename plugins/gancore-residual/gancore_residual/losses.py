"""ResGAN's two regularisers as reusable loss terms.

- ``residual.sparsity``: α·‖r‖₁ — the residual should touch few pixels
  (summed over pixels and channels, averaged over the batch; α = 5e-4).
- ``residual.perceptual``: β·‖φ(x) − φ(x̃)‖₁ — input and output should look alike to
  the discriminator's intermediate layer φ (summed over the feature map, averaged over
  the batch; β = 0.1·α = 5e-5).

The weights are those hard-coded by the wkcw reimplementation (papers.md §1.3); the
paper's own values are unverified.  The GAN, dual and discriminator terms are plain
3-class cross-entropies and use gancore's built-in ``ce`` term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from gancore.losses import LossConfig, LossTerm, sum_per_sample

__all__ = ["ResidualSparsity", "PerceptualL1"]


class SparsityConfig(LossConfig):
    weight: float = Field(5e-4, description="α, multiplier of ‖r‖₁ (5e-4: wkcw/flere233)")


class ResidualSparsity(LossTerm):
    """α·‖r‖₁ of ``residual`` ``[B, C, H, W]``: summed per image, averaged over the batch."""

    Config = SparsityConfig
    reads = ("residual",)
    default_name = "residual.sparsity"

    def compute(self, residual: torch.Tensor) -> torch.Tensor:
        return sum_per_sample(residual.float().abs())


class PerceptualConfig(LossConfig):
    weight: float = Field(5e-5, description="β, multiplier of ‖φ(x) − φ(x̃)‖₁ (5e-5 = 0.1·α: wkcw)")


class PerceptualL1(LossTerm):
    """β·‖φ(x) − φ(x̃)‖₁ between two feature lists (``real``: φ of the inputs, ``fake``: φ of
    the outputs; each a tensor ``[B, ...]`` or a list of them, compared pairwise).  Summed
    over each feature map, averaged over the batch, summed over the list."""

    Config = PerceptualConfig
    reads = ("real", "fake")
    default_name = "residual.perceptual"

    def compute(self, real: torch.Tensor | Sequence[torch.Tensor], fake: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        real_l = [real] if isinstance(real, torch.Tensor) else list(real)
        fake_l = [fake] if isinstance(fake, torch.Tensor) else list(fake)
        if len(real_l) != len(fake_l) or not real_l:
            raise ValueError(
                f"loss {self.name!r}: needs two equally long, non-empty feature lists; got {len(real_l)} and {len(fake_l)}"
            )
        total = None
        for a, b in zip(real_l, fake_l):
            if a.shape != b.shape:
                raise ValueError(f"loss {self.name!r}: feature shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
            v = sum_per_sample((a.float() - b.float()).abs())
            total = v if total is None else total + v
        return total
