"""DR-GAN's training algorithm as a gancore schedule (``drgan.schedule``).

Roles: ``G_enc`` (encoder), ``G_dec`` (generator), ``D`` (discriminator).  Labels:
``identity`` and ``pose``.  One iteration is two phases on one batch:

=====  ===========  ==============================================================
phase  steps        losses (defaults; eqs. 4, 5, 7)
=====  ===========  ==============================================================
``D``  D            d_id_real: −log D^d_y(x) + d_pose_real: −log D^p_{y_p}(x)
                    + d_synthetic: −log D^d_{N_d+1}(x̂) on every synthesis x̂
``G``  G_enc, G_dec g_id: −log D^d_y(x̂) + g_pose: −log D^p_c(x̂)   (single: x̂ = G(x, c, z))
                    multi: + g_id_fused + g_pose_fused on G(x_1..x_n, c, z)
=====  ===========  ==============================================================

The identity features ``f(x)`` (and confidences ω), the pose codes ``c`` (uniform over the
N_p poses, one per image — per group in multi-image training), the noise ``z`` ~ U(−1, 1)
and the syntheses are made **once** per iteration (``ctx.once``): the D phase judges them,
the G phase backpropagates through the same graph after D has stepped (G has not).  The
encoder runs once per image.

**Multi-image** (``images = n`` > 1, Fig. 3): the stream draws groups of n images of one
identity; G_enc's confidences ω fuse each group, f = Σ ω_i f(x_i) / Σ ω_i, with a random
subset of every group left out of the fusion (``omega_dropout``, never all of a group) so
that one model serves any n from 1 to n_max.  G's objective (eq. 7) is the sum of the
2(n+1) terms: the n single-image syntheses G(x_i, c, z) (weight n on their batch mean: the
sum over the images of a group) and the fused one G(x_1..x_n, c, z), each with its identity
and pose term; D sees all n+1 syntheses as synthetic.

**D:G ratio**: 1:1 by default (the paper: "alternately"); ``d_every = 2`` is the official
code's 1:2; ``strong_accuracy = 0.9`` is a public reimplementation's rule: while D's mean
accuracy on {identity, pose, real, synthetic} of its last step is at least that, D steps
only every ``strong_every`` (4) iterations (1 D : 4 G).

**Variants**: ``realfake = "separate"`` (set on the schedule and on ``[parts.D]``): a
separate sigmoid real/fake unit instead of the synthetic class, judged by the core
``adversarial`` terms (d_rf_real, d_rf_fake; g_rf, g_rf_fused) instead of d_synthetic; ``objective = "l2"`` is the CVPR Fig. 4 ablation: no D, G trained
with an L2 loss between its synthesis of image a at image b's pose and image b itself
(pairs of images of one identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from gancore.builtins.losses import L2, Adversarial
from gancore.parts import Config
from gancore.schedule import Context, Phase, Schedule, Stream

from .fusion import drop_confidences, fuse, group_count, local_groups
from .losses import IdentityLoss, PoseLoss, SyntheticLoss

__all__ = ["DRGANSchedule", "Syntheses", "to_channels", "random_crops"]


def random_crops(x: torch.Tensor, jitter: float) -> torch.Tensor:
    """Translation jitter as the public code does it ("pad to 110, random crop 96"): pad
    ``[B, C, R, R]`` by ``round(jitter·R/2)`` pixels per side (edge pixels repeated) and cut
    an R×R window at a random place per image; the face keeps its scale."""
    b, _, r, _ = x.shape
    pad = int(round(jitter * r / 2))
    if pad <= 0:
        return x
    big = F.pad(x, (pad, pad, pad, pad), mode="replicate")  # [B, C, R + 2p, R + 2p]
    off = torch.randint(0, 2 * pad + 1, (b, 2), device=x.device)  # [B, (dy, dx)]
    rows = off[:, :1] + torch.arange(r, device=x.device)  # [B, R]
    cols = off[:, 1:] + torch.arange(r, device=x.device)  # [B, R]
    bi = torch.arange(b, device=x.device)[:, None, None]
    return big.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` as the networks take them: unchanged, or grayscale (ITU-R 601 luma)."""
    if x.shape[1] == channels:
        return x
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return (x * w[None, :, None, None]).sum(1, keepdim=True)
    raise ValueError(f"the networks take {channels}-channel images but the data has {x.shape[1]} channels")


