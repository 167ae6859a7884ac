"""ResGAN's networks: the image transformation network (G0 / G1) and the shared
3-class discriminator.

Transformation network (paper Table 1 as copied by all public reimplementations;
``w`` = ``width``, 64 in the paper)::

    layer   kernel/stride  out ch  out size  norm / act        padding (why)
    conv    5x5 / 1        w       R         BN, LeakyReLU     2        (same size)
    conv    4x4 / 2        2w      R/2       BN, LeakyReLU     1        (exact halving)
    conv    4x4 / 2        4w      R/4       BN, LeakyReLU     1
    deconv  3x3 / 2        2w      R/2       BN, LeakyReLU     1, output_padding 1 (exact doubling)
    deconv  3x3 / 2        w       R         BN, LeakyReLU     1, output_padding 1
    conv    4x4 / 1        3       R         none (linear) -> residual r
                                             pad (left 1, right 2, top 1, bottom 2): an even
                                             kernel needs 3 pixels of padding in total to keep
                                             the size; we put the extra one after the image.
                                             (forward() computes this as the conv with padding
                                             2 on every side, dropping its first row and column:
                                             the same numbers without a padded copy of the
                                             w-channel map; ~35% faster for this layer on a CPU.)

    out = x + r          (no tanh, no clipping: the paper's formulation)

A transposed 3x3/2 convolution with padding p and output padding q maps H to
``(H - 1)·2 − 2p + 3 + q``; p = 1, q = 1 gives exactly 2H.  Convolutions followed by
BatchNorm carry no bias (BN's shift makes it redundant).

Discriminator: 4x4/2 convolutions with ``w, 2w, 4w, 8w, 16w`` channels (64 → 1024 in the
paper), BN + LeakyReLU after every conv but the first (DCGAN convention; the paper's
text does not say), as many layers as the resolution allows until the map is 4x4
(at most 5: 3 at 32 px, 4 at 64 px, 5 at 128 px), then a linear 3-way head over the
flattened last map.  Classes: 0 = real without the attribute, 1 = real with it,
2 = transformed (G0 or G1 output).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from gancore.parts import Config, Discriminator, DiscOutput, Generator

__all__ = ["ResidualOutput", "ResidualTransformer", "ResidualDiscriminator", "CLASS_NO_ATTR", "CLASS_ATTR", "CLASS_FAKE"]

#: D's classes.
CLASS_NO_ATTR, CLASS_ATTR, CLASS_FAKE = 0, 1, 2


class ResidualOutput(NamedTuple):
    """What a transformation network returns.

    :ivar out: the manipulated image ``x + r`` ``[B, 3, H, W]`` (not clipped; roughly [-1, 1]).
    :ivar residual: the residual image ``r`` ``[B, 3, H, W]`` (unbounded, ideally sparse).
    """

    out: torch.Tensor
    residual: torch.Tensor


def _bn_act(channels: int, slope: float) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.LeakyReLU(slope, inplace=True)]


class ResidualTransformer(Generator):
    """ResGAN's image transformation network: ``forward(x) -> ResidualOutput(out=x + r, residual=r)``.

    One instance is G0 (adds the attribute), another G1 (removes it); they share this
    architecture, not weights.  Input and output ``[B, 3, H, W]`` in [-1, 1]; H and W must
    be multiples of 4 (two stride-2 stages).
    """

    class Config(Config):
        width: int = Field(64, ge=1, le=1024, description="channels of the first layer (64/128/256 at the paper's 64)")
        slope: float = Field(0.2, ge=0.0, lt=1.0, description="LeakyReLU negative slope (0.2; wkcw uses 0.3)")

    def __init__(self, config=None, *, info=None, **overrides) -> None:  # noqa: ANN001 - see Part
        super().__init__(config, info=info, **overrides)
        w, s = self.config.width, self.config.slope
        c = self.info.channels
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 5, 1, 2, bias=False), *_bn_act(w, s),                 # [B, w, R, R]
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), *_bn_act(2 * w, s),         # [B, 2w, R/2, R/2]
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), *_bn_act(4 * w, s),     # [B, 4w, R/4, R/4]
            nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, output_padding=1, bias=False), *_bn_act(2 * w, s),  # R/2
            nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1, bias=False), *_bn_act(w, s),          # R
            nn.ZeroPad2d((1, 2, 1, 2)),                                           # R + 3
            nn.Conv2d(w, c, 4, 1, 0),                                             # [B, 3, R, R] = r
        )

    def forward(self, x: torch.Tensor) -> ResidualOutput:
        if x.ndim != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"residual.transformer expects images [B, C, H, W] with H, W multiples of 4; got {tuple(x.shape)}")
        h = self.net[:-2](x)  # [B, w, H, W], before ZeroPad2d((1, 2, 1, 2)) and the last 4x4 conv
        last = self.net[-1]
        # ZeroPad2d((1, 2, 1, 2)) then the 4x4 conv == the conv padded by 2 on every side without
        # its first row and column: no padded copy of h (nor its gradient) is made
        r = F.conv2d(h, last.weight, last.bias, padding=2)[..., 1:, 1:]  # [B, 3, H, W]
        return ResidualOutput(out=x + r, residual=r)


def disc_layers(resolution: int) -> int:
    """Number of 4x4/2 conv layers D uses at ``resolution``: halve until the map is
    4x4 (at least 1, at most the paper's 5)."""
    return max(1, min(5, int(math.floor(math.log2(resolution / 4)))))


class ResidualDiscriminator(Discriminator):
    """ResGAN's shared discriminator: ``forward(x, features=False) -> DiscOutput``.

    ``logits`` ``[B, 3]`` (0: real without attribute, 1: real with it, 2: transformed).
    With ``features=True``, ``features`` holds ``[φ(x)]``: the output of conv layer
    ``perceptual_layer`` (1-based, after its activation), which ResGAN's perceptual loss
    compares between input and output.
    """

    class Config(Config):
        width: int = Field(64, ge=1, le=1024, description="channels of the first conv (64 → 1024 at the paper's 64)")
        slope: float = Field(0.2, ge=0.0, lt=1.0, description="LeakyReLU negative slope")
        perceptual_layer: int = Field(
            3, ge=1, le=5,
            description="conv layer (1-based) whose output is φ for the perceptual loss; "
            "the paper leaves it open: wkcw/flere233 tap the 3rd, MingtaoGuo the 4th",
        )
        norm_first: bool = Field(False, description="BatchNorm after the first conv too (DCGAN convention: no)")

    def __init__(self, config=None, *, info=None, **overrides) -> None:  # noqa: ANN001 - see Part
        super().__init__(config, info=info, **overrides)
        cfg, res = self.config, self.info.resolution
        n = disc_layers(res)
        if cfg.perceptual_layer > n:
            raise ValueError(
                f"residual.discriminator: perceptual_layer = {cfg.perceptual_layer}, but at {res} px D has only "
                f"{n} conv layers; use perceptual_layer <= {n}"
            )
        blocks = []
        c_in, size = self.info.channels, res
        for i in range(n):
            c_out = cfg.width * 2**i
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not (i > 0 or cfg.norm_first))]
            if i > 0 or cfg.norm_first:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(cfg.slope, inplace=True))
            blocks.append(nn.Sequential(*layers))
            c_in, size = c_out, (size - 2) // 2 + 1  # 4x4/2, padding 1
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(c_in * size * size, 3)  # flattened [C, s, s] → 3 classes
        self.final_size = size

    def forward(self, x: torch.Tensor, features: bool = False) -> DiscOutput:
        h, feats = x, []
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)
            if features and i == self.config.perceptual_layer:
                feats.append(h)
        logits = self.head(rearrange(h, "b c h w -> b (c h w)"))  # [B, 3]
        return DiscOutput(logits=logits, features=feats)
