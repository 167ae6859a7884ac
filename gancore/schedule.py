"""Schedules: a paper's training algorithm, written as data.

A :class:`Schedule` names the network *roles* it needs (``{"G0": "generator", "D":
"discriminator"}``), the data *streams* it draws each iteration (``x0``: images without
the attribute, ``x1``: with it), and the ordered :class:`Phase` list of one iteration.

A phase says which roles step (``trains``), how to compute the tensors its losses read
(``run``, which fills the shared :class:`Context`), which tensors that makes available
(``provides``, checked against every loss term's ``reads`` before training starts), its
default loss terms, and how often it runs (``every``; a D:G ratio of 1:2 is D with
``every=2``).

Forward results are shared between the phases of an iteration through the context:
``ctx.once("fake0", lambda: ctx.nets.G0(x0))`` computes ``G0(x0)`` the first time any
phase asks and hands the same tensor to later phases.  A result that carries gradient
into a later phase must be made by a network listed in that earlier phase's
``prepares`` (so the engine leaves its parameters trainable there); everywhere else the
engine freezes the roles a phase does not train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .losses import LossTerm
from .parts import Config, DataInfo, make_config

__all__ = ["Phase", "Stream", "Schedule", "Context", "Nets", "ROLE_KINDS"]

#: the kinds a schedule may ask for as a role.
ROLE_KINDS = ("encoder", "generator", "discriminator")


@dataclass(frozen=True)
class Stream:
    """One batch drawn per iteration.

    :param where: keep only samples whose labels equal these values, e.g. ``{"attribute": 1}``.
    :param group_by: draw ``group_size`` samples sharing this label's value (multi-image
        DR-GAN draws several images of one identity); the batch then holds
        ``batch_size`` groups, laid out group after group.
    """

    where: Mapping[str, int] = field(default_factory=dict)
    group_by: str | None = None
    group_size: int = 1


@dataclass
class Phase:
    """One step of an iteration: which roles step on which losses."""

    name: str
    trains: tuple[str, ...]
    run: Callable[[Context], None]
    provides: tuple[str, ...] = ()
    losses: list[LossTerm] = field(default_factory=list)
    every: int = 1
    #: roles whose forward results made here flow with gradient into a later phase.
    prepares: tuple[str, ...] = ()
    #: whether loss terms added by a recipe without a ``phase`` key attach here.
    accepts_extra_losses: bool = False


class Nets:
    """The networks as one phase sees them: active (trained or prepared) roles as the
    engine runs them (compiled when ``train.compile`` is on), frozen roles as their module."""

    def __init__(self, wrapped: Mapping[str, nn.Module], plain: Mapping[str, nn.Module], active: set[str]):
        self._wrapped = dict(wrapped)
        self._plain = dict(plain)
        self._active = set(active)

    def __getitem__(self, role: str) -> nn.Module:
        if role not in self._plain:
            raise KeyError(f"no network in role {role!r}; roles: {sorted(self._plain)}")
        return self._wrapped[role] if role in self._active else self._plain[role]

    def __getattr__(self, role: str) -> nn.Module:
        if role.startswith("_"):
            raise AttributeError(role)
        try:
            return self[role]
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def __contains__(self, role: object) -> bool:
        return role in self._plain

    def roles(self) -> list[str]:
        return list(self._plain)

    def plain(self, role: str) -> nn.Module:
        """The role's own module (for reading its config), never a compiled wrapper."""
        return self._plain[role]


class Context(dict):
    """Tensors of one (micro-)batch, shared by the phases of one iteration.

    Keys are what loss terms read.  Attributes: ``step``, ``batch`` (stream name →
    ``{"image": ..., labels...}``), ``nets`` (set by the engine for each phase),
    ``info`` and ``phase`` (the running phase's name).
    """

    def __init__(self, *, step: int, batch: dict[str, dict[str, torch.Tensor]], info: DataInfo | None = None):
        super().__init__()
        self.step = step
        self.batch = batch
        self.info = info or DataInfo()
        self.nets: Nets | None = None
        self.phase = ""

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """``ctx[key]``, computed by ``fn()`` the first time it is asked for."""
        if key not in self:
            self[key] = fn()
        return self[key]


class Schedule:
    """Base of every schedule.  Subclasses set ``roles`` and implement ``phases``."""

    Config: ClassVar[type[Config]] = Config
    kind: ClassVar[str] = "schedule"
    #: role name → kind of part it takes ("encoder", "generator", "discriminator").
    roles: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = make_config(type(self), config, overrides)

    def required_labels(self) -> tuple[str, ...]:
        """Labels the data source must provide (beyond ``image``)."""
        return ()

    def streams(self) -> dict[str, Stream]:
        """The batches drawn each iteration; by default one unfiltered ``batch``."""
        return {"batch": Stream()}

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def optimized_roles(self) -> list[str]:
        """Roles that get an optimizer: every role some phase trains."""
        out: list[str] = []
        for p in self.phases():
            out += [r for r in p.trains if r not in out]
        return out

    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], batch: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Rows of the sample grid: ``[(label, images [N, C, H, W] in [-1, 1]), ...]``."""
        return []
