"""DR-GAN's loss terms (eqs. 4, 5 and 7 of the CVPR paper), as registered, reusable terms.

All three are softmax cross-entropies on D's heads:

- ``drgan.identity``: −log D^d_y(x) — the identity logits ``[B, N_d + 1]`` (or ``[B, N_d]``)
  against identity labels ``[B]``.  D uses it on real images (their own identity), G on its
  syntheses (the *input's* identity).
- ``drgan.pose``: −log D^p_y(x) — the pose logits ``[B, N_p]`` against pose labels: D on real
  images (their own pose), G on its syntheses (the *requested* pose c).
- ``drgan.synthetic``: −log D^d_{N_d+1}(G(x, c, z)) — D pushes its syntheses into the last
  identity class, the paper's "synthetic" class of the same softmax.

Labels of ``-1`` (missing, e.g. with ``data.label_fraction < 1``) are left out of the mean;
a batch without any labelled sample gives 0 (with graph), never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gancore.losses import LossConfig, LossTerm

__all__ = ["IdentityLoss", "PoseLoss", "SyntheticLoss", "masked_cross_entropy"]


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over the samples whose ``target`` is not -1 (no host sync)."""
    target = target.long()
    valid = target >= 0
    per = F.cross_entropy(logits.float(), target.clamp_min(0), reduction="none")  # [B]
    per = per * valid
    return per.sum() / valid.sum().clamp_min(1)


class _SoftmaxTerm(LossTerm):
    Config = LossConfig
    reads = ("logits", "target")

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f"loss {self.name!r}: expects logits [B, K] and targets [B], got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        return masked_cross_entropy(logits, target)


class IdentityLoss(_SoftmaxTerm):
    """−log D^d_y: softmax cross-entropy of identity ``logits`` [B, N_d(+1)] against identity ``target`` [B]."""


class PoseLoss(_SoftmaxTerm):
    """−log D^p_y: softmax cross-entropy of pose ``logits`` [B, N_p] against pose ``target`` [B]."""


class SyntheticLoss(LossTerm):
    """−log D^d_{N_d+1}: push identity ``logits`` [B, N_d + 1] of syntheses into the last (synthetic) class."""

    Config = LossConfig
    reads = ("logits",)

    def compute(self, logits: torch.Tensor) -> torch.Tensor:
        return -torch.log_softmax(logits.float(), dim=1)[:, -1].mean()
