"""DR-GAN's networks: the encoder G_enc, the decoder G_dec and the multi-task discriminator D.

CVPR 2017 Table 1 at 96×96 with the defaults (``width = 32``):

- **trunk** (G_enc and D each have their own): five blocks of two 3×3 stride-1 convs,
  channels (32, 64), (64, 128), (96, 192), (128, 256), (160, 320), each conv followed by
  batch norm + ELU; a 2×2 max-pool after each of the first four blocks (96 → 48 → 24 → 12 → 6);
  a 6×6 average pool → ``f(x) ∈ R^320``.  ``downsample = "conv"`` is the TPAMI variant: each
  max-pool becomes a 3×3 stride-2 conv (zero-padded right/bottom, as the public TPAMI-style
  code does) + BN + ELU.
- **G_enc**: the trunk → ``f(x)`` ``[B, 320]``.  With ``confidence = true`` (multi-image
  DR-GAN, Fig. 3) Conv52 has one more channel (321); after the average pool that channel
  goes through a sigmoid and is the image's confidence ω ``[B]``.  Without it ω is 1.
- **G_dec**: FC([f(x) 320, one-hot pose c (N_p), noise z (50)]) → 6×6×320 → BN + ELU, then
  the ten "FConv" layers of Table 1 (3×3 transposed convs; stride 2 doubles the map):
  160, 256 (/2), 128, 192 (/2), 96, 128 (/2), 64, 64 (/2), 32, then 3 channels (1 with
  ``channels = 1``) at stride 1 + tanh → ``[B, 3, 96, 96]`` in [-1, 1].
- **D**: the trunk + one FC from ``f_D ∈ R^320`` to N_d + 1 identity logits (the last is the
  "synthetic" class of the paper's single softmax) and N_p pose logits.
  ``realfake = "separate"`` is the deviation of a popular reimplementation: N_d identity
  logits plus one separate real/fake logit (sigmoid/BCE).

Convs and FCs followed by batch norm have no bias (it would be cancelled); the last
FConv and D's heads do.  Every conv/FC weight starts from N(0, 0.02) (the paper), biases
from 0, batch norm from weight 1, bias 0.  ``width`` scales every channel count
(paper: 32); the resolution must be a multiple of 16, and the smallest map is R/16
(6×6 at 96 px, 4×4 at 64 px, 3×3 at 48 px).  N_d and N_p come from the data (labels
``identity`` and ``pose``) unless set.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from gancore.parts import Config, DataInfo, Discriminator, DiscOutput, Encoder, Generator

__all__ = [
    "DRGANEncoder",
    "DRGANDecoder",
    "DRGANDiscriminator",
    "Encoded",
    "Trunk",
    "trunk_channels",
    "decoder_channels",
    "one_hot_pose",
    "init_drgan",
]

#: CVPR Table 1 channels of the trunk's conv pairs, in units of ``width`` (32 → 32/64, ..., 160/320).
_TRUNK = ((1, 2), (2, 4), (3, 6), (4, 8), (5, 10))
#: G_dec's FConv channels after the FC map (10·width), in units of ``width``, and which double the map.
_DECODER = ((5, 1), (8, 2), (4, 1), (6, 2), (3, 1), (4, 2), (2, 1), (2, 2), (1, 1))


def trunk_channels(width: int) -> list[tuple[int, int]]:
    """Output channels of each block's two convs: ``[(32, 64), (64, 128), ...]`` at width 32."""
    return [(a * width, b * width) for a, b in _TRUNK]


def decoder_channels(width: int) -> list[tuple[int, int]]:
    """(channels, stride) of G_dec's FConv layers before the output layer."""
    return [(a * width, s) for a, s in _DECODER]


def check_resolution(resolution: int) -> int:
    """The smallest map side, R/16; a clear error when R is not a multiple of 16."""
    if resolution < 16 or resolution % 16:
        raise ValueError(f"data.resolution must be a multiple of 16 for DR-GAN (four 2x downsamplings), got {resolution}")
    return resolution // 16


