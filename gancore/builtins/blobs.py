"""``blobs``: a tiny procedural data source for tests and smoke runs.

Each image is a soft coloured disc (or square, the binary ``square`` label) on a dark
background; labels: ``color`` (0..3), ``square`` (0/1), ``identity`` (= color, so
identity-conditioned schedules can be smoke-tested).  Deterministic per index, instant
to make, useful only to check that code runs — train real models on ``synthfaces``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
from pydantic import Field

from ..data.base import DataConfig, DataSource

_COLORS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.4, 1.0], [1.0, 0.9, 0.2]])


class BlobsConfig(DataConfig):
    size: int = Field(512, ge=1, description="number of samples")
    seed: int = Field(0, description="changes every sample")


class Blobs(DataSource):
    """Coloured discs and squares; for tests and smoke runs only."""

    Config = BlobsConfig
    provides = ("color", "square", "identity")

    def __init__(self, config: BlobsConfig | None = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        n = self.config.size
        salt = 0 if self.config.split == "train" else 1
        g = torch.Generator().manual_seed(zlib.crc32(f"blobs/{self.config.seed}/{salt}".encode()))
        self._color = torch.randint(0, 4, (n,), generator=g)
        self._square = torch.randint(0, 2, (n,), generator=g)
        self._center = torch.rand(n, 2, generator=g) * 0.4 + 0.3
        self._radius = torch.rand(n, generator=g) * 0.15 + 0.15

    def __len__(self) -> int:
        return self.config.size

    def labels(self) -> dict[str, torch.Tensor]:
        base = {"color": self._color, "square": self._square, "identity": self._color}
        return self.attribute_label(base)

    def load(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        r = self.config.resolution
        grid = (torch.arange(r) + 0.5) / r
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")  # [R, R]
        dx = xx - self._center[idx, 0, None, None]
        dy = yy - self._center[idx, 1, None, None]
        rad = self._radius[idx, None, None]
        disc = (dx.square() + dy.square()).sqrt()
        box = torch.maximum(dx.abs(), dy.abs())
        dist = torch.where(self._square[idx, None, None].bool(), box, disc)
        mask = torch.sigmoid((rad - dist) * r * 1.5)  # soft edge ~1px
        color = _COLORS[self._color[idx]]  # [B, 3]
        image = mask[:, None] * color[:, :, None, None] + (1 - mask[:, None]) * 0.1
        out = {"image": image * 2 - 1}
        out.update({k: v[idx] for k, v in self.labels().items()})
        return out
