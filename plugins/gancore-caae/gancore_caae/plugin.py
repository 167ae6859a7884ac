"""Registers CAAE's parts, schedule, metric and the ``gancore age`` verb.

Kept cheap to import: only ``gancore`` here; the model code loads when a recipe uses it.
"""

from __future__ import annotations

from gancore import hookimpl

GANCORE_PLUGIN_API = 1

_PARTS = [
    ("caae.encoder", "gancore_caae.model:CAAEEncoder", "encoder", "CAAE encoder E: face -> z in (-1, 1)^50 (5x5 stride-2 convs + FC + tanh)"),
    ("caae.generator", "gancore_caae.model:CAAEGenerator", "generator", "CAAE generator G: [z, age label] -> face (FC + 5x5 stride-2 deconvs + tanh)"),
    ("caae.dz", "gancore_caae.model:CAAEDz", "discriminator", "CAAE D_z: z vs samples of the uniform prior (FC 64-32-16-1)"),
    ("caae.dimg", "gancore_caae.model:CAAEDimg", "discriminator", "CAAE D_img: face + tiled age label -> real/fake"),
    ("caae.aae", "gancore_caae.schedule:CAAESchedule", "schedule", "CAAE training: E+G step, D_z step, D_img step on one forward pass"),
    ("caae.age", "gancore_caae.metric:AgeMetric", "metric", "CAAE age transfer vs true renders, reconstruction, latent prior, interpolation grids"),
]


@hookimpl
def register_parts(register) -> None:  # noqa: ANN001 - callback documented in gancore.hookspecs
    for name, target, kind, description in _PARTS:
        register(name, target, description, kind=kind)


@hookimpl
def register_benchmarks(register) -> None:  # noqa: ANN001
    register("caae", paper="recipes/caae.toml", cpu="recipes/caae-cpu.toml",
             description="CAAE, E+G, D_z and D_img phases on one shared forward")


@hookimpl
def register_commands(register) -> None:  # noqa: ANN001
    from .cli import configure_age, run_age

    register("age", "Age progression/regression of the face in a photo with a trained CAAE run", configure_age, run_age)