def init_drgan(module: nn.Module) -> None:
    """The paper's initialisation: N(0, 0.02) conv/FC weights, zero biases, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ELU()]


class Trunk(nn.Module):
    """The shared G_enc / D layout: ``[B, C, R, R]`` → ``[B, 10·width (+extra)]`` after the average pool.

    :param extra: channels added to Conv52 (1 for the multi-image confidence ω).
    :param downsample: ``"maxpool"`` (CVPR Table 1) or ``"conv"`` (TPAMI: 3×3 stride-2 conv).
    """

    def __init__(self, in_channels: int, width: int, downsample: str = "maxpool", extra: int = 0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = in_channels
        specs = trunk_channels(width)
        for i, (a, b) in enumerate(specs):
            last = i == len(specs) - 1
            self.blocks.append(nn.Sequential(*_conv_bn(cin, a), *_conv_bn(a, b + (extra if last else 0))))
            if not last:
                if downsample == "maxpool":
                    self.downs.append(nn.MaxPool2d(2, 2))
                else:  # TPAMI "Conv13/23/33/43": pad right/bottom by 1, 3x3 stride 2 -> exactly half
                    self.downs.append(nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(b, b, 3, 2, 0, bias=False),
                                                    nn.BatchNorm2d(b), nn.ELU()))
            cin = b
        self.out_channels = specs[-1][1] + extra

    def forward(self, x: torch.Tensor, features: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled vector ``[B, out_channels]`` and, with ``features``, each block's output map."""
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if features:
                maps.append(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        return x.mean(dim=(2, 3)), maps  # the (R/16) x (R/16) average pool


def _in_channels(config_channels: int | None, info: DataInfo) -> int:
    return config_channels if config_channels is not None else info.channels


class Encoded(NamedTuple):
    """G_enc's output: identity features ``f`` ``[B, F]`` and confidences ``omega`` ``[B]`` in (0, 1)
    (exactly 1 for an encoder without the confidence channel)."""

    f: torch.Tensor
    omega: torch.Tensor


class _TrunkConfig(Config):
    width: int = Field(32, ge=1, description="channel unit: the paper's 32 gives 32/64, 64/128, 96/192, 128/256, 160/320")
    downsample: Literal["maxpool", "conv"] = Field(
        "maxpool", description="'maxpool' (CVPR Table 1) or 'conv' (TPAMI: 3x3 stride-2 convs instead of the max-pools)"
    )
    channels: int | None = Field(None, ge=1, le=4, description="input image channels (default: the data's; 1 = grayscale)")


# ----------------------------------------------------------------------------------------
class DRGANEncoder(Encoder):
    """G_enc: face ``[B, C, R, R]`` → :class:`Encoded` (``f`` ``[B, 10·width]``, ``omega`` ``[B]``)."""

    class Config(_TrunkConfig):
        confidence: bool = Field(
            False, description="multi-image DR-GAN: one more Conv52 channel, sigmoid(avg-pool) = the image's confidence omega"
        )

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        check_resolution(self.info.resolution)
        self.in_channels = _in_channels(c.channels, self.info)
        self.trunk = Trunk(self.in_channels, c.width, c.downsample, extra=1 if c.confidence else 0)
        self.feature_dim = trunk_channels(c.width)[-1][1]
        init_drgan(self)

    def forward(self, x: torch.Tensor) -> Encoded:
        h, _ = self.trunk(x)  # [B, F (+1)]
        if self.config.confidence:
            f, w = h[:, : self.feature_dim], torch.sigmoid(h[:, self.feature_dim])
        else:
            f, w = h, torch.ones(h.shape[0], device=h.device, dtype=h.dtype)
        return Encoded(f, w)


def one_hot_pose(pose: torch.Tensor, poses: int) -> torch.Tensor:
    """Pose indices ``[B]`` → one-hot codes ``[B, poses]``; a code ``[B, poses]`` is passed through."""
    if pose.dim() == 2:
        if pose.shape[1] != poses:
            raise ValueError(f"pose code has {pose.shape[1]} entries, the decoder was built for {poses} poses")
        return pose
    p = pose.long()
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= poses):
        raise ValueError(f"pose index out of range 0..{poses - 1}: {p.tolist()}")
    return F.one_hot(p, poses).float()


