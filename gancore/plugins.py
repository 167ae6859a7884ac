"""Finding, loading and reporting plugins.

Plugins are modules named by entry points in the group ``gancore``.  Loading is lazy
(on first need), blockable *before* a plugin is imported, and fault tolerant: a plugin
that fails to import or to register is reported with its error and the rest keep working.

Environment:

- ``GANCORE_LOAD_PLUGINS=a,b`` loads only those entry points (empty: none but built-ins).
- ``GANCORE_DISABLE_PLUGINS=a,b`` blocks those (so does ``gancore --disable NAME``).

A plugin module may declare ``GANCORE_PART_HOMES = {"part": "plugin"}``: parts without a
plugin prefix that it names (in defaults, recipes, docs) but another plugin provides, so
that an unknown-part error can say which distribution to install (``gancore-<plugin>``);
and ``GANCORE_COMMAND_HOMES = {"verb": "plugin"}`` likewise for command-line verbs, so that
``gancore rotate`` without gancore-drgan says ``pip install gancore-drgan``.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .registry import KINDS, PartSpec, Registry, RegistryError

__all__ = ["PLUGIN_API", "PluginStatus", "PluginHost", "Command", "Benchmark", "get_host", "reset"]

#: the plugin API this gancore provides; plugins declare ``GANCORE_PLUGIN_API = 1``.
PLUGIN_API = 1
ENTRY_POINT_GROUP = "gancore"
#: built-in plugins, always loaded, through the same hooks as everyone else's.
BUILTIN_PLUGINS = {"gancore": "gancore.builtins"}


@dataclass
class PluginStatus:
    """What happened to one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    state: str = "loaded"  # loaded | failed | disabled | skipped
    error: str | None = None
    parts: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    benchmarks: list[dict[str, str | None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "state": self.state,
            "error": self.error,
            "parts": self.parts,
            "commands": self.commands,
            "benchmarks": self.benchmarks,
        }


@dataclass
class Command:
    """A CLI verb added by a plugin."""

    name: str
    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]
    plugin: str


@dataclass
class Benchmark:
    """A step-speed benchmark a plugin registered: its paper and CPU recipes."""

    name: str
    paper: str
    cpu: str | None
    description: str
    plugin: str

    def recipes(self) -> dict[str, str]:
        """Setting name → recipe path, as registered (relative to the gancore checkout)."""
        return {"paper": self.paper, **({"cpu": self.cpu} if self.cpu else {})}


