"""Loss terms: named, weighted scalars that read tensors from a phase's context.

A :class:`LossTerm` declares the context tensors it ``reads`` and computes an
unweighted value from them in :meth:`LossTerm.compute`.  Terms compose::

    total = TotalVariation() + 0.5 * ResidualSparsity(weight=5e-4)
    value, parts = total.evaluate(ctx)     # parts: {"tv": ..., "residual.sparsity": ...}

Each term's config has ``weight`` (a float), an optional linear ramp (``start``,
``ramp``: the weight is 0 before step ``start`` and reaches its value ``ramp`` steps
later), and ``inputs``, which renames what the term reads
(``inputs = {image = "recon"}`` makes a TV term read ``ctx["recon"]``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from .parts import Config, make_config

__all__ = ["LossTerm", "LossSum", "LossConfig", "MissingTensor", "LossError", "sum_per_sample"]


def sum_per_sample(values: torch.Tensor) -> torch.Tensor:
    """``values`` ``[B, ...]`` summed over everything but the batch, averaged over the batch: a scalar
    (an L1 norm per image, for ``values = x.abs()``)."""
    return values.flatten(1).sum(1).mean()


class MissingTensor(KeyError):
    """A loss term asked the context for a tensor the phase did not produce."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class LossError(ValueError):
    """A loss term could not be computed from the tensors it read; the message names the term,
    what it read and the phase."""


class LossConfig(Config):
    weight: float = Field(1.0, description="multiplier of the term")
    start: int = Field(0, ge=0, description="step before which the weight is 0")
    ramp: int = Field(0, ge=0, description="steps over which the weight rises linearly from 0")
    inputs: dict[str, str] = Field(
        default_factory=dict, description="rename what the term reads: {its_name = context_name}"
    )
    name: str | None = Field(None, description="log name (default: the registered name)")


class LossTerm(nn.Module):
    """Base of every loss term.  Subclasses set ``reads`` and implement ``compute``."""

    Config: ClassVar[type[LossConfig]] = LossConfig
    kind: ClassVar[str] = "loss"
    #: context tensors this term reads, by the names ``compute`` takes as keywords.
    reads: ClassVar[tuple[str, ...]] = ()
    #: default log name; the registry sets it to the registered name.
    default_name: ClassVar[str] = ""

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__()
        self.config = make_config(type(self), config, overrides)
        unknown = set(self.config.inputs) - set(self.reads)
        if unknown:
            raise ValueError(
                f"loss {self.name!r}: inputs renames {sorted(unknown)}, but the term reads only {list(self.reads)}"
            )

    # -- identity -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name or self.default_name or type(self).__name__

    @property
    def sources(self) -> dict[str, str]:
        """What the term reads → the context name it takes it from."""
        return {r: self.config.inputs.get(r, r) for r in self.reads}

    def weight_at(self, step: int) -> float:
        c = self.config
        if step < c.start:
            return 0.0
        if c.ramp > 0:
            return c.weight * min(1.0, (step - c.start + 1) / c.ramp)
        return c.weight

    # -- evaluation -------------------------------------------------------------------
    def compute(self, **tensors: torch.Tensor) -> torch.Tensor:
        """The unweighted value from the tensors named in ``reads``."""
        raise NotImplementedError

    def gather(self, ctx: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for mine, theirs in self.sources.items():
            if theirs not in ctx:
                have = ", ".join(sorted(k for k in ctx if not k.startswith("_"))) or "nothing"
                raise MissingTensor(
                    f"loss {self.name!r} reads {theirs!r}, which this phase does not provide (it has: {have})"
                )
            out[mine] = ctx[theirs]
        return out

    def checked_compute(self, ctx: Mapping[str, Any]) -> torch.Tensor:
        """``compute`` on what the term reads from ``ctx``; a failure or a non-scalar result
        is a :class:`LossError` naming the term, its inputs and the phase."""
        from .schedule import describe

        tensors = self.gather(ctx)
        try:
            value = self.compute(**tensors)
        except (TypeError, ValueError, RuntimeError, IndexError) as e:
            if isinstance(e, LossError):
                raise
            raise LossError(f"{self._where(ctx)} cannot be computed from its inputs "
                            f"({self._shown(tensors)}): {type(e).__name__}: {e}") from e
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise LossError(f"{self._where(ctx)} returned {describe(value)}, not a scalar tensor "
                            f"(inputs: {self._shown(tensors)})")
        return value

    def _where(self, ctx: Mapping[str, Any]) -> str:
        phase = getattr(ctx, "phase", "")
        return f"loss {self.name!r} ({type(self).__name__})" + (f" in phase {phase!r}" if phase else "")

    def _shown(self, tensors: dict[str, Any]) -> str:
        from .schedule import describe

        return ", ".join(f"{mine} = {self.sources[mine]!r}: {describe(v)}" for mine, v in tensors.items())

    def forward(self, ctx: Mapping[str, Any], step: int = 0) -> torch.Tensor:
        return self.weight_at(step) * self.checked_compute(ctx)

    def evaluate(self, ctx: Mapping[str, Any], step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return LossSum([self]).evaluate(ctx, step)

    # -- composition -------------------------------------------------------------------
    def scaled(self, factor: float) -> LossTerm:
        new = copy.copy(self)
        new._modules = dict(self._modules)  # share sub-modules, not the config
        new.config = self.config.model_copy(update={"weight": self.config.weight * float(factor)})
        return new

    def __mul__(self, factor: float) -> LossTerm:
        if not isinstance(factor, (int, float)):
            return NotImplemented
        return self.scaled(factor)

    __rmul__ = __mul__

    def __add__(self, other: LossTerm | LossSum) -> LossSum:
        return LossSum([self]) + other

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, weight={self.config.weight:g})"


class LossSum(nn.Module):
    """A weighted sum of loss terms, evaluated term by term so each can be logged."""

    def __init__(self, terms: Iterable[LossTerm] = ()) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)
        names = [t.name for t in self.terms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(
                f"two loss terms are named {sorted(dup)}; give one a distinct `name` so both can be logged"
            )

    @property
    def reads(self) -> set[str]:
        return {src for t in self.terms for src in t.sources.values()}

    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def evaluate(self, ctx: Mapping[str, Any], step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total and each term's *weighted* value (terms with weight 0 are skipped)."""
        parts: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for term in self.terms:
            w = term.weight_at(step)
            if w == 0.0:
                continue
            value = w * term.checked_compute(ctx)
            parts[term.name] = value
            total = value if total is None else total + value
        if total is None:
            total = torch.zeros(())
        return total, parts

    def forward(self, ctx: Mapping[str, Any], step: int = 0) -> torch.Tensor:
        return self.evaluate(ctx, step)[0]

    def __add__(self, other: LossTerm | LossSum) -> LossSum:
        if isinstance(other, LossTerm):
            return LossSum([*self.terms, other])
        if isinstance(other, LossSum):
            return LossSum([*self.terms, *other.terms])
        return NotImplemented

    def __mul__(self, factor: float) -> LossSum:
        if not isinstance(factor, (int, float)):
            return NotImplemented
        return LossSum([t.scaled(factor) for t in self.terms])

    __rmul__ = __mul__

    def __iter__(self):  # type: ignore[override]
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def __repr__(self) -> str:
        return " + ".join(repr(t) for t in self.terms) or "LossSum([])"
