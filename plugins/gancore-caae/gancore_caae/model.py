"""CAAE's four networks: encoder E, generator G, and the discriminators D_z and D_img.

Shapes at the paper's 128 px (Fig. 3), with the defaults (``width = 64``):

- E: ``[B, 3, 128, 128]`` → four 5×5 stride-2 convs (64, 128, 256, 512) → ``[B, 512, 8, 8]``
  → FC → tanh → z ``[B, 50]`` in (−1, 1).
- G: ``[z (50), age code (10)]`` → FC → ``[B, 1024, 8, 8]`` → four 5×5 stride-2 deconvs
  (512, 256, 128, 64) → 5×5 conv to 3 channels → tanh → ``[B, 3, 128, 128]``.
- D_z: z ``[B, 50]`` → FC 64 → 32 → 16 → 1 logit.
- D_img: image → conv 16 (→ 64×64) → concat the age code tiled over the map (+10 channels)
  → convs 32, 64, 128 (→ 8×8) → FC 1024 → FC 1 logit.

The number of stride-2 (de)convs adapts to the resolution so the smallest map stays 8×8
(``layers`` overrides it: ``layers = 5`` at 128 px is the official code's encoder, which
ends at 4×4×1024).  ``width`` scales every channel count (the CPU recipe uses 32 or less).
All weights start from N(0, 0.02) with zero biases, as in the official code.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange, repeat
from pydantic import Field
from torch import nn

from gancore.parts import Config, DataInfo, Discriminator, DiscOutput, Encoder, Generator

from .labels import LabelCoding, code_labels

__all__ = ["CAAEEncoder", "CAAEGenerator", "CAAEDz", "CAAEDimg", "auto_layers", "GENDER_REPEAT"]

#: the official code tiles gender 5× as often as age (2 genders vs 10 groups → equal length).
GENDER_REPEAT = 5


def auto_layers(resolution: int, layers: int | None, smallest: int = 8) -> int:
    """Stride-2 layers needed to go from ``resolution`` down to a ``smallest``-px map
    (4 at 128 px, as in the paper), or ``layers`` if given; errors name the key."""
    if resolution & (resolution - 1) or resolution < 8:
        raise ValueError(f"data.resolution must be a power of two >= 8 for CAAE, got {resolution}")
    n = layers if layers is not None else max(1, int(math.log2(resolution // smallest)))
    if n < 1 or resolution >> n < 1 or resolution % (1 << n):
        raise ValueError(f"layers = {n} halves {resolution} px below 1 px; use at most {int(math.log2(resolution))}")
    return n


def init_caae(module: nn.Module) -> None:
    """Official-code initialisation: N(0, 0.02) weights for conv/deconv/FC, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    """5×5 stride-2 'same' convolution: halves H and W."""
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    """5×5 stride-2 transposed convolution: doubles H and W exactly."""
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


def _age_classes(config_groups: int, info: DataInfo) -> int:
    """Number of age groups: the config's, checked against what the data provides."""
    have = info.label_classes.get("age_group")
    if have is not None and have > config_groups:
        raise ValueError(
            f"the data has {have} age groups (label 'age_group'), but the part is configured with age_groups = {config_groups}"
        )
    return config_groups


class _LabelMixin:
    """Checks and codes the age (and optional gender) labels a conditioned part receives."""

    config: _CondConfig

    def _code(self, age: torch.Tensor, gender: torch.Tensor | None, base_repeat: int) -> torch.Tensor:
        c = self.config
        parts = [code_labels(age, self.age_groups, c.label_coding, base_repeat)]
        if c.gender:
            if gender is None:
                raise ValueError(f"{type(self).__name__} was built with gender = true but got no gender label")
            parts.append(code_labels(gender, 2, c.label_coding, base_repeat * GENDER_REPEAT))
        elif gender is not None:
            raise ValueError(
                f"{type(self).__name__} got a gender label but was built with gender = false; "
                "set gender = true on caae.generator, caae.dimg and the schedule together"
            )
        return torch.cat(parts, dim=1)  # [B, n_code]

    @property
    def code_size(self) -> int:
        c = self.config
        return self.age_groups * c.label_repeat + (2 * c.label_repeat * GENDER_REPEAT if c.gender else 0)


