"""A plain conditional GAN: DCGAN-style generator and discriminator and the generic
``alternating`` schedule (D step, then G step).  The simplest complete recipe, and the
reference for how a schedule is written."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from ..builtins.losses import Adversarial
from ..parts import Config, DataInfo, Discriminator, DiscOutput, Generator
from ..schedule import Context, Phase, Schedule

__all__ = ["BasicGenerator", "BasicDiscriminator", "Alternating"]


class BasicGenConfig(Config):
    z_dim: int = Field(64, ge=1, description="noise dimensions")
    width: int = Field(64, ge=4, description="channels of the last feature map (doubles per upsampling)")
    condition: str | None = Field(None, description="categorical label to condition on (None: unconditional)")


class BasicGenerator(Generator):
    """Noise (+ one-hot label) → image: FC to 4×4, transposed convs ×2 up to the resolution, tanh.

    ``forward(z [B, z_dim], label [B] | None) -> [B, C, R, R]``.
    """

    Config = BasicGenConfig

    def __init__(self, config: BasicGenConfig | None = None, *, info: DataInfo | None = None, **kw: object) -> None:
        super().__init__(config, info=info, **kw)
        c, r = self.config, self.info.resolution
        ups = int(math.log2(r // 4))
        if 4 * 2**ups != r:
            raise ValueError(f"basic.generator needs a resolution of 4·2^k, got {r}")
        self.n_classes = self.info.classes(c.condition) if c.condition else 0
        top = c.width * 2 ** max(ups - 1, 0)
        self.fc = nn.Linear(c.z_dim + self.n_classes, top * 16)
        layers: list[nn.Module] = []
        ch = top
        for i in range(ups):
            out = max(c.width, ch // 2) if i < ups - 1 else self.info.channels
            layers.append(nn.ConvTranspose2d(ch, out, 4, 2, 1))
            if i < ups - 1:
                layers += [nn.BatchNorm2d(out), nn.ReLU(True)]
            ch = out
        self.net = nn.Sequential(nn.BatchNorm2d(top), nn.ReLU(True), *layers, nn.Tanh())

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            z = torch.cat([z, F.one_hot(label.long(), self.n_classes).to(z.dtype)], 1)
        h = rearrange(self.fc(z), "b (c h w) -> b c h w", h=4, w=4)
        return self.net(h)


class BasicDiscConfig(Config):
    width: int = Field(64, ge=4, description="channels of the first conv (doubles per downsampling)")
    condition: str | None = Field(None, description="categorical label to condition on by projection")


class BasicDiscriminator(Discriminator):
    """Image (+ label, by projection) → one real/fake logit; stride-2 4×4 convs down to 4×4."""

    Config = BasicDiscConfig

    def __init__(self, config: BasicDiscConfig | None = None, *, info: DataInfo | None = None, **kw: object) -> None:
        super().__init__(config, info=info, **kw)
        c, r = self.config, self.info.resolution
        downs = int(math.log2(r // 4))
        layers: list[nn.Module] = []
        ch_in, ch = self.info.channels, c.width
        for i in range(downs):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1), *( [nn.BatchNorm2d(ch)] if i else [] ), nn.LeakyReLU(0.2, True)]
            ch_in, ch = ch, ch * 2
        self.features = nn.ModuleList(layers)
        self.head = nn.Linear(ch_in * 16, 1)
        self.n_classes = self.info.classes(c.condition) if c.condition else 0
        self.embed = nn.Embedding(self.n_classes, ch_in * 16) if self.n_classes else None
        if self.embed is not None:  # projection starts near zero so early logits stay moderate
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None, features: bool = False) -> DiscOutput:
        feats = []
        h = x
        for layer in self.features:
            h = layer(h)
            if features and isinstance(layer, nn.LeakyReLU):
                feats.append(h)
        h = h.flatten(1)
        logits = self.head(h)[:, 0]
        if self.embed is not None:
            logits = logits + (self.embed(label.long()) * h).sum(1)
        return DiscOutput(logits=logits, features=feats)


class AlternatingConfig(Config):
    d_every: int = Field(1, ge=1, description="run the D phase every n iterations")
    g_every: int = Field(1, ge=1, description="run the G phase every n iterations")
    mode: str = Field("nonsaturating", pattern="^(nonsaturating|hinge|lsgan)$", description="GAN objective")
    condition: str | None = Field(None, description="label fed to G and D (must match the parts' condition)")


class Alternating(Schedule):
    """Plain (conditional) GAN: a D step on real vs G(z), then a G step on the same G(z).

    G(z) is made once per iteration by whichever phase runs first (``ctx.once``) and shared:
    with the default 1:1 ratio the D phase makes it and the G phase backpropagates through
    the same graph (G has not stepped in between).  Any ``d_every``:``g_every`` ratio works
    unchanged: on an iteration without a G phase G runs without a graph, on one without a D
    phase the G phase makes the fake itself.
    """

    Config = AlternatingConfig
    roles = {"G": "generator", "D": "discriminator"}
    calls = {"G": "G(z [B, z_dim], label [B] or None) -> image [B, C, R, R]  (reads G.config.z_dim)",
             "D": "D(image [B, C, R, R], label [B] or None) -> DiscOutput(logits [B])"}

    def required_labels(self) -> tuple[str, ...]:
        return (self.config.condition,) if self.config.condition else ()

    def _label(self, ctx: Context) -> torch.Tensor | None:
        return ctx.batch["batch"][self.config.condition] if self.config.condition else None

    def _fake(self, ctx: Context) -> torch.Tensor:
        def make() -> torch.Tensor:
            real = ctx.batch["batch"]["image"]
            z = torch.randn(real.shape[0], ctx.nets.plain("G").config.z_dim, device=real.device)
            return ctx.nets.G(z, self._label(ctx))

        return ctx.once("fake", make)

    def _d_run(self, ctx: Context) -> None:
        real = ctx.batch["batch"]["image"]
        ctx["d_real"] = ctx.nets.D(real, self._label(ctx)).logits
        ctx["d_fake"] = ctx.nets.D(self._fake(ctx), self._label(ctx)).logits

    def _g_run(self, ctx: Context) -> None:
        ctx["g_fake"] = ctx.nets.D(self._fake(ctx), self._label(ctx)).logits

    def phases(self) -> list[Phase]:
        mode = self.config.mode
        return [
            Phase("D", trains=("D",), run=self._d_run, provides=("d_real", "d_fake"), every=self.config.d_every,
                  losses=[Adversarial(target="real", mode=mode, inputs={"logits": "d_real"}, name="d_real"),
                          Adversarial(target="fake", mode=mode, inputs={"logits": "d_fake"}, name="d_fake")]),
            Phase("G", trains=("G",), run=self._g_run, provides=("g_fake", "fake"), every=self.config.g_every,
                  accepts_extra_losses=True,
                  losses=[Adversarial(target="real", player="generator", mode=mode, inputs={"logits": "g_fake"},
                                      name="g_adv")]),
        ]

    @torch.no_grad()
    def sample(self, nets, batch):  # noqa: ANN001, ANN201
        real = batch["batch"]["image"]
        g = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(real.shape[0], nets["G"].config.z_dim, generator=g).to(real.device)
        label = batch["batch"][self.config.condition] if self.config.condition else None
        return [("real", real), ("generated", nets["G"](z, label))]
