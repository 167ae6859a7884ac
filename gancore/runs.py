"""Trained runs: load a run folder's networks, recipe and data for evaluation and
for applying the model (``gancore eval``, ``gancore edit`` …)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import (EMA_FILE, CheckpointError, latest_checkpoint, latest_readable_checkpoint, load_weights,
                         read_state)
from .data.base import DataSource
from .ema import averaged_roles
from .parts import DataInfo
from .recipe import Resolved, load_recipe

__all__ = ["TrainedRun", "load_run", "RunError"]


class RunError(ValueError):
    """A folder that is not a usable gancore run; the message says what is missing."""


@dataclass
class TrainedRun:
    dir: Path
    resolved: Resolved
    nets: dict[str, nn.Module]
    info: DataInfo
    step: int
    checkpoint: Path
    averaged: tuple[str, ...] = ()  # roles whose weights are train.ema's averages, not the trained ones
    averages_skipped: bool = False  # the checkpoint has averages, and ema=False loaded the trained weights instead
    _sources: dict[str, DataSource] = field(default_factory=dict)

    @property
    def recipe(self) -> Any:
        return self.resolved.recipe

    @property
    def schedule(self) -> Any:
        return self.resolved.schedule

    @property
    def schedule_name(self) -> str:
        return self.resolved.schedule_spec.name

    def data(self, split: str = "test") -> DataSource:
        """The run's data source on ``split`` (built once, then cached)."""
        if split not in self._sources:
            cfg = self.resolved.data_config.model_copy(update={"split": split})
            self._sources[split] = self.resolved.data_spec.build(cfg)
        return self._sources[split]

    def to(self, device: str | torch.device) -> TrainedRun:
        for m in self.nets.values():
            m.to(device)
        return self


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, *, schedule: str | None = None,
             hint: str = "", ema: bool = True) -> TrainedRun:
    """Load a run from its folder (latest checkpoint unless one is named).

    With ``schedule``, a run trained with another schedule is a :class:`RunError` (what
    plugin verbs such as ``gancore edit`` need); ``hint`` is appended to that message.
    A run trained with ``train.ema`` comes with the averaged weights of its averaged roles
    (``run.averaged`` names them); ``ema=False`` gives the trained weights themselves.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"no run folder at {run_dir}")
    notes: list[str] = []
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if ckpt is not None and not checkpoint:  # the newest one that can be read, saying so
        ckpt, notes = latest_readable_checkpoint(run_dir)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        if ckpt is None:
            raise RunError(f"none of the checkpoints of {run_dir} can be read: {'; '.join(notes)}")
    if ckpt is None:
        what = "a run folder without checkpoints (training has not saved one yet)" if (run_dir / "recipe.json").exists() \
            else "not a gancore run folder (no checkpoints/ and no recipe.json)"
        raise RunError(f"{run_dir} is {what}")
    try:
        state = read_state(ckpt)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    recipe = dict(state["recipe"])
    recipe["output"] = {**recipe.get("output", {}), "dir": str(run_dir)}
    resolved = load_recipe(recipe)
    resolved.source = str(ckpt / "state.json")
    if schedule is not None and resolved.schedule_spec.name != schedule:  # before building any network
        raise RunError(f"{run_dir} is a run of schedule {resolved.schedule_spec.name!r}, not {schedule!r}" +
                       (f"; {hint}" if hint else ""))
    i = state.get("info", {})
    info = DataInfo(resolution=i.get("resolution", resolved.data_config.resolution), channels=i.get("channels", 3),
                    label_classes=dict(i.get("label_classes", {})))
    nets = {role: spec.build(cfg, info=info) for role, (spec, cfg) in resolved.parts.items()}
    load_weights(ckpt, nets)
    averaged: tuple[str, ...] = ()
    has_averages = (ckpt / EMA_FILE).is_file()
    if ema and has_averages:
        averaged = tuple(averaged_roles(resolved))
        load_weights(ckpt, {r: nets[r] for r in averaged}, file=EMA_FILE)
    for m in nets.values():
        m.eval().requires_grad_(False)
    return TrainedRun(dir=run_dir, resolved=resolved, nets=nets, info=info, step=int(state["step"]), checkpoint=ckpt,
                      averaged=averaged, averages_skipped=not ema and has_averages)
