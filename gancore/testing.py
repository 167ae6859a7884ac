"""Test helpers for gancore and for plugin authors (also a pytest plugin).

Functions::

    smoke_train(recipe, tmp_path, steps=2, overrides=[...]) -> Path    # a tiny CPU run
    checkpoint_roundtrip(run_dir) -> TrainedRun                        # reload, compare weights
    tiny_data(n=16, resolution=16) -> DataSource                       # instant labelled images

Fixtures (available in any test once gancore is installed): ``gancore_tiny_data``,
``gancore_smoke`` (the ``smoke_train`` function bound to the test's ``tmp_path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["smoke_train", "checkpoint_roundtrip", "tiny_data", "TINY_OVERRIDES"]

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
