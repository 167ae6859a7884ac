"""Generic loss terms every recipe can use: pixel distances, total variation,
classification and adversarial terms."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from ..losses import LossConfig, LossTerm, sum_per_sample

__all__ = ["L1", "L2", "TotalVariation", "CrossEntropy", "Adversarial"]


class _Reduce(LossConfig):
    reduction: Literal["mean", "sum_per_sample"] = Field(
        "mean", description="'mean' over every element, or summed per sample and averaged over the batch"
    )


def _reduce(values: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return values.mean()
    return sum_per_sample(values)


class L1(LossTerm):
    """Mean absolute difference between ``pred`` and ``target``."""

    Config = _Reduce
    reads = ("pred", "target")

    def compute(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _reduce((pred - target).abs(), self.config.reduction)


class L2(LossTerm):
    """Mean squared difference between ``pred`` and ``target``."""

    Config = _Reduce
    reads = ("pred", "target")

    def compute(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _reduce((pred - target).square(), self.config.reduction)


class TVConfig(LossConfig):
    norm: Literal["l1", "l2"] = Field("l1", description="absolute (anisotropic) or squared neighbour differences")


class TotalVariation(LossTerm):
    """Total variation of ``image`` [B, C, H, W]: mean neighbour difference (suppresses ghosting)."""

    Config = TVConfig
    reads = ("image",)

    def compute(self, image: torch.Tensor) -> torch.Tensor:
        dy = image[..., 1:, :] - image[..., :-1, :]
        dx = image[..., :, 1:] - image[..., :, :-1]
        if self.config.norm == "l1":
            return dy.abs().mean() + dx.abs().mean()
        return dy.square().mean() + dx.square().mean()


class CrossEntropy(LossTerm):
    """Softmax cross-entropy of ``logits`` [B, K] against class indices ``target`` [B]."""

    Config = LossConfig
    reads = ("logits", "target")

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long())


class AdvConfig(LossConfig):
    target: Literal["real", "fake"] = Field("real", description="what the logits should be judged as")
    mode: Literal["nonsaturating", "hinge", "lsgan"] = Field("nonsaturating", description="GAN objective")
    player: Literal["discriminator", "generator"] = Field(
        "discriminator", description="whose objective this is: the discriminator's, or the generator's (target real)"
    )

    @model_validator(mode="after")
    def _generator_wants_real(self) -> AdvConfig:
        if self.player == "generator" and self.target != "real":
            raise ValueError("an adversarial term with player = 'generator' has target 'real' (the generator wants "
                             "its output judged real)")
        return self


class Adversarial(LossTerm):
    """Binary adversarial loss on discriminator ``logits``: push them towards ``target``.

    ============== ============================ ============================ =================
    mode           discriminator, target real   discriminator, target fake   generator
    ============== ============================ ============================ =================
    nonsaturating  softplus(−l)                 softplus(l)                  softplus(−l)
    hinge          relu(1 − l)                  relu(1 + l)                  −l
    lsgan          (l − 1)²                     l²                           (l − 1)²
    ============== ============================ ============================ =================

    (each averaged over the batch).  The hinge generator term is the usual −mean D(G(·)),
    which keeps its gradient where the discriminator's hinge has saturated.
    """

    Config = AdvConfig
    reads = ("logits",)

    def compute(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        c = self.config
        real = c.target == "real"
        if c.mode == "nonsaturating":
            return F.softplus(-logits).mean() if real else F.softplus(logits).mean()
        if c.mode == "hinge":
            if c.player == "generator":
                return -logits.mean()
            return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
        return (logits - (1.0 if real else 0.0)).square().mean()
