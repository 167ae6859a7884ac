"""The data-source contract and deterministic batch drawing.

A :class:`DataSource` holds a table of labels for all of its samples (cheap: numbers
only) and loads images on demand, a whole batch at a time::

    src = SynthFaces(SynthFaces.Config(profile="celeba", resolution=64))
    len(src)                      # number of samples
    src.labels()                  # {"identity": LongTensor[N], "Eyeglasses": ..., ...}
    src.load([3, 17, 42])         # {"image": FloatTensor[3, 3, 64, 64] in [-1, 1], labels...}

:class:`BatchPlan` turns ``(stream, step)`` into the sample indices of that step, as a
pure function of the seed: resuming at step *s* draws exactly the batches an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..parts import Config, DataInfo, make_config
from ..schedule import Stream

__all__ = ["DataConfig", "DataSource", "BatchPlan", "DataError"]


class DataError(ValueError):
    """Bad data on disk or a data request the source cannot satisfy; the message says which."""


class DataConfig(Config):
    """Keys every data source understands; each source's Config extends this."""

    resolution: int = Field(64, ge=8, le=1024, description="side of the square images, in pixels")
    attribute: str | None = Field(
        None,
        description="binary label that attribute-editing schedules use, exposed to them as label 'attribute'",
    )
    split: str = Field("train", pattern="^(train|test|all)$", description="which split to read")


class DataSource:
    """Base of every data source.  Subclasses implement ``__len__``, ``labels``, ``load``."""

    Config: ClassVar[type[DataConfig]] = DataConfig
    kind: ClassVar[str] = "data"
    #: labels this source can provide (``attribute`` is added when ``config.attribute`` is set).
    provides: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = make_config(type(self), config, overrides)

    # -- what subclasses implement -------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def labels(self) -> dict[str, torch.Tensor]:
        """Every label of every sample: name → tensor ``[N]`` (long for classes, float otherwise)."""
        raise NotImplementedError

    def load(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Images ``[B, C, H, W]`` in [-1, 1] under ``"image"`` plus the labels of these samples."""
        raise NotImplementedError

    # -- shared behaviour ------------------------------------------------------------------
    @classmethod
    def provided_labels(cls, config: DataConfig) -> tuple[str, ...]:
        """Labels a source with this config provides (used to validate recipes before loading)."""
        return cls.provides + (("attribute",) if config.attribute else ())

    def label_classes(self) -> dict[str, int]:
        """Number of classes of each categorical (integer) label."""
        out = {}
        for name, values in self.labels().items():
            if not values.dtype.is_floating_point and values.numel():
                out[name] = int(values.max()) + 1
        return out

    def info(self) -> DataInfo:
        return DataInfo(resolution=self.config.resolution, channels=3, label_classes=self.label_classes())

    def attribute_label(self, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the ``attribute`` alias of ``config.attribute`` to a label table."""
        name = self.config.attribute
        if not name:
            return labels
        if name not in labels:
            have = ", ".join(sorted(labels))
            raise DataError(f"data.attribute = {name!r} is not a label of this source; labels: {have}")
        values = labels[name]
        if values.dtype.is_floating_point or int(values.min()) < 0 or int(values.max()) > 1:
            raise DataError(f"data.attribute = {name!r} must be a binary 0/1 label")
        return {**labels, "attribute": values.long()}


def _stable_seed(*parts: object) -> int:
    """A seed from ``parts`` that is the same in every process and run (unlike ``hash``)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


class BatchPlan:
    """Which samples each stream takes at each step — a pure function of the seed.

    Each stream walks through its eligible samples in a fresh random order per epoch
    (epoch *e* uses the permutation seeded by ``(seed, stream, e)``).  With several
    processes, process *r* of *w* takes the *r*-th slice of every global batch.
    """

    def __init__(
        self,
        labels: dict[str, torch.Tensor],
        streams: dict[str, Stream],
        batch_size: int,
        seed: int,
        num_samples: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.pools: dict[str, torch.Tensor] = {}
        self.groups: dict[str, list[torch.Tensor]] = {}
        self.streams = streams
        for name, stream in streams.items():
            keep = torch.ones(num_samples, dtype=torch.bool)
            for label, value in stream.where.items():
                if label not in labels:
                    raise DataError(f"stream {name!r} filters on label {label!r}, which the data does not provide")
                keep &= labels[label] == value
            pool = keep.nonzero().flatten()
            if len(pool) == 0:
                cond = ", ".join(f"{k} = {v}" for k, v in stream.where.items())
                raise DataError(f"no sample of the data has {cond} (needed by stream {name!r})")
            self.pools[name] = pool
            if stream.group_by:
                if stream.group_by not in labels:
                    raise DataError(f"stream {name!r} groups by label {stream.group_by!r}, which the data lacks")
                key = labels[stream.group_by][pool]
                groups = [pool[key == v] for v in key.unique()]
                groups = [g for g in groups if len(g) >= stream.group_size]
                if not groups:
                    raise DataError(
                        f"stream {name!r} needs {stream.group_size} samples sharing one {stream.group_by!r}; none has"
                    )
                self.groups[name] = groups

    def _order(self, name: str, n: int, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_stable_seed(self.seed, name, epoch))
        return torch.randperm(n, generator=g)

    def indices(self, name: str, step: int) -> list[int]:
        """Indices of this process's share of stream ``name`` at ``step``."""
        stream = self.streams[name]
        global_batch = self.batch_size * self.world
        if stream.group_by:
            groups = self.groups[name]
            picks = self._walk(name, len(groups), step, global_batch)
            mine = picks[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            out: list[int] = []
            for gi, g_index in mine:
                grp = groups[g_index]
                g = torch.Generator().manual_seed(_stable_seed(self.seed, name, "group", gi))
                out += grp[torch.randperm(len(grp), generator=g)[: stream.group_size]].tolist()
            return out
        pool = self.pools[name]
        picks = self._walk(name, len(pool), step, global_batch)
        mine = picks[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return [int(pool[i]) for _, i in mine]

    def _walk(self, name: str, n: int, step: int, count: int) -> list[tuple[int, int]]:
        """``count`` positions of the endless shuffled walk over ``n`` items, from ``step``.

        Returns (global position, item) pairs.
        """
        start = step * count
        out = []
        pos = start
        while len(out) < count:
            epoch, offset = divmod(pos, n)
            order = self._order(name, n, epoch)
            take = min(count - len(out), n - offset)
            out += [(pos + k, int(order[offset + k])) for k in range(take)]
            pos += take
        return out
