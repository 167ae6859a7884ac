"""TD-GAN's alternating optimisation as a gancore schedule (``tdgan.alternating``).

One iteration runs the paper's four steps in its order, each holding the other networks
fixed at their current weights (papers.md §4.2):

=====  ========  ===============================================================
phase  steps     objective (defaults λ1 = λ2 = 1, λ3 = 0.01; see ``Config``)
=====  ========  ===============================================================
``g``  g         λ1·f1(R*, g) + λ2·f2(G*, g)
``G``  G         λ2·f2(G, g*) + λ3·f3(R*, G, D*)            [+ λu·f̃1(G, R*)] [+ λr·f̂1(G, R*)]
``R``  R         λ1·f1(R, g*) + λ3·f3(R, G*, D*)            [+ λu_R·f̃1(G*, R)] [+ λr_R·f̂1(G*, R)]
``D``  D         max λ3·f3(R*, G*, D)
=====  ========  ===============================================================

Streams: ``tagged`` (samples that have every tag) and, with ``semi = true``, ``untagged``
(samples that have none; made by the core's ``data.label_fraction`` /
``data.partial_labels``).  Their batch sizes are set per stream
(``[train] stream_batch_size = {untagged = 32}``).

**Semi-supervised.** f̃1 = ‖G(R(x)) − x‖² on untagged images enters the objectives of G and
R, weighted by λu: it is a function of exactly those two networks, and the paper's own rule
puts every term into the objective of each network it depends on (f1 into g's and R's, f2
into g's and G's, f3 into R's, G's and D's).  It cannot enter g's (untagged images have no
tags to map) or D's.  Its weight in R's step can be set apart (``lambda_u_R``, default λu):
summed over pixels, f̃1 is hundreds of times f1 (summed over code dimensions), so at λu = λ2
it, not the tags, decides what R's blocks hold.  f3 needs no tags either, so with ``semi = true`` it is taken over
every image of the iteration: D judges G(R(x)) of tagged and untagged images alike.

**Tagged reconstruction (not in the paper, off by default).** f̂1 = ‖G(R(x)) − x‖² on the
*tagged* images, weighted by ``lambda_recon`` in G's step and ``lambda_recon_R`` in R's.  In
the paper's fully tagged objective R learns only from f1 (match g's codes) and λ3·f3; nothing
asks R(x) to hold what the tags do not name (a chair's colour, the light on a face), so G(R(x))
loses it.  f̂1 is f̃1's term on the images that have tags; G(R(x)) is already made for f3, so
it costs one squared norm.  The same caution as ``lambda_u_R`` applies to its weight in R's
step.

**Shared forwards** (``ctx.once``): R(x), g(C), G(g(C)), G(R(x)) and D(G(R(x))) are made
once and reused by every later phase until a network they went through steps; then the core
recomputes them, so each step sees the others at their current weights as the alternation
requires.  Per iteration that is R twice (R(x) for the g, G and R steps; once more, without a
graph, for D), g twice (again after g stepped), G five times (G(g(C)) in g's step; G(g(C))
again and G(R(x)) in G's; G(R(x)) again in R's; once without a graph for D) and D four times
(D(G(R(x))) in G's and R's steps, real and fake in D's); no phase computes gradients for a
network it does not train.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from gancore.parts import Config
from gancore.schedule import Context, Phase, Schedule, Stream

from .losses import TagAdversarial, TagConsistency, TagRendering, UntaggedReconstruction

__all__ = ["TDGANSchedule", "rerender", "spread"]


def rerender(nets: Mapping[str, nn.Module], x: torch.Tensor, tags: Mapping[str, torch.Tensor] | None = None,
             rep: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """G(R(x)) with the blocks of ``tags`` (``{tag: class indices [B]}``) replaced by g(tag);
    ``rep`` is R(x) when the caller already has it (encode once, re-render many times)."""
    rep = dict(nets["R"](x) if rep is None else rep)
    for tag, values in (tags or {}).items():
        rep[tag] = nets["g"].embed(tag, values.to(x.device))
    return nets["G"](rep)


def spread(k: int, n: int) -> list[int]:
    """``n`` class values spread evenly over ``0..k-1`` (all of them when ``n >= k``)."""
    if n >= k:
        return list(range(k))
    return sorted({round(i * k / n) % k for i in range(n)})


class TDGANSchedule(Schedule):
    """TD-GAN (Wang et al. 2017): g, G, R and D steps, each holding the others fixed."""

    roles = {"R": "encoder", "g": "network", "G": "generator", "D": "discriminator"}
    calls = {
        "R": "R(image [B, C, R, R]) -> {tag: [B, size]} (one block per schedule tag, in order)",
        "g": "g({tag: class indices [B] long}) -> {tag: [B, size]}; g.embed(tag, values [B]) -> [B, size]; g.classes {tag: K}",
        "G": "G({tag: [B, size]}) -> image [B, C, R, R] in [-1, 1]",
        "D": "D(image [B, C, R, R]) -> DiscOutput(logits [B])",
    }

    class Config(Config):
        tags: list[str] = Field(
            default_factory=lambda: ["identity", "view"],
            description="tag types = data labels, in the order of the parts' `tags` tables (chairs: identity, view)",
        )
        where: dict[str, int] = Field(
            default_factory=dict, description="keep only samples with these label values, e.g. {elevation = 0} (3D-chairs protocol)"
        )
        semi: bool = Field(False, description="use the untagged images (data.label_fraction < 1) through f~1 and f3")
        lambda1: float = Field(1.0, ge=0, description="λ1, weight of f1 (tags vs image representation) in g's and R's steps")
        lambda2: float = Field(1.0, ge=0, description="λ2, weight of f2 (render from tags) in g's and G's steps")
        lambda3: float = Field(0.01, ge=0, description="λ3, weight of f3 (adversarial on G(R(x))) in G's, R's and D's steps")
        lambda_u: float | None = Field(None, ge=0, description="λu, weight of f~1 (untagged autoencoding) in G's and R's steps; None: λ2")
        lambda_u_R: float | None = Field(
            None, ge=0, description="weight of f~1 in R's step alone, when it should differ from G's; None: λu"
        )
        lambda_recon: float = Field(
            0.0, ge=0, description="weight of ||G(R(x)) - x||^2 on tagged images in G's step (not in the paper; 0: off)"
        )
        lambda_recon_R: float | None = Field(
            None, ge=0, description="its weight in R's step; None: lambda_recon"
        )
        reduction: Literal["sum", "mean"] = Field(
            "sum", description="squared norms of f1, f2, f~1: 'sum' per sample (the paper's ||.||^2) or 'mean' per element"
        )
        mode: Literal["nonsaturating", "minimax", "hinge", "lsgan"] = Field(
            "nonsaturating", description="generator side of f3: 'minimax' is the paper's log(1 - D), 'nonsaturating' -log D"
        )
        adv_start: int = Field(0, ge=0, description="steps before R's and G's adversarial terms start (D trains throughout)")
        adv_ramp: int = Field(0, ge=0, description="steps over which R's and G's adversarial weight then rises linearly")
        sample_tag: str | None = Field(None, description="tag swept in the sample grid (default: the first tag after identity)")
        sample_values: int = Field(8, ge=1, description="values of sample_tag in the sample grid (spread over its range)")

        @field_validator("tags")
        @classmethod
        def _tags(cls, v: list[str]) -> list[str]:
            if not v or len(set(v)) != len(v):
                raise ValueError(f"schedule.tags must list distinct tag labels, got {v}")
            return v

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._parts_checked = False

    # -- data ----------------------------------------------------------------------------------
    def required_labels(self) -> tuple[str, ...]:
        return tuple(self.config.tags) + tuple(self.config.where)

    def streams(self) -> dict[str, Stream]:
        c = self.config
        out = {"tagged": Stream(where=dict(c.where), labeled=tuple(c.tags))}
        if c.semi:
            out["untagged"] = Stream(where=dict(c.where), unlabeled=tuple(c.tags))
        return out

    @property
    def lambda_u(self) -> float:
        c = self.config
        return c.lambda2 if c.lambda_u is None else c.lambda_u

    @property
    def lambda_u_R(self) -> float:
        c = self.config
        return self.lambda_u if c.lambda_u_R is None else c.lambda_u_R

    @property
    def lambda_recon_R(self) -> float:
        c = self.config
        return c.lambda_recon if c.lambda_recon_R is None else c.lambda_recon_R

    # -- shared forwards -----------------------------------------------------------------------
    def _check_parts(self, ctx: Context) -> None:
        """The parts' tag tables must list the schedule's tags, in its order (checked once)."""
        if self._parts_checked:
            return
        want = list(self.config.tags)
        for role in ("R", "g", "G"):
            have = list(getattr(ctx.nets.plain(role), "tags", {}))
            if have != want:
                raise ValueError(f"parts.{role}.tags lists {have}, but schedule.tags is {want}: "
                                 f"give every part the same tags, in the same order")
        self._parts_checked = True

    def _rx(self, ctx: Context, s: str = "tagged") -> dict[str, torch.Tensor]:
        x = ctx.batch[s]["image"]
        return ctx.once("rx" if s == "tagged" else "rx_u", lambda: ctx.nets.R(x))  # {tag: [B, n]}

    def _gc(self, ctx: Context) -> dict[str, torch.Tensor]:
        b = ctx.batch["tagged"]
        return ctx.once("gc", lambda: ctx.nets.g({t: b[t].long() for t in self.config.tags}))  # {tag: [B, n]}

    def _render(self, ctx: Context) -> torch.Tensor:
        return ctx.once("render", lambda: ctx.nets.G(self._gc(ctx)))  # G(g(C)) [B, 3, R, R]

    def _recon(self, ctx: Context, s: str = "tagged") -> torch.Tensor:
        return ctx.once("recon" if s == "tagged" else "recon_u", lambda: ctx.nets.G(self._rx(ctx, s)))  # G(R(x))

    def _fake_logits(self, ctx: Context) -> torch.Tensor:
        """D(G(R(x))) of every image of the iteration (D held fixed: gradient flows to R or G only)."""
        out = [ctx.once("d_fake", lambda: ctx.nets.D(self._recon(ctx)).logits)]
        if self.config.semi:
            out.append(ctx.once("d_fake_u", lambda: ctx.nets.D(self._recon(ctx, "untagged")).logits))
        return torch.cat(out) if len(out) > 1 else out[0]

    def _locals(self, ctx: Context) -> None:
        ctx["real"] = ctx.batch["tagged"]["image"]
        if self.config.semi:
            ctx["real_u"] = ctx.batch["untagged"]["image"]

    # -- the four steps --------------------------------------------------------------------------
    def _run_g(self, ctx: Context) -> None:
        self._check_parts(ctx)
        self._locals(ctx)
        self._rx(ctx), self._gc(ctx), self._render(ctx)

    def _run_G(self, ctx: Context) -> None:
        self._locals(ctx)
        self._gc(ctx), self._render(ctx)
        ctx["fake_logits"] = self._fake_logits(ctx)
        if self.config.semi:
            self._recon(ctx, "untagged")

    def _run_R(self, ctx: Context) -> None:
        self._locals(ctx)
        self._rx(ctx), self._gc(ctx)
        ctx["fake_logits"] = self._fake_logits(ctx)
        if self.config.semi:
            self._recon(ctx, "untagged")

    def _run_D(self, ctx: Context) -> None:
        reals = [ctx.batch["tagged"]["image"]] + ([ctx.batch["untagged"]["image"]] if self.config.semi else [])
        fakes = []
        # G(R(x)) at the current R and G (both stepped), as numbers: D's step needs no graph
        # through them.  ctx.value alone would build that graph and drop it; no_grad skips it
        # (safe here: D's is the last step of the iteration, no later phase reuses these).
        with torch.no_grad():
            for s, x in zip(("tagged", "untagged"), reals):
                key = "recon" if s == "tagged" else "recon_u"
                fakes.append(ctx.value(key, lambda x=x: ctx.nets.G(ctx.nets.R(x))))
        ctx["real_logits"] = ctx.nets.D(torch.cat(reals) if len(reals) > 1 else reals[0]).logits
        ctx["fake_logits"] = ctx.nets.D(torch.cat(fakes) if len(fakes) > 1 else fakes[0]).logits

    def phases(self) -> list[Phase]:
        c = self.config
        red = c.reduction
        f1 = TagConsistency(inputs={"image_rep": "rx", "tag_rep": "gc"}, reduction=red, weight=c.lambda1)
        f2 = TagRendering(inputs={"render": "render", "real": "real"}, reduction=red, weight=c.lambda2)
        f3_gen = TagAdversarial(player="generator", mode=c.mode, weight=c.lambda3, start=c.adv_start, ramp=c.adv_ramp)
        f3_d = TagAdversarial(player="discriminator", mode=c.mode, weight=c.lambda3)
        extra_G: list[Any] = []
        extra_R: list[Any] = []
        semi_reads: tuple[str, ...] = ()
        if c.semi:
            f1u = {"inputs": {"recon": "recon_u", "real": "real_u"}, "reduction": red}
            extra_G = [UntaggedReconstruction(**f1u, weight=self.lambda_u)]
            extra_R = [UntaggedReconstruction(**f1u, weight=self.lambda_u_R)]
            semi_reads = ("real_u", "rx_u", "recon_u")
        f1r = {"inputs": {"recon": "recon", "real": "real"}, "reduction": red, "name": "f1r"}
        if c.lambda_recon > 0:
            extra_G.append(UntaggedReconstruction(**f1r, weight=c.lambda_recon))
        if self.lambda_recon_R > 0:
            extra_R.append(UntaggedReconstruction(**f1r, weight=self.lambda_recon_R))
        return [
            Phase("g", trains=("g",), run=self._run_g, losses=[f1, f2], provides=("real", "rx", "gc", "render")),
            Phase("G", trains=("G",), run=self._run_G, losses=[f2, f3_gen, *extra_G], accepts_extra_losses=True,
                  provides=("real", "gc", "render", "rx", "recon", "fake_logits", *semi_reads)),
            Phase("R", trains=("R",), run=self._run_R, losses=[f1, f3_gen, *extra_R],
                  provides=("real", "rx", "gc", "recon", "fake_logits", *semi_reads)),
            Phase("D", trains=("D",), run=self._run_D, losses=[f3_d], provides=("real_logits", "fake_logits")),
        ]

    # -- sample grid ---------------------------------------------------------------------------
    def sweep_tag(self) -> str:
        c = self.config
        if c.sample_tag is not None:
            if c.sample_tag not in c.tags:
                raise ValueError(f"schedule.sample_tag = {c.sample_tag!r} is not one of schedule.tags {c.tags}")
            return c.sample_tag
        rest = [t for t in c.tags if t != "identity"]
        return rest[0] if rest else c.tags[0]

    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], batch: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Rows: held-out inputs, G(R(x)), then R(x) re-rendered with the sweep tag at spread values."""
        x = batch["tagged"]["image"]
        tag = self.sweep_tag()
        k = nets["g"].classes[tag]
        rep = nets["R"](x)  # encoded once
        rows = [("input", x), ("G(R(x))", rerender(nets, x, rep=rep))]
        for v in spread(k, self.config.sample_values):
            rows.append((f"{tag} {v}", rerender(nets, x, {tag: torch.full((len(x),), v, dtype=torch.long)}, rep=rep)))
        return rows