class _CondConfig(Config):
    age_groups: int = Field(10, ge=2, description="number of age groups (CAAE: 10)")
    label_coding: LabelCoding = Field("onehot", description="'onehot' 0/1 as in the paper, 'pm1' -1/+1 as in the official code")
    label_repeat: int = Field(1, ge=1, description="tile the age code this many times (official code: 5); gender is tiled 5x more")
    gender: bool = Field(False, description="condition on gender as well as age (official code)")


# ----------------------------------------------------------------------------------------
class CAAEEncoder(Encoder):
    """E: face ``[B, 3, R, R]`` → personality code z ``[B, z_dim]`` in (−1, 1)."""

    class Config(Config):
        z_dim: int = Field(50, ge=1, description="size of the personality code z")
        width: int = Field(64, ge=1, description="channels of the first conv; each later conv doubles them")
        layers: int | None = Field(None, ge=1, description="stride-2 convs (default: down to 8x8, i.e. 4 at 128 px; 5 = official code)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c, r = self.config, self.info.resolution
        n = auto_layers(r, c.layers)
        chans = [self.info.channels] + [c.width << i for i in range(n)]
        self.convs = nn.Sequential(*[m for i in range(n) for m in (_conv(chans[i], chans[i + 1]), nn.ReLU(inplace=True))])
        side = r >> n
        self.fc = nn.Linear(chans[-1] * side * side, c.z_dim)
        init_caae(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)  # [B, C, s, s]
        return torch.tanh(self.fc(h.flatten(1)))  # [B, z_dim]


# ----------------------------------------------------------------------------------------
class CAAEGenerator(_LabelMixin, Generator):
    """G: ``forward(z [B, z_dim], age [B] long or [B, groups] weights, gender=None)`` → ``[B, 3, R, R]``."""

    class Config(_CondConfig):
        z_dim: int = Field(50, ge=1, description="size of the personality code z (must match caae.encoder)")
        width: int = Field(64, ge=1, description="channels of the last deconv; earlier ones double (1024 at the FC map at 128 px)")
        layers: int | None = Field(None, ge=1, description="stride-2 deconvs (default: from 8x8, i.e. 4 at 128 px)")
        top: int | None = Field(None, ge=1, description="channels of the FC map (default width * 2**layers; official: 1024 with layers = 5)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c, r = self.config, self.info.resolution
        self.age_groups = _age_classes(c.age_groups, self.info)
        n = auto_layers(r, c.layers)
        top = c.top or c.width << n
        chans = [top >> i for i in range(n + 1)]  # e.g. 1024, 512, 256, 128, 64
        if chans[-1] < 1:
            raise ValueError(f"top = {top} channels cannot be halved {n} times")
        self.side = r >> n
        self.fc = nn.Linear(c.z_dim + self.code_size, top * self.side * self.side)
        ups: list[nn.Module] = []
        for i in range(n):
            ups += [_deconv(chans[i], chans[i + 1]), nn.ReLU(inplace=True)]
        self.ups = nn.Sequential(*ups)
        self.out = nn.Conv2d(chans[-1], self.info.channels, 5, padding=2)
        init_caae(self)

    def forward(self, z: torch.Tensor, age: torch.Tensor, gender: torch.Tensor | None = None) -> torch.Tensor:
        code = self._code(age, gender, self.config.label_repeat).to(z.dtype)  # [B, n_code]
        h = torch.relu(self.fc(torch.cat([z, code], dim=1)))  # [B, top*s*s]
        h = rearrange(h, "b (c h w) -> b c h w", h=self.side, w=self.side)  # [B, top, s, s]
        return torch.tanh(self.out(self.ups(h)))  # [B, 3, R, R]


# ----------------------------------------------------------------------------------------
def _norm1d(kind: str, n: int) -> nn.Module:
    return nn.BatchNorm1d(n) if kind == "batch" else nn.Identity()


def _norm2d(kind: str, n: int) -> nn.Module:
    return nn.BatchNorm2d(n) if kind == "batch" else nn.Identity()


class CAAEDz(Discriminator):
    """D_z: code ``[B, z_dim]`` → logit ``[B]`` (real: a sample of the uniform prior)."""

    class Config(Config):
        z_dim: int = Field(50, ge=1, description="size of z (must match caae.encoder)")
        hidden: tuple[int, ...] = Field((64, 32, 16), min_length=1, description="FC widths (paper: 64, 32, 16)")
        norm: Literal["batch", "none"] = Field(
            "none",
            description="'none' (paper) or 'batch' after each hidden FC (official code; blinds D_z to the mean/std of z, "
            "since prior and codes are normalised in separate batches)",
        )

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        dims = [c.z_dim, *c.hidden]
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(dims[i], dims[i + 1]), _norm1d(c.norm, dims[i + 1]), nn.ReLU(inplace=True))
            for i in range(len(c.hidden))
        )
        self.head = nn.Linear(dims[-1], 1)
        init_caae(self)

    def forward(self, z: torch.Tensor, features: bool = False) -> DiscOutput:
        feats = []
        h = z
        for layer in self.hidden:
            h = layer(h)  # [B, hidden_i]
            feats.append(h)
        return DiscOutput(self.head(h).squeeze(1), feats if features else [])