def _split_env(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


class PluginHost:
    """A plugin manager, the registry it filled, and a status per plugin."""

    def __init__(self, load_only: Iterable[str] | None = None, disable: Iterable[str] = (),
                 entry_points: Iterable[md.EntryPoint] | None = None) -> None:
        self.pm = pluggy.PluginManager("gancore")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.statuses: dict[str, PluginStatus] = {}
        self.commands: dict[str, Command] = {}
        #: verbs that loaded plugins name but another plugin provides → that plugin.
        self.command_homes: dict[str, str] = {}
        self.benchmarks: dict[str, Benchmark] = {}
        load_only = None if load_only is None else set(load_only)
        for name in disable:
            if name in BUILTIN_PLUGINS:
                raise RegistryError(f"the built-in plugin {name!r} cannot be disabled")
            self.pm.set_blocked(name)
        for name, module in BUILTIN_PLUGINS.items():
            self._import(name, module, PluginStatus(name=name, module=module, distribution="gancore",
                                                     version=_version("gancore")))
        eps = md.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
        for ep in sorted(eps, key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            status = PluginStatus(name=ep.name, module=ep.value,
                                  distribution=dist.metadata["Name"] if dist else None,
                                  version=dist.version if dist else None)
            if ep.name in self.statuses:
                status.state, status.error = "failed", f"a plugin named {ep.name!r} is already loaded"
                self.statuses[f"{ep.name} ({status.distribution})"] = status
                continue
            self.statuses[ep.name] = status
            if self.pm.is_blocked(ep.name):
                status.state = "disabled"
                continue
            if load_only is not None and ep.name not in load_only:
                status.state = "skipped"
                continue
            self._import(ep.name, ep.load, status)
        self._collect()

    # -- loading ----------------------------------------------------------------------------
    def _import(self, name: str, loader: str | Callable[[], Any], status: PluginStatus) -> None:
        self.statuses[name] = status
        try:
            module = importlib.import_module(loader) if isinstance(loader, str) else loader()
        except Exception as e:  # a broken plugin must not take the others down
            status.state, status.error = "failed", f"import failed: {type(e).__name__}: {e}"
            return
        api = getattr(module, "GANCORE_PLUGIN_API", None)
        if name not in BUILTIN_PLUGINS and api != PLUGIN_API:
            status.state = "failed"
            status.error = (
                f"plugin targets gancore plugin API {api!r}, but this gancore ({_version('gancore')}) provides "
                f"API {PLUGIN_API}; " + ("declare GANCORE_PLUGIN_API = 1 in the plugin module" if api is None
                                         else "install a gancore release that supports it, or a matching plugin version")
            )
            return
        homes = {attr: getattr(module, attr, {}) for attr in ("GANCORE_PART_HOMES", "GANCORE_COMMAND_HOMES")}
        for attr, table in homes.items():
            if not (isinstance(table, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())):
                status.state = "failed"
                status.error = f"{attr} must map names to plugin names (str → str), got {table!r}"
                return
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()  # a misspelt hook name is an error, not a silent no-op
        except (ValueError, pluggy.PluginValidationError) as e:
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
            status.state, status.error = "failed", f"cannot register: {e}"
            return
        self.registry.homes.update(homes["GANCORE_PART_HOMES"])
        self.command_homes.update(homes["GANCORE_COMMAND_HOMES"])

    def _collect(self) -> None:
        """Call each plugin's hooks, attributing every registration to its plugin."""
        registrars = {"parts": self._part_registrar, "commands": self._command_registrar,
                      "benchmarks": self._benchmark_registrar}
        for what, registrar in registrars.items():
            for impl in getattr(self.pm.hook, f"register_{what}").get_hookimpls():
                self._call(impl, what, registrar)

    def _call(self, impl: pluggy.HookImpl, what: str, registrar: Callable[[PluginStatus], Callable[..., None]]) -> None:
        status = self.statuses[impl.plugin_name]
        if status.state != "loaded":
            return
        try:
            impl.function(register=registrar(status))
        except Exception as e:
            self.registry.remove_plugin(status.name)
            for table in (self.commands, self.benchmarks):
                for name in [n for n, c in table.items() if c.plugin == status.name]:
                    del table[name]
            status.state, status.error = "failed", f"register_{what} failed: {type(e).__name__}: {e}"
            status.parts, status.commands, status.benchmarks = {}, [], []

    def _part_registrar(self, status: PluginStatus) -> Callable[..., None]:
        def register(name: str, target: Any, description: str | None = None, *, kind: str | None = None) -> None:
            if isinstance(target, str) and ":" not in target:
                raise RegistryError(f"plugin {status.name!r}: lazy part {name!r} must be 'package.module:Class', "
                                    f"got {target!r}")
            if kind is None:
                if isinstance(target, str):
                    raise RegistryError(f"plugin {status.name!r}: lazy part {name!r} needs kind= (one of {', '.join(KINDS)})")
                kind = getattr(target, "kind", None)
            self.registry.add(PartSpec(name=name, kind=str(kind), target=target, plugin=status.name,
                                       description=description or ""))
            status.parts.setdefault(str(kind), []).append(name)

        return register

    def _command_registrar(self, status: PluginStatus) -> Callable[..., None]:
        def register(name: str, help: str, configure: Callable[[Any], None], run: Callable[[Any], int]) -> None:
            if name in self.commands:
                raise RegistryError(
                    f"command {name!r} is registered twice: by {self.commands[name].plugin!r} and by {status.name!r}"
                )
            self.commands[name] = Command(name, help, configure, run, status.name)
            status.commands.append(name)

        return register

    def _benchmark_registrar(self, status: PluginStatus) -> Callable[..., None]:
        def register(name: str, paper: str | os.PathLike, cpu: str | os.PathLike | None = None,
                     description: str | None = None) -> None:
            if not isinstance(name, str) or not name or any(c.isspace() for c in name):
                raise RegistryError(f"plugin {status.name!r}: invalid benchmark name {name!r} (non-empty, no spaces)")
            for setting, path in (("paper", paper), ("cpu", cpu)):
                if (path is not None or setting == "paper") and not (
                        isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".toml")):
                    raise RegistryError(f"plugin {status.name!r}: benchmark {name!r}: {setting} must be the path of a "
                                        f"recipe file (*.toml), got {path!r}")
            if name in self.benchmarks:
                raise RegistryError(f"benchmark {name!r} is registered twice: by {self.benchmarks[name].plugin!r} "
                                    f"and by {status.name!r}")
            bench = Benchmark(name, os.fspath(paper), None if cpu is None else os.fspath(cpu), description or "",
                              status.name)
            self.benchmarks[name] = bench
            status.benchmarks.append({"name": name, **bench.recipes()})

        return register

    # -- queries ----------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        return [s.name for s in self.statuses.values() if s.state == "loaded"]

    def failed(self) -> list[PluginStatus]:
        return [s for s in self.statuses.values() if s.state == "failed"]


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


_HOST: PluginHost | None = None
_EXTRA_DISABLED: list[str] = []


def disable(*names: str) -> None:
    """Block plugins for this process (what ``gancore --disable`` does); call before first use."""
    global _HOST
    _EXTRA_DISABLED.extend(names)
    _HOST = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _HOST
    if _HOST is None:
        load_only = _split_env(os.environ.get("GANCORE_LOAD_PLUGINS"))
        disabled = (_split_env(os.environ.get("GANCORE_DISABLE_PLUGINS")) or []) + _EXTRA_DISABLED
        _HOST = PluginHost(load_only=load_only, disable=disabled)
    return _HOST


def reset() -> None:
    """Forget the loaded plugins (tests; after installing a plugin in-process)."""
    global _HOST
    _HOST = None
    _EXTRA_DISABLED.clear()
