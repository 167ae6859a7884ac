"""TD-GAN's four terms (papers.md §4.2) as reusable loss terms.

- ``tdgan.f1``  f1(R, g) = 1/|X^L| Σ ‖R(x) − g(C)‖²: the image's representation agrees
  with its tags' (every block concatenated).
- ``tdgan.f2``  f2(G, g) = 1/|X^L| Σ ‖G(g(C)) − x‖²: rendering from the tags alone.
- ``tdgan.f1u`` f̃1(G, R) = 1/|X^U| Σ ‖G(R(x)) − x‖²: autoencoding untagged images.
- ``tdgan.f3``  f3(R, G, D) = E[log D(x)] + E[log(1 − D(G(R(x))))]: adversarial, on the
  image → R → G reconstructions.  ``player = "discriminator"`` is what D minimises (−f3);
  ``player = "generator"`` what R and G minimise: with ``mode = "minimax"`` f3's fake part
  itself, E[log(1 − D(G(R(x))))] (the paper's objective, which saturates while D wins),
  with ``"nonsaturating"`` −E[log D(G(R(x)))] (the usual practice; default), or the
  hinge / least-squares forms.

``reduction`` of the squared norms: ``"sum"`` is the paper's ‖·‖² (summed over a sample's
elements, averaged over samples); ``"mean"`` also averages over the elements (the same
term divided by the number of elements per sample: resolution-independent weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from gancore.losses import LossConfig, LossTerm

__all__ = ["TagConsistency", "TagRendering", "UntaggedReconstruction", "TagAdversarial", "squared_norm", "flat_blocks"]

Reduction = Literal["sum", "mean"]


def flat_blocks(rep: Mapping[str, torch.Tensor] | torch.Tensor, order: list[str] | None = None) -> torch.Tensor:
    """A representation (``{tag: [B, n]}`` or a tensor ``[B, ...]``) as one ``[B, N]`` tensor."""
    if isinstance(rep, torch.Tensor):
        return rep.flatten(1)
    keys = order if order is not None else list(rep)
    return torch.cat([rep[k].flatten(1) for k in keys], dim=1)


def squared_norm(a: torch.Tensor, b: torch.Tensor, reduction: str) -> torch.Tensor:
    """‖a − b‖² per sample, averaged over the batch (``"sum"``), or the plain element mean (``"mean"``)."""
    d = (a.float() - b.float()).square().flatten(1)  # [B, N]
    return d.sum(1).mean() if reduction == "sum" else d.mean()


class NormConfig(LossConfig):
    reduction: Reduction = Field("sum", description="'sum': the paper's squared L2 norm per sample; 'mean': per element")


class TagConsistency(LossTerm):
    """f1: ‖R(x) − g(C)‖² between ``image_rep`` and ``tag_rep`` (``{tag: [B, n]}`` with the same tags, or tensors)."""

    Config = NormConfig
    reads = ("image_rep", "tag_rep")
    default_name = "f1"

    def compute(self, image_rep: Mapping[str, torch.Tensor] | torch.Tensor,
                tag_rep: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        order = None
        if not isinstance(image_rep, torch.Tensor) or not isinstance(tag_rep, torch.Tensor):
            if isinstance(image_rep, torch.Tensor) or isinstance(tag_rep, torch.Tensor) or set(image_rep) != set(tag_rep):
                got = [list(r) if not isinstance(r, torch.Tensor) else "tensor" for r in (image_rep, tag_rep)]
                raise ValueError(f"loss {self.name!r}: R(x) and g(C) must have the same tag blocks, got {got[0]} and {got[1]}")
            order = list(image_rep)
        a, b = flat_blocks(image_rep, order), flat_blocks(tag_rep, order)
        if a.shape != b.shape:
            raise ValueError(f"loss {self.name!r}: R(x) is {tuple(a.shape)}, g(C) is {tuple(b.shape)}")
        return squared_norm(a, b, self.config.reduction)


class TagRendering(LossTerm):
    """f2: ‖G(g(C)) − x‖² between ``render`` and ``real`` images ``[B, C, H, W]``."""

    Config = NormConfig
    reads = ("render", "real")
    default_name = "f2"

    def compute(self, render: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return squared_norm(render, real, self.config.reduction)


class UntaggedReconstruction(LossTerm):
    """f̃1: ‖G(R(x)) − x‖² between ``recon`` and ``real`` images of untagged samples."""

    Config = NormConfig
    reads = ("recon", "real")
    default_name = "f1u"

    def compute(self, recon: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return squared_norm(recon, real, self.config.reduction)


class AdvConfig(LossConfig):
    player: Literal["discriminator", "generator"] = Field(
        "discriminator", description="'discriminator': D's side (-f3, reads real and fake logits); 'generator': R's and G's"
    )
    mode: Literal["nonsaturating", "minimax", "hinge", "lsgan"] = Field(
        "nonsaturating",
        description="generator side: 'minimax' = the paper's log(1 - D(G(R(x)))), 'nonsaturating' = -log D(G(R(x))); "
        "D's side is the same binary cross-entropy for both",
    )


class TagAdversarial(LossTerm):
    """f3 on D's logits: D's side reads ``real_logits`` and ``fake_logits`` [B]; the generator side ``fake_logits`` only."""

    Config = AdvConfig
    reads = ("real_logits", "fake_logits")
    default_name = "f3"

    def __init__(self, config: object = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        if self.config.player == "generator":
            if "real_logits" in self.config.inputs:
                raise ValueError(f"loss {self.name!r}: the generator side reads only fake_logits, not real_logits")
            self.reads = ("fake_logits",)  # the generator side has no use for D(x): it is never computed for it

    def compute(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        f, mode = fake_logits.float(), self.config.mode
        if self.config.player == "generator":
            if mode == "minimax":
                return -F.softplus(f).mean()  # log(1 - sigmoid(f)) = -softplus(f)
            if mode == "nonsaturating":
                return F.softplus(-f).mean()  # -log sigmoid(f)
            if mode == "hinge":
                return -f.mean()
            return (f - 1).square().mean()
        r = real_logits.float()  # type: ignore[union-attr]
        if mode in ("minimax", "nonsaturating"):
            return F.softplus(-r).mean() + F.softplus(f).mean()  # -[log D(x) + log(1 - D(G(R(x))))]
        if mode == "hinge":
            return F.relu(1 - r).mean() + F.relu(1 + f).mean()
        return (r - 1).square().mean() + f.square().mean()
