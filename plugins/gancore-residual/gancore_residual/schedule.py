"""``residual.dual``: ResGAN's training algorithm — each iteration a D step, then a G0
step, then a G1 step (papers.md §1.4: MingtaoGuo and flere233 do exactly this).

Streams: ``x0`` (images with ``attribute == 0``) and ``x1`` (``attribute == 1``).

Phase ``D`` (trains D)
    x̃0 = G0(x0) and x̃1 = G1(x1) are made **once** (``ctx.once``: ``fake0``/``fake1``)
    and shared with the G phases.  D sees ``[x0, x1, x̃0, x̃1]`` in one batch (one
    BatchNorm statistic for all four sets) and is trained with 3-class cross-entropy on
    targets ``[0…, 1…, 2…, 2…]``; its objective reaches only D's parameters.
Phase ``G0`` (trains G0)
    backpropagates through x̃0 as the D phase made it (G0 has not stepped since).
    ``D([x0, x̃0, G1(x̃0)])`` gives the GAN logits of x̃0 (target class 1), the dual logits
    of G1(x̃0) (target class 0) and φ(x0), φ(x̃0) for the perceptual term; D and G1 only
    pass the gradient on (and leave their BatchNorm statistics alone).
    l_G0 = CE(x̃0 → 1) + CE(G1(x̃0) → 0) + α‖r0‖₁ + β‖φ(x0) − φ(x̃0)‖₁.
Phase ``G1`` (trains G1)
    the same for x̃1 (G1 has not stepped since the D phase), with the dual pass through
    the *current* G0, which has just stepped.
    l_G1 = CE(x̃1 → 0) + CE(G0(x̃1) → 1) + α‖r1‖₁ + β‖φ(x1) − φ(x̃1)‖₁.

Choices the paper leaves open, as Config options:

- ``dual_updates_other`` (default False): whether the dual path also steps the other
  transformer (wkcw's joint graph does; MingtaoGuo lets the gradient flow through but
  steps only the G being trained — our default).  When True, G1 steps in the G0 phase,
  so ``ctx.once`` makes x̃1 again in the G1 phase.
- ``dual`` (default True): False is the paper's "without dual learning" ablation.
- ``d_every`` / ``g_every``: the D:G ratio (1:1 is the consensus).
- the perceptual tap φ is the discriminator's ``perceptual_layer`` (default: 3rd conv).
- α and β are the weights of the ``residual.sparsity`` / ``residual.perceptual`` terms
  (override them in the recipe with ``[[losses]]`` tables).

Every loss input is written under the same context key in both G phases (``residual``,
``phi_real``, ``phi_fake``, ``gan_logits``, ``gan_target``, ``dual_logits``,
``dual_target``), so one ``[[losses]]`` override (matched by name) changes both.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import nn

from gancore.builtins.losses import CrossEntropy
from gancore.parts import Config
from gancore.schedule import Context, Phase, Schedule, Stream

from .losses import PerceptualL1, ResidualSparsity
from .model import CLASS_ATTR, CLASS_FAKE, CLASS_NO_ATTR, ResidualOutput

__all__ = ["DualSchedule", "residual_to_image"]


def _full(n: int, value: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.long, device=like.device)


def residual_to_image(r: torch.Tensor) -> torch.Tensor:
    """Show a residual ``[B, 3, H, W]`` in [-1, 1]: each image divided by its own largest
    |value| (0 stays mid-grey), as the paper's figure shows residuals."""
    scale = r.detach().abs().flatten(1).amax(1).clamp_min(1e-6)  # [B]
    return (r.detach() / scale[:, None, None, None]).clamp(-1, 1)


class DualConfig(Config):
    dual: bool = Field(True, description="use the dual-learning terms (False: the paper's ablation without them)")
    dual_updates_other: bool = Field(
        False,
        description="also step the other transformer with the dual term (wkcw); default: only the G being trained steps",
    )
    d_every: int = Field(1, ge=1, description="run the D phase every n iterations (D:G ratio)")
    g_every: int = Field(1, ge=1, description="run the G0 and G1 phases every n iterations")


