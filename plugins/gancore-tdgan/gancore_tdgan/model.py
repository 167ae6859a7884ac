"""TD-GAN's four networks: the disentangling network R, the tag mapping net g, the
generative network G and the discriminator D.

Every network is told its tag types by ``tags``, an ordered table *label name → size of
that tag's representation block* (default ``{identity = 1024, view = 512}``, the chairs;
faces add e.g. ``light`` and ``expression``).  A tag type is named by the data label it
comes from, so g sizes each one-hot from the data (``info.classes(label)``).

Shapes at 128 px with the defaults (``width = 64``), from the layer list of the public
sketch (papers.md §4.3), checked here:

- R: ``[B, 3, 128, 128]`` → seven 3×3 convs, strides 2, 2, 2, 1, 1, 2, 1, channels 64, 128,
  256, 256, 256, 512, 512 (BN + LeakyReLU 0.2; BN + ReLU on the last) → ``[B, 512, 8, 8]``
  = 32,768 → FC 5120 + LeakyReLU → one head per tag: FC + tanh (identity 1024, view 512).
  Output: ``{tag: [B, size]}``.  At 64 px the same trunk ends at 4×4×512 = 8,192.
- g: per tag, one-hot (K classes) → FC ``hidden`` (default: the block size) + ReLU → FC
  block size + tanh: identity 500 → 1024 → 1024, view 31 → 512 → 512.  The first FC of a
  one-hot is a column look-up of its weight (the same numbers, no K-wide matmul).
- G: the blocks concatenated in ``tags`` order (1024 + 512 = 1536) → FC 16,384 + ReLU
  → ``[B, 1024, 4, 4]`` → BN → four 4×4 stride-2 deconvs 512, 256, 128, 64 (BN + ReLU)
  → a fifth to 3 channels + tanh → ``[B, 3, 128, 128]``.  At 64 px: FC to 4×4×512 and
  three deconvs 256, 128, 64 before the RGB one (the top width is ``width · 2^(n-1)`` for
  n = log2(R/4) deconvs, 1024 at 128 px).
- D: the same trunk as R (own weights) → FC 2560 + LeakyReLU → FC 1 → logits ``[B]``.

What the sketch gets wrong or leaves open, and what is chosen here: its code passes a
list to ``nn.Sequential``, views D's output as ``[B, 1]`` before the FC and never assigns
G's reshape (bugs, not shapes: every shape above fits at 128 px); it writes "LeakyReLU +
BN" and "ReLU + BN" where the order is ambiguous, so the usual conv → BN → activation
order is used; the FC input of R and D is computed from the resolution (8×8×512 holds only
at 128 px).  Weights start from PyTorch's defaults (the paper says nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, field_validator
from torch import nn

from gancore.parts import Config, DataInfo, Discriminator, DiscOutput, Encoder, Generator, Network

__all__ = [
    "TDGANDisentangler", "TagMapping", "TDGANGenerator", "TDGANDiscriminator", "Trunk", "DEFAULT_TAGS", "concat_blocks",
]

#: the chairs' tags and block sizes (papers.md §4.3).
DEFAULT_TAGS: dict[str, int] = {"identity": 1024, "view": 512}
#: the sketch's trunk: channel multipliers of ``width`` and strides of its seven 3×3 convs.
TRUNK_MULTS = (1, 2, 4, 4, 4, 8, 8)
TRUNK_STRIDES = (2, 2, 2, 1, 1, 2, 1)


class TagsConfig(Config):
    tags: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TAGS),
        description="tag types in order: data label -> size of its representation block (chairs: identity 1024, view 512)",
    )

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            raise ValueError("tags must name at least one tag type, e.g. {identity = 1024, view = 512}")
        bad = {k: n for k, n in v.items() if not isinstance(n, int) or n < 1}
        if bad:
            raise ValueError(f"every tag's block size must be a positive integer, got {bad}")
        return v


def concat_blocks(blocks: Mapping[str, torch.Tensor], tags: Mapping[str, int], who: str) -> torch.Tensor:
    """The blocks of ``tags``, in its order, as one ``[B, sum(sizes)]`` tensor (checked)."""
    missing = [t for t in tags if t not in blocks]
    extra = [t for t in blocks if t not in tags]
    if missing or extra:
        raise ValueError(f"{who} takes blocks {list(tags)}, got {list(blocks)}"
                         f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}"
                         f"{' (unknown ' + ', '.join(extra) + ')' if extra else ''}")
    for t, size in tags.items():
        if blocks[t].dim() != 2 or blocks[t].shape[1] != size:
            raise ValueError(f"{who}: block {t!r} must be [B, {size}], got {tuple(blocks[t].shape)}")
    return torch.cat([blocks[t] for t in tags], dim=1)


class Trunk(nn.Module):
    """The sketch's conv trunk shared by R and D: seven 3×3 convs (BN + LeakyReLU 0.2,
    BN + ReLU on the last), ``[B, C, R, R]`` → ``[B, 8·width, R/16, R/16]`` with the default strides."""

    def __init__(self, in_ch: int, width: int, strides: tuple[int, ...], resolution: int, norm: str = "batch") -> None:
        super().__init__()
        if len(strides) != len(TRUNK_MULTS):
            raise ValueError(f"strides must list {len(TRUNK_MULTS)} values (one per conv), got {list(strides)}")
        down = math.prod(strides)
        if resolution % down:
            raise ValueError(f"data.resolution = {resolution} is not divisible by the trunk's total stride {down}")
        layers: list[nn.Module] = []
        cin = in_ch
        for i, (m, s) in enumerate(zip(TRUNK_MULTS, strides)):
            cout = width * m
            layers.append(nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=norm != "batch"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            last = i == len(TRUNK_MULTS) - 1
            layers.append(nn.ReLU(inplace=True) if last else nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        self.net = nn.Sequential(*layers)
        self.out_channels, self.side = cin, resolution // down

    @property
    def out_features(self) -> int:
        return self.out_channels * self.side * self.side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 8w, R/16, R/16]


class TrunkConfig(Config):
    width: int = Field(64, ge=1, description="channels of the first conv; the trunk has width x (1, 2, 4, 4, 4, 8, 8)")
    strides: tuple[int, int, int, int, int, int, int] = Field(
        TRUNK_STRIDES, description="strides of the seven 3x3 convs (sketch: 2, 2, 2, 1, 1, 2, 1)"
    )


# ----------------------------------------------------------------------------------------
class TDGANDisentangler(Encoder):
    """R: image ``[B, 3, R, R]`` → ``{tag: [B, size]}`` in (−1, 1), one tanh head per tag."""

    class Config(TagsConfig, TrunkConfig):
        fc: int = Field(5120, ge=1, description="width of the FC after the trunk (sketch: 5120)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        self.tags = dict(c.tags)
        self.trunk = Trunk(self.info.channels, c.width, c.strides, self.info.resolution)
        self.fc = nn.Sequential(nn.Linear(self.trunk.out_features, c.fc), nn.LeakyReLU(0.2, inplace=True))
        self.heads = nn.ModuleDict({t: nn.Linear(c.fc, size) for t, size in self.tags.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.fc(self.trunk(x).flatten(1))  # [B, fc]
        return {t: torch.tanh(head(h)) for t, head in self.heads.items()}  # {tag: [B, size]}


# ----------------------------------------------------------------------------------------
class TagMapping(Network):
    """g: ``{tag: class indices [B]}`` → ``{tag: [B, size]}`` in (−1, 1); one 2-layer MLP per tag."""

    class Config(TagsConfig):
        hidden: int | None = Field(None, ge=1, description="hidden width of each tag's MLP (default: its block size, as the sketch)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        self.tags = dict(c.tags)
        self.classes = {t: self.info.classes(t) for t in self.tags}
        self.first = nn.ModuleDict({t: nn.Linear(self.classes[t], c.hidden or s) for t, s in self.tags.items()})
        self.second = nn.ModuleDict({t: nn.Linear(c.hidden or s, s) for t, s in self.tags.items()})

    def embed(self, tag: str, values: torch.Tensor) -> torch.Tensor:
        """One tag's block ``[B, size]`` for class indices ``values [B]`` (long)."""
        if tag not in self.tags:
            raise ValueError(f"g has no tag {tag!r}; its tags are {', '.join(self.tags)}")
        v = values.long()
        k = self.classes[tag]
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= k):
            bad = int(v.min()) if int(v.min()) < 0 else int(v.max())
            why = "a missing tag (-1): untagged images cannot go through g" if bad < 0 else f"out of range 0..{k - 1}"
            raise ValueError(f"tag {tag!r}: value {bad} is {why}")
        first = self.first[tag]
        # one-hot(v) @ W^T + b is column v of W plus b: the same numbers without the K-wide matmul
        h = torch.relu(F.embedding(v, first.weight.t()) + first.bias)  # [B, hidden]
        return torch.tanh(self.second[tag](h))  # [B, size]

    def forward(self, tags: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [t for t in self.tags if t not in tags]
        if missing:
            raise ValueError(f"g needs tags {list(self.tags)}; missing {missing}")
        return {t: self.embed(t, tags[t]) for t in self.tags}


# ----------------------------------------------------------------------------------------
class TDGANGenerator(Generator):
    """G: ``{tag: [B, size]}`` (or their concatenation ``[B, Σ sizes]``) → image ``[B, 3, R, R]`` in (−1, 1)."""

    class Config(TagsConfig):
        width: int = Field(64, ge=1, description="channels of the last deconv before the RGB one; earlier ones double")
        top: int | None = Field(None, ge=1, description="channels of the 4x4 FC map (default width * 2^(n-1): 1024 at 128 px)")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c, r = self.config, self.info.resolution
        self.tags = dict(c.tags)
        n = int(round(math.log2(r / 4))) if r >= 8 else 0
        if r < 8 or 4 << n != r:
            raise ValueError(f"tdgan.generator needs a resolution of 4 * 2^k (>= 8), got data.resolution = {r}")
        top = c.top or c.width << (n - 1)
        chans = [top] + [max(1, top >> (i + 1)) for i in range(n - 1)]  # e.g. 1024, 512, 256, 128, 64
        self.fc = nn.Linear(sum(self.tags.values()), top * 16)
        self.bn0 = nn.BatchNorm2d(top)
        ups: list[nn.Module] = []
        for i in range(n - 1):
            ups += [nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                    nn.ReLU(inplace=True)]
        ups.append(nn.ConvTranspose2d(chans[-1], self.info.channels, 4, 2, 1))
        self.ups = nn.Sequential(*ups)

    def forward(self, reps: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        z = reps if isinstance(reps, torch.Tensor) else concat_blocks(reps, self.tags, "tdgan.generator")
        h = torch.relu(self.fc(z))  # [B, top*16]
        h = self.bn0(rearrange(h, "b (c h w) -> b c h w", h=4, w=4))  # [B, top, 4, 4]
        return torch.tanh(self.ups(h))  # [B, 3, R, R]


# ----------------------------------------------------------------------------------------
class TDGANDiscriminator(Discriminator):
    """D: image ``[B, 3, R, R]`` → real/fake logits ``[B]`` (R's trunk, FC 2560 + LeakyReLU, FC 1)."""

    class Config(TrunkConfig):
        fc: int = Field(2560, ge=1, description="width of the hidden FC (sketch: 2560)")
        norm: Literal["batch", "none"] = Field("batch", description="batch norm in the trunk (sketch) or none")

    def __init__(self, config: object = None, *, info: DataInfo | None = None, **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c = self.config
        self.trunk = Trunk(self.info.channels, c.width, c.strides, self.info.resolution, c.norm)
        self.fc = nn.Sequential(nn.Linear(self.trunk.out_features, c.fc), nn.LeakyReLU(0.2, inplace=True))
        self.head = nn.Linear(c.fc, 1)

    def forward(self, x: torch.Tensor, features: bool = False) -> DiscOutput:
        f = self.trunk(x)  # [B, 8w, s, s]
        h = self.fc(f.flatten(1))  # [B, fc]
        return DiscOutput(self.head(h)[:, 0], [f, h] if features else [])
