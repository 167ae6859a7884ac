"""Metrics: evaluation numbers for a trained run (``gancore eval RUN``).

A :class:`Metric` names the schedules it applies to and computes a flat dict of
numbers from a :class:`gancore.runs.TrainedRun` (networks in eval mode, the recipe,
the held-out data).  ``gancore eval`` runs every registered metric that applies to
the run's schedule and writes them all to ``eval.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .parts import Config, make_config

if TYPE_CHECKING:
    from .runs import TrainedRun

__all__ = ["Metric"]


class Metric:
    """Base of every metric."""

    Config: ClassVar[type[Config]] = Config
    kind: ClassVar[str] = "metric"
    #: names of the schedules whose runs this metric evaluates ("*" for all).
    schedules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = make_config(type(self), config, overrides)

    def applies_to(self, schedule_name: str) -> bool:
        return "*" in self.schedules or schedule_name in self.schedules

    def compute(self, run: TrainedRun) -> dict[str, Any]:
        """Numbers (and paths of any figures written under ``run.dir``)."""
        raise NotImplementedError