class DualSchedule(Schedule):
    """ResGAN: D, then G0 (adds the attribute), then G1 (removes it), with dual learning."""

    Config = DualConfig
    roles = {"G0": "generator", "G1": "generator", "D": "discriminator"}
    calls = {"G0": "G0(x [B, 3, R, R]) -> ResidualOutput(out = x + r, residual = r)",
             "G1": "G1(x [B, 3, R, R]) -> ResidualOutput(out = x + r, residual = r)",
             "D": "D(images [N, 3, R, R], features=False|True) -> DiscOutput(logits [N, 3], features [φ])"}

    # -- data --------------------------------------------------------------------------------
    def required_labels(self) -> tuple[str, ...]:
        return ("attribute",)

    def streams(self) -> dict[str, Stream]:
        return {"x0": Stream(where={"attribute": 0}), "x1": Stream(where={"attribute": 1})}

    # -- forward pieces ----------------------------------------------------------------------
    @staticmethod
    def _fake(ctx: Context, i: int) -> ResidualOutput:
        """x̃i = Gi(xi), made once per iteration (in the D phase when it runs)."""
        x = ctx.batch[f"x{i}"]["image"]
        return ctx.once(f"fake{i}", lambda: ctx.nets[f"G{i}"](x))

    def _run_d(self, ctx: Context) -> None:
        x0, x1 = ctx.batch["x0"]["image"], ctx.batch["x1"]["image"]
        f0, f1 = self._fake(ctx, 0), self._fake(ctx, 1)
        images = torch.cat([x0, x1, f0.out, f1.out])  # [B0 + B1 + B0 + B1, 3, H, W]
        ctx["d_logits"] = ctx.nets.D(images).logits  # [N, 3]
        ctx["d_target"] = torch.cat([
            _full(len(x0), CLASS_NO_ATTR, x0), _full(len(x1), CLASS_ATTR, x0),
            _full(len(x0) + len(x1), CLASS_FAKE, x0),
        ])

    def _run_g(self, ctx: Context, i: int) -> None:
        """G_i's phase: GAN, dual, sparsity and perceptual inputs for x̃i = Gi(xi)."""
        x = ctx.batch[f"x{i}"]["image"]
        fake = self._fake(ctx, i)
        target = CLASS_ATTR if i == 0 else CLASS_NO_ATTR  # the class x̃i should pass for
        images = [x, fake.out]
        if self.config.dual:
            images.append(ctx.nets[f"G{1 - i}"](fake.out).out)  # G_{1-i}(x̃i), the current other G
        n = len(x)
        d = ctx.nets.D(torch.cat(images), features=True)  # logits [2n or 3n, 3]
        ctx["residual"] = fake.residual
        ctx["phi_real"] = [f[:n] for f in d.features]
        ctx["phi_fake"] = [f[n : 2 * n] for f in d.features]
        ctx["gan_logits"] = d.logits[n : 2 * n]
        ctx["gan_target"] = _full(n, target, x)
        if self.config.dual:
            ctx["dual_logits"] = d.logits[2 * n :]
            ctx["dual_target"] = _full(n, 1 - target, x)  # back to the input's own class

    # -- the algorithm ---------------------------------------------------------------------------
    def _g_losses(self) -> list:
        losses = [CrossEntropy(name="gan", inputs={"logits": "gan_logits", "target": "gan_target"})]
        if self.config.dual:
            losses.append(CrossEntropy(name="dual", inputs={"logits": "dual_logits", "target": "dual_target"}))
        losses += [ResidualSparsity(), PerceptualL1(inputs={"real": "phi_real", "fake": "phi_fake"})]
        return losses

    def phases(self) -> list[Phase]:
        c = self.config
        g_provides = ("residual", "phi_real", "phi_fake", "gan_logits", "gan_target")
        if c.dual:
            g_provides += ("dual_logits", "dual_target")
        other = c.dual_updates_other and c.dual
        return [
            Phase("D", trains=("D",), run=self._run_d, provides=("d_logits", "d_target"), every=c.d_every,
                  losses=[CrossEntropy(name="cls", inputs={"logits": "d_logits", "target": "d_target"})]),
            Phase("G0", trains=("G0", "G1") if other else ("G0",), run=lambda ctx: self._run_g(ctx, 0),
                  provides=g_provides, every=c.g_every, accepts_extra_losses=True, losses=self._g_losses()),
            Phase("G1", trains=("G1", "G0") if other else ("G1",), run=lambda ctx: self._run_g(ctx, 1),
                  provides=g_provides, every=c.g_every, accepts_extra_losses=True, losses=self._g_losses()),
        ]

    # -- sample grid -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], batch: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """The paper's figure: x0, r0, G0(x0) (glasses added); x1, r1, G1(x1) (removed)."""
        x0, x1 = batch["x0"]["image"], batch["x1"]["image"]
        f0, f1 = nets["G0"](x0), nets["G1"](x1)
        return [
            ("x0", x0), ("r0 (scaled)", residual_to_image(f0.residual)), ("G0(x0)", f0.out.clamp(-1, 1)),
            ("x1", x1), ("r1 (scaled)", residual_to_image(f1.residual)), ("G1(x1)", f1.out.clamp(-1, 1)),
        ]