class CAAEDimg(_LabelMixin, Discriminator):
    """D_img: ``forward(image [B, 3, R, R], age [B], gender=None)`` → logit ``[B]``.

    The age code is tiled over the first conv's output map and concatenated to it
    (the paper's 64×64×(n+16) at 128 px).
    """

    class Config(_CondConfig):
        width: int = Field(16, ge=1, description="channels of the first conv; later convs double (16, 32, 64, 128)")
        layers: int = Field(4, ge=2, description="stride-2 convs (paper: 4)")
        fc: int = Field(1024, ge=1, description="hidden FC width (paper: 1024)")
        norm: Literal["batch", "none"] = Field("batch", description="batch norm after each conv (official code) or none")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c, r = self.config, self.info.resolution
        self.age_groups = _age_classes(c.age_groups, self.info)
        n = auto_layers(r, c.layers)
        chans = [c.width << i for i in range(n)]  # 16, 32, 64, 128
        self.first = nn.Sequential(_conv(self.info.channels, chans[0]), _norm2d(c.norm, chans[0]), nn.ReLU(inplace=True))
        cins = [chans[0] + self.code_size] + chans[1:-1]
        self.convs = nn.ModuleList(
            nn.Sequential(_conv(cins[i], chans[i + 1]), _norm2d(c.norm, chans[i + 1]), nn.ReLU(inplace=True))
            for i in range(n - 1)
        )
        side = r >> n
        self.fc = nn.Sequential(nn.Linear(chans[-1] * side * side, c.fc), nn.LeakyReLU(0.2, inplace=True))
        self.head = nn.Linear(c.fc, 1)
        init_caae(self)

    def forward(self, x: torch.Tensor, age: torch.Tensor, gender: torch.Tensor | None = None, features: bool = False) -> DiscOutput:
        h = self.first(x)  # [B, 16, R/2, R/2]
        code = self._code(age, gender, self.config.label_repeat).to(h.dtype)  # [B, n_code]
        tiled = repeat(code, "b k -> b k h w", h=h.shape[2], w=h.shape[3])  # [B, n_code, R/2, R/2]
        h = torch.cat([h, tiled], dim=1)
        feats = [h]
        for conv in self.convs:
            h = conv(h)
            feats.append(h)
        h = self.fc(h.flatten(1))  # [B, fc]
        return DiscOutput(self.head(h).squeeze(1), feats if features else [])
