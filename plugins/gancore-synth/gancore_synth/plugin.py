"""gancore entry point of gancore-synth (``[project.entry-points.gancore] synth``).

Cheap to import: only ``gancore`` is imported here; the sources are named by lazy
``"module:Class"`` strings and the CLI module is imported when ``gancore data`` runs.
The part names have no ``synth.`` prefix (``synthfaces``, ``synthchairs``) so that every
recipe written before the move keeps working.
"""

from __future__ import annotations

from typing import Any

from gancore import hookimpl

GANCORE_PLUGIN_API = 1

_PARTS = [
    # name, target, kind, description
    ("synthfaces", "gancore_synth.synthfaces:SynthFaces", "data",
     "procedural 3D faces with ground-truth factors and true counterfactual renders"),
    ("synthchairs", "gancore_synth.synthchairs:SynthChairs", "data",
     "procedural chairs seen from 31 azimuths x 2 elevations, with ground-truth factors"),
]


@hookimpl
def register_parts(register: Any) -> None:
    for name, target, kind, description in _PARTS:
        register(name, target, description, kind=kind)


@hookimpl
def register_commands(register: Any) -> None:
    def configure(parser: Any) -> None:
        from .cli import configure_data

        configure_data(parser)

    def run(args: Any) -> int:
        from .cli import run_data

        return run_data(args)

    register("data", "Export a data source in a real dataset's layout, or preview it", configure, run)