class DRGANDecoder(Generator):
    """G_dec: ``(f [B, F], pose [B] indices or [B, N_p] codes, z [B, N_z] or None)`` → ``[B, C, R, R]``.

    ``z = None`` decodes with the noise at 0, the middle of its U(−1, 1) range (deterministic
    rotations for figures, the CLI and evaluation).
    """

    class Config(Config):
        width: int = Field(32, ge=1, description="channel unit (paper: 32 -> FC map 320, FConvs 160 ... 32)")
        feature_dim: int | None = Field(None, ge=1, description="size of f(x) (default 10*width, the encoder's)")
        z_dim: int = Field(50, ge=0, description="noise size N_z (paper: 50; the official TF code uses 20)")
        poses: int | None = Field(None, ge=1, description="pose classes N_p (default: from the data's label 'pose')")
        channels: int | None = Field(None, ge=1, le=4, description="output channels (default: the data's; 1 = CVPR Table 1's grayscale)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        self.side = check_resolution(self.info.resolution)
        self.poses = c.poses if c.poses is not None else self.info.classes("pose")
        self.feature_dim = c.feature_dim or 10 * c.width
        self.channels = _in_channels(c.channels, self.info)
        self.z_dim = c.z_dim
        top = 10 * c.width
        self.top = top
        self.fc = nn.Linear(self.feature_dim + self.poses + c.z_dim, top * self.side * self.side, bias=False)
        self.fc_norm = nn.Sequential(nn.BatchNorm2d(top), nn.ELU())
        layers: list[nn.Module] = []
        cin = top
        for cout, stride in decoder_channels(c.width):
            pad = 1 if stride == 2 else 0  # stride 2: output_padding 1 makes the map exactly twice as large
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride, 1, output_padding=pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ELU()]
            cin = cout
        layers += [nn.ConvTranspose2d(cin, self.channels, 3, 1, 1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        init_drgan(self)

    def forward(self, f: torch.Tensor, pose: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        b = f.shape[0]
        if f.shape[1] != self.feature_dim:
            raise ValueError(f"G_dec expects features of size {self.feature_dim}, got {tuple(f.shape)}")
        code = one_hot_pose(pose, self.poses).to(f.dtype)
        if z is None:
            z = f.new_zeros(b, self.z_dim)
        h = self.fc(torch.cat([f, code, z], dim=1))  # [B, 10w * s * s]
        h = self.fc_norm(h.view(b, self.top, self.side, self.side))  # [B, 10w, s, s]
        return self.layers(h)  # [B, C, R, R]


class DRGANDiscriminator(Discriminator):
    """D: image ``[B, C, R, R]`` → :class:`~gancore.parts.DiscOutput`.

    ``logits``: identity logits ``[B, N_d + 1]`` (last = synthetic) — or ``[B, N_d]`` with
    ``realfake = "separate"``; ``extra["pose"]``: pose logits ``[B, N_p]``;
    ``extra["realfake"]``: the separate real/fake logit ``[B]`` (``"separate"`` only);
    ``features`` (on request): each trunk block's output map.
    """

    class Config(_TrunkConfig):
        identities: int | None = Field(None, ge=1, description="identity classes N_d (default: from the data's label 'identity')")
        poses: int | None = Field(None, ge=1, description="pose classes N_p (default: from the data's label 'pose')")
        realfake: Literal["softmax", "separate"] = Field(
            "softmax",
            description="'softmax': the synthetic class is the (N_d+1)-th identity logit (paper); "
            "'separate': N_d identity logits plus a sigmoid real/fake logit (a popular reimplementation's deviation)",
        )
        dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on f_D before the heads (official TF code: 0.4)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        check_resolution(self.info.resolution)
        self.identities = c.identities if c.identities is not None else self.info.classes("identity")
        self.poses = c.poses if c.poses is not None else self.info.classes("pose")
        self.separate = c.realfake == "separate"
        self.in_channels = _in_channels(c.channels, self.info)
        self.trunk = Trunk(self.in_channels, c.width, c.downsample)
        self.id_logits = self.identities + (0 if self.separate else 1)
        self.head = nn.Linear(self.trunk.out_channels, self.id_logits + self.poses + (1 if self.separate else 0))
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        init_drgan(self)

    @property
    def synthetic_class(self) -> int:
        """Index of the synthetic class among the identity logits (``"softmax"`` only)."""
        if self.separate:
            raise ValueError("a D with realfake = 'separate' has no synthetic identity class")
        return self.identities

    def forward(self, x: torch.Tensor, features: bool = False) -> DiscOutput:
        h, maps = self.trunk(x, features)  # [B, F]
        out = self.head(self.drop(h))  # [B, N_d (+1) + N_p (+1)]
        ident, pose = out[:, : self.id_logits], out[:, self.id_logits : self.id_logits + self.poses]
        extra = {"pose": pose}
        if self.separate:
            extra["realfake"] = out[:, -1]
        return DiscOutput(logits=ident, features=maps, extra=extra)
