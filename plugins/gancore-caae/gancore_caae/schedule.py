"""CAAE's training algorithm as a gancore schedule (``caae.aae``).

One iteration has three phases that share one forward pass of E and G:

===========  =========  ==============================================================
phase        steps      losses (defaults)
===========  =========  ==============================================================
``EG``       E, G       λ·recon(G(E(x), l), x) + γ·TV(G(E(x), l))
                        + w_z·adv(D_z(E(x)) → real) + w_img·adv(D_img(G(E(x), l), l) → real)
``Dz``       D_z        adv(D_z(z*) → real) + adv(D_z(E(x)) → fake),  z* ~ U(−1, 1)^50
``Dimg``     D_img      adv(D_img(x, l) → real) + adv(D_img(G(E(x), l), l) → fake)
===========  =========  ==============================================================

``z = E(x)`` and ``G(z, l)`` are computed once per iteration (``ctx.once``) and shared by
the three phases.  Training always reconstructs with the image's *own* label l; changing
the age happens only at test time.

**Update order** (``order``):

- ``"simultaneous"`` (default; the official code's single ``session.run`` of the three
  optimizers): EG, then D_z, then D_img.  The EG phase's adversarial gradients see the
  discriminators before they step, and the discriminators train on the numbers of E/G's
  outputs from before E/G stepped (``ctx.value(..., pre_step=True)``) — exactly the
  gradients of a simultaneous update, computed in three backward passes.
- ``"d_first"``: D_z, D_img, then EG.  The discriminators step first on the shared E/G
  outputs, then the EG phase backpropagates through the same forward (E and G have not
  stepped) and recomputes the discriminators' logits with their new weights — the usual
  alternating GAN update.

**Warm-up.** ``warmup`` steps of a plain autoencoder (adversarial weights 0, as the authors
advise), then the adversarial weights rise linearly over ``ramp`` steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from gancore.builtins.losses import L1, L2, Adversarial, TotalVariation
from gancore.losses import LossTerm
from gancore.parts import Config
from gancore.schedule import Context, Phase, Schedule

from .labels import GROUP_NAMES

__all__ = ["CAAESchedule"]


class CAAESchedule(Schedule):
    """CAAE (Zhang, Song & Qi 2017): E+G step, D_z step, D_img step, one shared forward pass."""

    roles = {"E": "encoder", "G": "generator", "Dz": "discriminator", "Dimg": "discriminator"}
    calls = {"E": "E(x [B, 3, R, R]) -> z [B, z_dim]",
             "G": "G(z [B, z_dim], age_group [B], gender [B] or None) -> image [B, 3, R, R]",
             "Dz": "Dz(z [B, z_dim]) -> DiscOutput(logits [B])",
             "Dimg": "Dimg(image [B, 3, R, R], age_group [B], gender [B] or None) -> DiscOutput(logits [B])"}

    class Config(Config):
        order: Literal["simultaneous", "d_first"] = Field(
            "simultaneous", description="'simultaneous' (official code: EG, Dz, Dimg on one forward) or 'd_first' (Dz, Dimg, then EG)"
        )
        recon: Literal["l2", "l1"] = Field("l2", description="reconstruction distance: 'l2' (paper) or 'l1' (official code)")
        recon_weight: float = Field(1.0, ge=0, description="λ, weight of the reconstruction term")
        tv_weight: float = Field(
            0.02, ge=0, description="γ, weight of total variation (squared differences; 0.02 ≈ the official 1e-4 on its sum-normalised TV at 128 px)"
        )
        z_weight: float = Field(1e-4, ge=0, description="weight of E's adversarial term against D_z (official, 2017: 1e-4)")
        img_weight: float = Field(1e-4, ge=0, description="weight of G's adversarial term against D_img (authors' advice: 1e-4)")
        warmup: int = Field(0, ge=0, description="steps of plain autoencoder training before the adversarial terms start")
        ramp: int = Field(0, ge=0, description="steps over which the adversarial weights rise linearly after the warm-up")
        gender: bool = Field(False, description="condition G and D_img on gender too (official code); needs label 'gender'")
        mode: Literal["nonsaturating", "hinge", "lsgan"] = Field("nonsaturating", description="GAN objective of all four adversarial terms")
        sample_faces: int = Field(6, ge=1, description="faces (columns) in the sample grid")

    # -- data ---------------------------------------------------------------------------------
    def required_labels(self) -> tuple[str, ...]:
        return ("age_group", "gender") if self.config.gender else ("age_group",)

    # -- the iteration ------------------------------------------------------------------------
    def _labels(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        b = ctx.batch["batch"]
        gender = b["gender"].long() if self.config.gender else None
        return b["image"], b["age_group"].long(), gender

    def _z(self, ctx: Context) -> torch.Tensor:
        x, _, _ = self._labels(ctx)
        return ctx.nets.E(x)  # [B, z_dim]

    def _recon(self, ctx: Context) -> torch.Tensor:
        _, age, gender = self._labels(ctx)
        return ctx.nets.G(ctx.once("z", lambda: self._z(ctx)), age, gender)  # [B, 3, R, R]

    def _shared(self, ctx: Context, graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """z = E(x) and recon = G(z, l), made once per iteration and shared: with their graph
        (E+G's phase), or their numbers (the discriminators' phases; under ``simultaneous``,
        the numbers from before E and G stepped)."""
        x, age, _ = self._labels(ctx)
        ctx["real"], ctx["age_group"] = x, age
        if graph:
            return ctx.once("z", lambda: self._z(ctx)), ctx.once("recon", lambda: self._recon(ctx))
        pre = self.config.order == "simultaneous"
        return (ctx.value("z", lambda: self._z(ctx), pre_step=pre),
                ctx.value("recon", lambda: self._recon(ctx), pre_step=pre))

    def _run_eg(self, ctx: Context) -> None:
        z, recon = self._shared(ctx, graph=True)
        _, age, gender = self._labels(ctx)
        ctx["z"], ctx["recon"] = z, recon
        # the discriminators only pass the gradient on to E and G here
        ctx["ez_logits"] = ctx.nets.Dz(z).logits  # [B]
        ctx["g_logits"] = ctx.nets.Dimg(recon, age, gender).logits  # [B]

    def _run_dz(self, ctx: Context) -> None:
        z, recon = self._shared(ctx, graph=False)
        ctx["z"], ctx["recon"] = z, recon
        prior = torch.rand_like(z) * 2 - 1  # z* ~ U(-1, 1)^z_dim
        ctx["z_prior"] = prior
        ctx["dz_prior_logits"] = ctx.nets.Dz(prior).logits
        ctx["dz_z_logits"] = ctx.nets.Dz(z).logits

    def _run_dimg(self, ctx: Context) -> None:
        z, recon = self._shared(ctx, graph=False)
        x, age, gender = self._labels(ctx)
        ctx["z"], ctx["recon"] = z, recon
        ctx["dimg_real_logits"] = ctx.nets.Dimg(x, age, gender).logits
        ctx["dimg_fake_logits"] = ctx.nets.Dimg(recon, age, gender).logits

    def _adv(self, logits: str, target: str, name: str, weight: float = 1.0, delayed: bool = False,
             player: str = "discriminator") -> LossTerm:
        c = self.config
        extra = {"start": c.warmup, "ramp": c.ramp} if delayed else {}
        return Adversarial(inputs={"logits": logits}, target=target, mode=c.mode, name=name, weight=weight,
                           player=player, **extra)

    def phases(self) -> list[Phase]:
        c = self.config
        recon_cls = L2 if c.recon == "l2" else L1
        eg = Phase(
            name="EG",
            trains=("E", "G"),
            run=self._run_eg,
            provides=("real", "recon", "z", "age_group", "ez_logits", "g_logits"),
            losses=[
                recon_cls(inputs={"pred": "recon", "target": "real"}, name="recon", weight=c.recon_weight),
                TotalVariation(inputs={"image": "recon"}, norm="l2", name="tv", weight=c.tv_weight),
                self._adv("ez_logits", "real", "ez_adv", c.z_weight, delayed=True, player="generator"),
                self._adv("g_logits", "real", "g_adv", c.img_weight, delayed=True, player="generator"),
            ],
            accepts_extra_losses=True,
        )
        first = c.order == "d_first"
        dz = Phase(
            name="Dz",
            trains=("Dz",),
            run=self._run_dz,
            provides=("real", "recon", "z", "age_group", "z_prior", "dz_prior_logits", "dz_z_logits"),
            losses=[self._adv("dz_prior_logits", "real", "dz_real"), self._adv("dz_z_logits", "fake", "dz_fake")],
        )
        dimg = Phase(
            name="Dimg",
            trains=("Dimg",),
            run=self._run_dimg,
            provides=("real", "recon", "z", "age_group", "dimg_real_logits", "dimg_fake_logits"),
            losses=[self._adv("dimg_real_logits", "real", "dimg_real"), self._adv("dimg_fake_logits", "fake", "dimg_fake")],
        )
        return [dz, dimg, eg] if first else [eg, dz, dimg]

    # -- sample grid ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], batch: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Rows: input faces, their reconstruction, then the face decoded at every age group."""
        b = batch["batch"]
        k = self.config.sample_faces
        x, age = b["image"][:k], b["age_group"][:k].long()
        gender = b["gender"][:k].long() if self.config.gender else None
        z = nets["E"](x)  # encode once
        rows = [("input", x), ("reconstruction", nets["G"](z, age, gender))]
        groups = nets["G"].age_groups
        for g in range(groups):
            name = GROUP_NAMES[g] if groups == len(GROUP_NAMES) else f"group {g}"
            rows.append((f"age {name}", nets["G"](z, torch.full_like(age, g), gender)))
        return rows
