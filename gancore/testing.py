"""Test helpers for gancore and for plugin authors (also a pytest plugin).

Functions::

    smoke_train(recipe, tmp_path, steps=2, overrides=[...]) -> Path    # a tiny CPU run
    trace_phases(recipe, tmp_path, steps=3, overrides=[...]) -> Trace  # who changed in which phase
    checkpoint_roundtrip(run_dir) -> TrainedRun                        # reload, compare weights
    tiny_data(n=16, resolution=16) -> DataSource                       # instant labelled images

Fixtures (available in any test once gancore is installed): ``gancore_tiny_data``,
``gancore_smoke`` (the ``smoke_train`` function bound to the test's ``tmp_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["smoke_train", "trace_phases", "Trace", "PhaseRecord", "checkpoint_roundtrip", "tiny_data",
           "TINY_OVERRIDES"]

#: what makes any recipe tiny: 2 steps, small batches, nothing written often.
TINY_OVERRIDES = [
    "train.batch_size=2",
    "train.log_every=1",
    "train.device='cpu'",
    "train.precision='no'",
    "output.sample_every=1000000",
    "output.checkpoint_every=1000000",
    "output.num_samples=2",
]


def smoke_train(recipe: str | Path | dict[str, Any], tmp_path: Path, steps: int = 2,
                overrides: list[str] | None = None) -> Path:
    """Train ``recipe`` for ``steps`` steps on CPU into ``tmp_path/run``; returns the run folder.

    Later ``overrides`` win, so a test can shrink resolution or widths further.
    """
    from .engine import train
    from .recipe import load_recipe

    run_dir = Path(tmp_path) / "run"
    resolved = load_recipe(recipe, [*TINY_OVERRIDES, f"train.steps={steps}", f"output.dir='{run_dir.as_posix()}'",
                                    *(overrides or [])])
    return train(resolved, progress=False)


@dataclass
class PhaseRecord:
    """What one phase of one step did: the roles it trains, the roles whose parameters it
    changed, whose running statistics (floating-point buffers) it changed, the roles that
    received gradient, and the roles holding gradient when it began."""

    step: int
    phase: str
    trains: tuple[str, ...]
    changed: set[str] = field(default_factory=set)
    stats: set[str] = field(default_factory=set)
    grads: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)


@dataclass
class Trace:
    """The phases a traced run executed, in order (see :func:`trace_phases`)."""

    run_dir: Path
    records: list[PhaseRecord]
    #: the run's networks (as they are after training), by role
    nets: dict[str, Any]

    def ran(self) -> list[tuple[int, str]]:
        return [(r.step, r.phase) for r in self.records]

    def check(self) -> None:
        """Every phase changed exactly the parameters of the roles it trains, gradient
        reached only those roles, and no phase began with gradients left over."""
        for r in self.records:
            where = f"step {r.step} phase {r.phase!r} (trains {', '.join(r.trains)})"
            if r.changed != set(r.trains):
                raise AssertionError(f"{where}: changed the weights of {sorted(r.changed) or 'no role'}")
            if r.grads != set(r.trains):
                raise AssertionError(f"{where}: gradient reached {sorted(r.grads) or 'no role'}")
            if r.stale:
                raise AssertionError(f"{where}: began with gradients in {sorted(r.stale)}")


def trace_phases(recipe: str | Path | dict[str, Any], tmp_path: Path, steps: int = 3,
                 overrides: list[str] | None = None) -> Trace:
    """Train ``recipe`` tiny (like :func:`smoke_train`) and record, for every phase that ran,
    which roles' parameters changed and which received gradient.  ``trace.check()`` asserts
    the schedule contract: each phase changes exactly the roles it trains."""
    import torch

    from .engine import train
    from .recipe import load_recipe

    run_dir = Path(tmp_path) / "run"
    resolved = load_recipe(recipe, [*TINY_OVERRIDES, f"train.steps={steps}", f"output.dir='{run_dir.as_posix()}'",
                                    *(overrides or [])])
    schedule = resolved.schedule
    records: list[PhaseRecord] = []
    nets: dict[str, Any] = {}
    snaps: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []

    def flat(tensors: Any) -> torch.Tensor:
        return torch.cat([t.detach().flatten().float().clone() for t in tensors] or [torch.zeros(0)])

    def snap() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {r: (flat(m.parameters()), flat(b for b in m.buffers() if b.dtype.is_floating_point))
                for r, m in nets.items()}

    def traced(phase: Any) -> Any:
        run = phase.run

        def wrapped(ctx: Any) -> None:
            if not nets:
                nets.update({r: ctx.nets.plain(r) for r in ctx.nets.roles()})
                for role, module in nets.items():
                    for p in module.parameters():
                        p.register_post_accumulate_grad_hook(lambda _p, role=role: records[-1].grads.add(role))
            if not records or (records[-1].step, records[-1].phase) != (ctx.step, phase.name):
                snaps.append(snap())
                stale = {r for r, m in nets.items() if any(p.grad is not None for p in m.parameters())}
                records.append(PhaseRecord(ctx.step, phase.name, tuple(phase.trains), stale=stale))
            run(ctx)

        phase.run = wrapped
        return phase

    original = schedule.phases
    schedule.phases = lambda: [traced(p) for p in original()]  # type: ignore[method-assign]
    try:
        train(resolved, progress=False)
    finally:
        schedule.phases = original  # type: ignore[method-assign]
    snaps.append(snap())
    for record, before, after in zip(records, snaps, snaps[1:]):
        record.changed = {r for r in before if not torch.equal(before[r][0], after[r][0])}
        record.stats = {r for r in before if not torch.equal(before[r][1], after[r][1])}
    return Trace(run_dir, records, nets)


def checkpoint_roundtrip(run_dir: Path) -> Any:
    """Reload a run and check that every tensor equals the saved one; returns the TrainedRun."""
    import torch
    from safetensors.torch import load_file

    from .runs import load_run

    run = load_run(run_dir)
    saved = load_file(str(run.checkpoint / "model.safetensors"))
    for role, net in run.nets.items():
        for key, value in net.state_dict().items():
            if not torch.equal(saved[f"{role}.{key}"], value):
                raise AssertionError(f"{role}.{key} differs after reloading {run.checkpoint}")
    return run


def tiny_data(n: int = 16, resolution: int = 16, **options: Any) -> Any:
    """The built-in ``blobs`` source: instant, labelled (color, square, identity)."""
    from .builtins.blobs import Blobs

    return Blobs(size=n, resolution=resolution, **options)


@pytest.fixture
def gancore_tiny_data() -> Any:
    return tiny_data()


@pytest.fixture
def gancore_smoke(tmp_path: Path) -> Any:
    def run(recipe: str | Path | dict[str, Any], steps: int = 2, overrides: list[str] | None = None) -> Path:
        return smoke_train(recipe, tmp_path, steps, overrides)

    return run