class Syntheses(NamedTuple):
    """What one iteration synthesises (all made once, shared by the D and G phases)."""

    single: torch.Tensor  # [N, C, R, R]: G(x_i, c, z), one per input image
    fused: torch.Tensor  # [G, C, R, R]: G(x_1..x_n, c, z), one per group (empty for single-image)
    pose: torch.Tensor  # [N] requested pose of each single synthesis
    group_pose: torch.Tensor  # [G] requested pose of each fused synthesis
    group_identity: torch.Tensor  # [G] identity of each group


class DRGANSchedule(Schedule):
    """DR-GAN (Tran, Yin & Liu 2017): D step, then G step, on syntheses made once; single- or multi-image."""

    roles = {"G_enc": "encoder", "G_dec": "generator", "D": "discriminator"}
    calls = {"G_enc": "G_enc(x [N, C, R, R]) -> Encoded(f [N, F], omega [N])  (reads G_enc.in_channels)",
             "G_dec": "G_dec(f [N, F], pose [N], z [N, z_dim]) -> image [N, C, R, R]  (reads G_dec.poses, G_dec.z_dim)",
             "D": "D(image [N, C, R, R]) -> DiscOutput(logits [N, N_d + 1], extra = {pose: [N, N_p]"
                  "(, realfake: [N])})  (reads D.separate)"}

    class Config(Config):
        images: int = Field(1, ge=1, le=64, description="images per subject: 1 = single-image DR-GAN, n > 1 = multi-image with n_max = n")
        omega_dropout: float = Field(
            0.5, ge=0.0, lt=1.0,
            description="multi-image: chance that an image is left out of its group's fusion (never all of a group)",
        )
        single_weight: float | None = Field(
            None, ge=0.0,
            description="multi-image: weight of the single-image syntheses' terms (default n: eq. 7 sums the n images)",
        )
        objective: Literal["adversarial", "l2"] = Field(
            "adversarial", description="'adversarial' (DR-GAN) or 'l2' (CVPR Fig. 4 ablation: pixel loss on same-identity pairs, no D)"
        )
        d_every: int = Field(1, ge=1, description="D steps on iterations divisible by this (2 = the official code's 1 D : 2 G)")
        g_every: int = Field(1, ge=1, description="G steps on iterations divisible by this")
        strong_accuracy: float | None = Field(
            None, gt=0.0, le=1.0,
            description="'D strong' rule of a public reimplementation (0.9): while D's mean accuracy is at least this, D steps only every strong_every iterations",
        )
        strong_every: int = Field(4, ge=1, description="D's period while it is strong (4: 1 D : 4 G)")
        realfake: Literal["softmax", "separate"] = Field(
            "softmax",
            description="'softmax': the synthetic class of D's identity softmax (paper); 'separate': a sigmoid real/fake unit "
            "with the core adversarial terms (a public reimplementation); set the same on [parts.D]",
        )
        jitter: float = Field(
            0.0, ge=0.0, le=1.0,
            description="random crops: each image padded by jitter/2 of its side per edge and cropped back at a "
            "random place (the paper's 110 -> 96 crops: 0.146); 0 = off",
        )
        noise: Literal["uniform", "zero"] = Field("uniform", description="z during training: U(-1, 1) (paper) or 0")
        sample_faces: int = Field(6, ge=1, description="faces (rows) in the sample grid")

        @model_validator(mode="after")
        def _check(self) -> DRGANSchedule.Config:
            if self.objective == "l2" and self.images > 1:
                raise ValueError("objective = 'l2' is the single-image ablation; set images = 1")
            if self.strong_accuracy is not None and self.d_every > 1:
                raise ValueError("give either d_every (a fixed D:G ratio) or strong_accuracy (the 'D strong' rule), not both")
            return self

    # -- data ---------------------------------------------------------------------------------
    def required_labels(self) -> tuple[str, ...]:
        return ("identity", "pose")

    def streams(self) -> dict[str, Stream]:
        c = self.config
        if c.objective == "l2":  # pairs of one identity: each image is the other's target
            return {"batch": Stream(group_by="identity", group_size=2, min_group=2)}
        if c.images > 1:
            return {"batch": Stream(group_by="identity", group_size=c.images, min_group=c.images)}
        return {"batch": Stream()}

    @property
    def multi(self) -> bool:
        return self.config.images > 1

    # -- shared forward results -----------------------------------------------------------------
    def _real(self, ctx: Context) -> torch.Tensor:
        """The batch's images as the networks see them (channels, random crops), made once."""
        def make() -> torch.Tensor:
            x = to_channels(ctx.batch["batch"]["image"], ctx.nets.plain("G_enc").in_channels)
            return random_crops(x, self.config.jitter) if self.config.jitter > 0 else x

        return ctx.once("real", make)

    def _groups(self, ctx: Context) -> tuple[torch.Tensor, int]:
        b = ctx.batch["batch"]
        if "group" not in b:  # an ungrouped stream: every image its own group
            n = b["image"].shape[0]
            return torch.arange(n, device=b["image"].device), n
        g = local_groups(b["group"])
        return g, group_count(g)

    def _codes(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose code index and noise z per group (per image when single-image), drawn once."""
        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            _, groups = self._groups(ctx)
            dec = ctx.nets.plain("G_dec")
            dev = ctx.batch["batch"]["image"].device
            pose = torch.randint(0, dec.poses, (groups,), device=dev)  # uniform over the N_p poses
            z = torch.rand(groups, dec.z_dim, device=dev) * 2 - 1  # z ~ U(-1, 1)^N_z
            if self.config.noise == "zero":
                z = torch.zeros_like(z)
            return pose, z

        return ctx.once("codes", draw)

    def _syntheses(self, ctx: Context) -> Syntheses:
        def make() -> Syntheses:
            x = self._real(ctx)
            group, groups = self._groups(ctx)
            enc = ctx.nets.G_enc(x)  # Encoded(f [N, F], omega [N]): once per image
            pose_g, z_g = self._codes(ctx)
            pose, z = pose_g[group], z_g[group]  # every image of a group gets its group's c and z
            ident = ctx.batch["batch"]["identity"].long()
            group_identity = ident.new_full((groups,), -1).scatter(0, group, ident)  # [G]
            if not self.multi:
                single = ctx.nets.G_dec(enc.f, pose, z)  # [N, C, R, R]
                return Syntheses(single, single[:0], pose, pose_g[:0], group_identity[:0])
            omega = drop_confidences(enc.omega, group, groups, self.config.omega_dropout)
            fused_f = fuse(enc.f, omega, group, groups)  # [G, F]
            # the n single syntheses and the fused one in one decoder pass (one batch-norm batch)
            out = ctx.nets.G_dec(torch.cat([enc.f, fused_f]), torch.cat([pose, pose_g]), torch.cat([z, z_g]))
            n = x.shape[0]
            return Syntheses(out[:n], out[n:], pose, pose_g, group_identity)

        return ctx.once("syntheses", make)

    # -- phases ---------------------------------------------------------------------------------
    def _check_d(self, ctx: Context) -> bool:
        """Whether D has the separate real/fake unit; it must match ``realfake`` of the schedule."""
        separate = self.config.realfake == "separate"
        if bool(getattr(ctx.nets.plain("D"), "separate", False)) != separate:
            raise ValueError(f"schedule.realfake = {self.config.realfake!r} but parts.D was built with the other "
                             "realfake; set the same value in [schedule] and [parts.D]")
        return separate

    def _run_d(self, ctx: Context) -> None:
        b = ctx.batch["batch"]
        separate = self._check_d(ctx)
        syn = self._syntheses(ctx)
        real = ctx.nets.D(self._real(ctx))
        fake = ctx.nets.D(torch.cat([syn.single, syn.fused]) if self.multi else syn.single)
        ctx["identity"], ctx["pose"] = b["identity"].long(), b["pose"].long()
        ctx["d_real_id_logits"], ctx["d_real_pose_logits"] = real.logits, real.extra["pose"]
        if separate:
            ctx["d_real_rf_logits"], ctx["d_fake_rf_logits"] = real.extra["realfake"], fake.extra["realfake"]
        else:
            ctx["d_fake_id_logits"] = fake.logits
        if self.config.strong_accuracy is not None:
            ctx.state["d_accuracy"] = self._d_accuracy(real, fake, ctx["identity"], ctx["pose"], separate)

    @staticmethod
    def _d_accuracy(real: Any, fake: Any, identity: torch.Tensor, pose: torch.Tensor, separate: bool) -> torch.Tensor:
        """Mean of D's accuracies on {identity, pose, real, synthetic} (a 0-d tensor, no host sync)."""
        with torch.no_grad():
            ident = (real.logits.argmax(1) == identity).float().mean()
            pos = (real.extra["pose"].argmax(1) == pose).float().mean()
            if separate:
                is_real = (real.extra["realfake"] > 0).float().mean()
                is_fake = (fake.extra["realfake"] <= 0).float().mean()
            else:
                last = real.logits.shape[1] - 1
                is_real = (real.logits.argmax(1) != last).float().mean()
                is_fake = (fake.logits.argmax(1) == last).float().mean()
            return (ident + pos + is_real + is_fake) / 4

    def _run_g(self, ctx: Context) -> None:
        b = ctx.batch["batch"]
        separate = self._check_d(ctx)
        syn = self._syntheses(ctx)
        n = syn.single.shape[0]
        out = ctx.nets.D(torch.cat([syn.single, syn.fused]) if self.multi else syn.single)
        ctx["identity"], ctx["target_pose"] = b["identity"].long(), syn.pose
        ctx["g_id_logits"], ctx["g_pose_logits"] = out.logits[:n], out.extra["pose"][:n]
        if separate:
            ctx["g_rf_logits"] = out.extra["realfake"][:n]
        if self.multi:
            ctx["group_identity"], ctx["group_pose"] = syn.group_identity, syn.group_pose
            ctx["g_fused_id_logits"], ctx["g_fused_pose_logits"] = out.logits[n:], out.extra["pose"][n:]
            if separate:
                ctx["g_fused_rf_logits"] = out.extra["realfake"][n:]

    def _run_l2(self, ctx: Context) -> None:
        """Fig. 4 ablation: G(x_a, pose_b, z) against x_b for each same-identity pair (a, b)."""
        b = ctx.batch["batch"]
        x = self._real(ctx)
        # the partner of each image within its pair: pairs are contiguous, (0, 1), (2, 3), ...
        partner = torch.arange(x.shape[0], device=x.device) ^ 1
        enc = ctx.once("enc", lambda: ctx.nets.G_enc(x))
        z = torch.rand(x.shape[0], ctx.nets.plain("G_dec").z_dim, device=x.device) * 2 - 1
        if self.config.noise == "zero":
            z = torch.zeros_like(z)
        ctx["fake"] = ctx.nets.G_dec(enc.f, b["pose"].long()[partner], z)
        ctx["pair_target"] = x[partner]

    def phases(self) -> list[Phase]:
        c = self.config
        if c.objective == "l2":
            return [Phase(name="G", trains=("G_enc", "G_dec"), run=self._run_l2, provides=("fake", "pair_target"),
                          losses=[L2(inputs={"pred": "fake", "target": "pair_target"}, name="g_l2")],
                          accepts_extra_losses=True)]
        single_w = c.single_weight if c.single_weight is not None else float(c.images)
        separate = c.realfake == "separate"
        d_losses = [
            IdentityLoss(inputs={"logits": "d_real_id_logits", "target": "identity"}, name="d_id_real"),
            PoseLoss(inputs={"logits": "d_real_pose_logits", "target": "pose"}, name="d_pose_real"),
        ]
        if separate:
            d_losses += [Adversarial(inputs={"logits": "d_real_rf_logits"}, target="real", name="d_rf_real"),
                         Adversarial(inputs={"logits": "d_fake_rf_logits"}, target="fake", name="d_rf_fake")]
        else:
            d_losses.append(SyntheticLoss(inputs={"logits": "d_fake_id_logits"}, name="d_synthetic"))
        d = Phase(
            name="D",
            trains=("D",),
            run=self._run_d,
            provides=("identity", "pose", "d_real_id_logits", "d_real_pose_logits")
            + (("d_real_rf_logits", "d_fake_rf_logits") if separate else ("d_fake_id_logits",)),
            losses=d_losses,
            every=c.d_every,
            when=self._d_due if c.strong_accuracy is not None else None,
        )
        g_losses = [
            IdentityLoss(inputs={"logits": "g_id_logits", "target": "identity"}, name="g_id", weight=single_w),
            PoseLoss(inputs={"logits": "g_pose_logits", "target": "target_pose"}, name="g_pose", weight=single_w),
        ]
        g_provides = ["identity", "target_pose", "g_id_logits", "g_pose_logits"]
        if separate:
            g_losses.append(Adversarial(inputs={"logits": "g_rf_logits"}, target="real", player="generator",
                                        name="g_rf", weight=single_w))
            g_provides.append("g_rf_logits")
        if self.multi:
            g_losses += [
                IdentityLoss(inputs={"logits": "g_fused_id_logits", "target": "group_identity"}, name="g_id_fused"),
                PoseLoss(inputs={"logits": "g_fused_pose_logits", "target": "group_pose"}, name="g_pose_fused"),
            ]
            g_provides += ["group_identity", "group_pose", "g_fused_id_logits", "g_fused_pose_logits"]
            if separate:
                g_losses.append(Adversarial(inputs={"logits": "g_fused_rf_logits"}, target="real", player="generator",
                                            name="g_rf_fused"))
                g_provides.append("g_fused_rf_logits")
        g = Phase(
            name="G",
            trains=("G_enc", "G_dec"),
            run=self._run_g,
            provides=tuple(g_provides),
            losses=g_losses,
            every=c.g_every,
            accepts_extra_losses=True,
        )
        return [d, g]

    def _d_due(self, ctx: Context) -> bool:
        """The 'D strong' rule: D steps unless its last accuracy reached ``strong_accuracy``,
        and then only on every ``strong_every``-th iteration."""
        acc = ctx.state.get("d_accuracy")
        strong = acc is not None and float(acc) >= float(self.config.strong_accuracy or 1.0)
        return (not strong) or ctx.step % self.config.strong_every == 0

    # -- sample grid ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], batch: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """A row per held-out face: the input, then G(f(x), c, z = 0) at every pose c.  Multi-image:
        a row per group: its n inputs, then the fused identity at every pose."""
        b = batch["batch"]
        enc, dec = nets["G_enc"], nets["G_dec"]
        k = self.config.sample_faces
        x = b["image"]
        xin = to_channels(x, enc.in_channels)
        poses = torch.arange(dec.poses, device=x.device)
        rows = []
        if self.multi and "group" in b:
            group = local_groups(b["group"])
            groups = min(group_count(group), k)
            e = enc(xin)
            f = fuse(e.f, e.omega, group, group_count(group))[:groups]
            for g in range(groups):
                out = dec(f[g : g + 1].expand(dec.poses, -1), poses)
                rows.append((f"group {g}", torch.cat([x[group == g], _rgb(out, x)])))
            return rows
        x, xin = x[:k], xin[:k]
        f = enc(xin).f
        for i in range(x.shape[0]):
            out = dec(f[i : i + 1].expand(dec.poses, -1), poses)  # [N_p, C, R, R]
            rows.append((f"face {i}", torch.cat([x[i : i + 1], _rgb(out, x)])))
        return rows


def _rgb(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Grayscale outputs shown as RGB next to RGB inputs."""
    return images.expand(-1, like.shape[1], -1, -1) if images.shape[1] == 1 and like.shape[1] == 3 else images
