"""The hooks a gancore plugin implements.  Only gancore's own code calls them.

Each hook receives a ``register`` callback and calls it once per thing it adds, so a
plugin never builds lists and gancore can check every registration as it happens.
A plugin module implements any subset of these with ``@gancore.hookimpl``.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("gancore")
hookimpl = pluggy.HookimplMarker("gancore")


@hookspec
def register_parts(register: Any) -> None:
    """Add parts: ``register(name, target, description=None, *, kind=None)``.

    ``target`` is a class (an Encoder, Generator, Discriminator, LossTerm, Schedule,
    DataSource or Metric subclass; its ``kind`` files it) or, to keep imports lazy, a
    ``"package.module:Class"`` string followed by ``kind="generator"``.
    Names are ``"<plugin>.<part>"``, e.g. ``"residual.transformer"``.
    """


@hookspec
def register_commands(register: Any) -> None:
    """Add CLI verbs: ``register(name, help, configure, run)``.

    ``configure(parser)`` adds arguments to an ``argparse`` sub-parser; ``run(args)``
    does the work and returns the exit code.
    """


@hookspec
def register_benchmarks(register: Any) -> None:
    """Add step-speed benchmarks: ``register(name, paper, cpu=None, description=None)``.

    ``paper`` and ``cpu`` are recipe files, the paper's setting and the CPU setting, which
    ``benchmarks/step_speed.py`` times; a relative path is read from the root of the
    gancore checkout (``recipes/x.toml``).
    """
