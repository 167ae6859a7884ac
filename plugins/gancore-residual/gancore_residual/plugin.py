"""gancore entry point of gancore-residual (``[project.entry-points.gancore] residual``).

Cheap to import: only ``gancore`` is imported here; each part is named by a lazy
``"module:Class"`` string and imported when a recipe uses it.
"""

from __future__ import annotations

from typing import Any

from gancore import hookimpl

GANCORE_PLUGIN_API = 1

_PARTS = [
    # name, target, kind, description
    ("residual.transformer", "gancore_residual.model:ResidualTransformer", "generator",
     "ResGAN image transformation network: x -> (x + r, r)"),
    ("residual.discriminator", "gancore_residual.model:ResidualDiscriminator", "discriminator",
     "ResGAN shared 3-class discriminator (no attribute / attribute / transformed) with a perceptual tap"),
    ("residual.sparsity", "gancore_residual.losses:ResidualSparsity", "loss", "alpha * ||r||_1 of a residual image"),
    ("residual.perceptual", "gancore_residual.losses:PerceptualL1", "loss",
     "beta * ||phi(x) - phi(x~)||_1 between two feature lists"),
    ("residual.dual", "gancore_residual.schedule:DualSchedule", "schedule",
     "ResGAN: D, then G0 (adds), then G1 (removes), with dual learning"),
    ("residual.edit", "gancore_residual.metric:EditMetric", "metric",
     "edit error vs true synthfaces counterfactuals, preservation, residual locality, oracle success"),
]


@hookimpl
def register_parts(register: Any) -> None:
    for name, target, kind, description in _PARTS:
        register(name, target, description, kind=kind)


@hookimpl
def register_benchmarks(register: Any) -> None:
    register("residual", paper="recipes/residual.toml", cpu="recipes/residual-cpu.toml",
             description="ResGAN, D + G0 + G1 phases with dual learning")


@hookimpl
def register_commands(register: Any) -> None:
    def configure(parser: Any) -> None:
        from .cli import configure_edit

        configure_edit(parser)

    def run(args: Any) -> int:
        from .cli import run_edit

        return run_edit(args)

    register("edit", "Add or remove an attribute (e.g. glasses) on faces in a photo with a trained ResGAN run",
             configure, run)
