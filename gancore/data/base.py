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

Missing labels are ``-1`` in integer label tensors (``NaN`` in float ones): a real
dataset may lack some, and ``data.label_fraction`` drops them from a deterministic share
of the training samples (:class:`PartialLabels`) for semi-supervised training.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..parts import Config, DataInfo, make_config
from ..schedule import Stream

__all__ = ["DataConfig", "DataSource", "BatchPlan", "DataError", "PartialLabels", "missing"]


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
    label_fraction: float = Field(
        1.0, gt=0.0, le=1.0,
        description="fraction of training samples that keep their labels (semi-supervised: the others have "
                    "the labels named in partial_labels marked missing); test splits keep every label",
    )
    partial_labels: list[str] = Field(
        default_factory=list, description="labels dropped from the other samples (default: every categorical label)"
    )


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

    def report(self) -> dict[str, Any]:
        """What loading met so far (files read, converted, skipped as unreadable); sources
        that read files from disk fill it, others return ``{}``."""
        return {}

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




def missing(values: torch.Tensor) -> torch.Tensor:
    """Which entries of a label tensor are missing (``-1``, or ``NaN`` for float labels)."""
    return values.isnan() if values.dtype.is_floating_point else values < 0


class PartialLabels:
    """A training source where only ``fraction`` of the samples keep their labels.

    The kept samples are a deterministic function of the source size and the fraction
    (the same in every process and run); the others have each label in ``names`` (default:
    every categorical label) set missing, in the label table and in every loaded batch.
    Everything else is the wrapped source's.
    """

    def __init__(self, source: DataSource, fraction: float, names: Sequence[str] = ()) -> None:
        self.source = source
        table = source.labels()
        self.names = list(names) or [k for k, v in table.items() if not v.dtype.is_floating_point and k != "image"]
        unknown = [n for n in self.names if n not in table]
        if unknown:
            raise DataError(f"data.partial_labels names {unknown}, which the source does not provide; "
                            f"labels: {', '.join(sorted(table))}")
        n = len(source)
        keep = torch.zeros(n, dtype=torch.bool)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_stable_seed("partial-labels", n, fraction)))
        keep[order[: max(1, round(fraction * n))]] = True
        self.keep = keep
        self._table = {k: self._drop(k, v, keep) for k, v in table.items()}

    def _drop(self, name: str, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if name not in self.names:
            return values
        gone = torch.full_like(values, float("nan") if values.dtype.is_floating_point else -1)
        return torch.where(keep, values, gone)

    def __len__(self) -> int:
        return len(self.source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def labels(self) -> dict[str, torch.Tensor]:
        return self._table

    def label_classes(self) -> dict[str, int]:
        return self.source.label_classes()

    def info(self) -> DataInfo:
        return self.source.info()

    def load(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = self.source.load(indices)
        keep = self.keep[torch.as_tensor(list(indices), dtype=torch.long)]
        return {k: self._drop(k, v, keep) if k in self.names else v for k, v in batch.items()}


class BatchPlan:
    """Which samples each stream takes at each step — a pure function of the seed.

    Each stream walks through its eligible samples (or, for grouped streams, its groups)
    in a fresh random order per epoch (epoch *e* uses the permutation seeded by ``(seed,
    stream, e)``).  With several processes, process *r* of *w* takes the *r*-th slice of
    every global batch.  ``batch_sizes`` gives each stream's batch size per process
    (streams not named take ``batch_size``).  ``notes`` lists what was left out.
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
        batch_sizes: Mapping[str, int] | None = None,
    ) -> None:
        self.seed, self.rank, self.world = seed, rank, world
        self.streams = streams
        self.batch_sizes = {name: (batch_sizes or {}).get(name) or s.batch_size or batch_size
                            for name, s in streams.items()}
        self.pools: dict[str, torch.Tensor] = {}
        self.groups: dict[str, list[torch.Tensor]] = {}
        self.notes: list[str] = []
        for name, stream in streams.items():
            keep = torch.ones(num_samples, dtype=torch.bool)
            for label in stream.labels_needed():
                if label not in labels:
                    raise DataError(f"stream {name!r} needs label {label!r}, which the data does not provide")
            for label, value in stream.where.items():
                keep &= labels[label] == value
            for label in stream.labeled:
                keep &= ~missing(labels[label])
            for label in stream.unlabeled:
                keep &= missing(labels[label])
            pool = keep.nonzero().flatten()
            if len(pool) == 0:
                raise DataError(f"no sample of the data is eligible for stream {name!r} ({self._describe(stream)})")
            self.pools[name] = pool
            if stream.group_by:
                self.groups[name] = self._make_groups(name, stream, labels[stream.group_by], pool)

    @staticmethod
    def _describe(stream: Stream) -> str:
        cond = [f"{k} = {v}" for k, v in stream.where.items()]
        cond += [f"{k} present" for k in stream.labeled] + [f"{k} missing" for k in stream.unlabeled]
        return ", ".join(cond) or "every sample"

    def _make_groups(self, name: str, stream: Stream, key: torch.Tensor, pool: torch.Tensor) -> list[torch.Tensor]:
        key = key[pool]
        known = ~missing(key)
        if not bool(known.all()):
            self.notes.append(f"stream {name!r}: {int((~known).sum())} samples without a {stream.group_by!r} "
                              f"label are left out of its groups")
        pool, key = pool[known], key[known]
        values, inverse = key.unique(return_inverse=True)
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse, minlength=len(values))
        groups = list(pool[order].split(counts.tolist()))
        small = [g for g in groups if len(g) < stream.group_size]
        kept = [g for g in groups if len(g) >= stream.min_group]
        if small:
            self.notes.append(
                f"stream {name!r}: {len(small)} of {len(groups)} {stream.group_by} values have fewer than "
                f"{stream.group_size} samples (smallest {min(len(g) for g in small)}); "
                + (f"{len(groups) - len(kept)} with fewer than {stream.min_group} are left out, the others make "
                   f"smaller groups" if len(kept) < len(groups) else "they make smaller groups"))
        if not kept:
            raise DataError(f"stream {name!r} needs at least {stream.min_group} samples sharing one "
                            f"{stream.group_by!r}; no value has that many")
        return kept

    def _order(self, name: str, n: int, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_stable_seed(self.seed, name, epoch))
        return torch.randperm(n, generator=g)

    def indices(self, name: str, step: int) -> list[int]:
        """Indices of this process's share of stream ``name`` at ``step``."""
        return self.draw(name, step)[0]

    def draw(self, name: str, step: int) -> tuple[list[int], list[int] | None]:
        """This process's share of stream ``name`` at ``step``: sample indices and, for a
        grouped stream, each sample's group (0 … groups − 1, contiguous)."""
        stream, size = self.streams[name], self.batch_sizes[name]
        if stream.group_by:
            groups = self.groups[name]
            picks = self._walk(name, len(groups), step, size * self.world)
            mine = picks[self.rank * size : (self.rank + 1) * size]
            out: list[int] = []
            group_of: list[int] = []
            for j, (pos, g_index) in enumerate(mine):
                grp = groups[g_index]
                g = torch.Generator().manual_seed(_stable_seed(self.seed, name, "group", pos))
                chosen = grp[torch.randperm(len(grp), generator=g)[: stream.group_size]].tolist()
                out += chosen
                group_of += [j] * len(chosen)
            return out, group_of
        pool = self.pools[name]
        picks = self._walk(name, len(pool), step, size * self.world)
        mine = picks[self.rank * size : (self.rank + 1) * size]
        return [int(pool[i]) for _, i in mine], None

    def _walk(self, name: str, n: int, step: int, count: int) -> list[tuple[int, int]]:
        """``count`` positions of the endless shuffled walk over ``n`` items, from ``step``.

        Returns (global position, item) pairs.
        """
        out = []
        pos = step * count
        while len(out) < count:
            epoch, offset = divmod(pos, n)
            order = self._order(name, n, epoch)
            take = min(count - len(out), n - offset)
            out += [(pos + k, int(order[offset + k])) for k in range(take)]
            pos += take
        return out
