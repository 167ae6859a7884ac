"""The registry: one flat table of parts, keyed by name, each owned by one plugin.

Names are explicit (``"residual.transformer"``); there are no scopes and no fallbacks.
A duplicate name is an error naming both owners, an unknown name is an error listing
close names and the distribution that would provide it: by convention, parts named
``X.*`` come from plugin ``X`` in distribution ``gancore-X`` (:func:`distribution_of`);
a name without a prefix is looked up in :attr:`Registry.homes`, which loaded plugins fill
(``GANCORE_PART_HOMES``, see :mod:`gancore.plugins`).  ``timm.<model>`` names are
resolved on demand to timm backbones (for encoder and discriminator roles).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PartSpec", "Registry", "RegistryError", "UnknownPart", "KINDS", "distribution_of"]

#: every kind of part the registry files.
KINDS = ("encoder", "generator", "discriminator", "network", "loss", "schedule", "data", "metric")

def distribution_of(plugin: str) -> str:
    """The distribution that provides plugin ``plugin`` (and parts named ``plugin.*``): ``gancore-<plugin>``."""
    return f"gancore-{plugin}"


def _install_hint(plugin: str, comes: str) -> str:
    dist = distribution_of(plugin)
    return (f"{comes} from the plugin {plugin!r}: pip install {dist} "
            f"(if it is installed, see `gancore plugins` for why it is not loaded)")


class RegistryError(ValueError):
    """A registration or look-up that cannot be honoured; the message says why."""


class UnknownPart(RegistryError):
    pass


@dataclass
class PartSpec:
    """One registered part.  ``target`` is the class, or a lazy ``"module:Class"`` string."""

    name: str
    kind: str
    target: Any
    plugin: str
    description: str = ""
    preset: dict[str, Any] = field(default_factory=dict)

    def load(self) -> type:
        """The part's class, importing it on first use."""
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            try:
                self.target = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise RegistryError(
                    f"part {self.name!r} of plugin {self.plugin!r} points at {self.target!r}, which cannot be imported: {e}"
                ) from e
        return self.target

    @property
    def config_cls(self) -> type:
        return self.load().Config

    def summary(self) -> str:
        if self.description:
            return self.description
        doc = (self.load().__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    def build(self, config: Any = None, **kwargs: Any) -> Any:
        """An instance built from ``config`` (a dict or the part's Config)."""
        cls = self.load()
        if isinstance(config, dict) or config is None:
            values = {**self.preset, **(config or {})}
            if self.kind == "loss" and values.get("name") is None and not cls.__dict__.get("default_name"):
                values["name"] = self.name  # so errors and logs use the registered name
            config = cls.Config(**values)
        elif self.kind == "loss" and getattr(config, "name", "") is None and not cls.__dict__.get("default_name"):
            config = config.model_copy(update={"name": self.name})
        return cls(config, **kwargs)


class Registry:
    """All parts of all loaded plugins."""

    def __init__(self) -> None:
        self._parts: dict[str, PartSpec] = {}
        #: part names without a plugin prefix → the plugin that provides them (for the
        #: "pip install" hint when that plugin is missing), declared by loaded plugins.
        self.homes: dict[str, str] = {}

    # -- filling --------------------------------------------------------------------------
    def add(self, spec: PartSpec) -> None:
        if spec.kind not in KINDS:
            raise RegistryError(
                f"plugin {spec.plugin!r} registered {spec.name!r} with kind {spec.kind!r}; kinds are {', '.join(KINDS)}"
            )
        if not spec.name or spec.name != spec.name.strip() or " " in spec.name:
            raise RegistryError(f"plugin {spec.plugin!r} registered an invalid part name {spec.name!r}")
        if spec.name.startswith("timm."):
            raise RegistryError(f"plugin {spec.plugin!r} registered {spec.name!r}: names under 'timm.' are reserved")
        old = self._parts.get(spec.name)
        if old is not None:
            raise RegistryError(
                f"part {spec.name!r} is registered twice: by plugin {old.plugin!r} and by plugin {spec.plugin!r}; "
                f"disable one of them (gancore --disable NAME)"
            )
        self._parts[spec.name] = spec

    def remove_plugin(self, plugin: str) -> None:
        self._parts = {k: v for k, v in self._parts.items() if v.plugin != plugin}

    # -- looking up -----------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self):
        return iter(self._parts.values())

    def list(self, kind: str | None = None, plugin: str | None = None) -> list[PartSpec]:
        return sorted(
            (s for s in self._parts.values() if (kind is None or s.kind == kind) and (plugin is None or s.plugin == plugin)),
            key=lambda s: s.name,
        )

    def get(self, name: str, kind: str | None = None) -> PartSpec:
        """The part called ``name`` (of ``kind``, if given), or an error that helps."""
        if name.startswith("timm.") and kind in (None, "encoder", "discriminator"):
            return self._timm(name, kind or "encoder")
        spec = self._parts.get(name)
        if spec is None:
            raise UnknownPart(self._unknown_message(name, kind))
        if kind is not None and spec.kind != kind:
            raise RegistryError(f"{name!r} is a {spec.kind} part (from plugin {spec.plugin!r}), but a {kind} is needed here")
        return spec

    def build(self, name: str, config: Any = None, *, kind: str | None = None, **kwargs: Any) -> Any:
        return self.get(name, kind).build(config, **kwargs)

    def _unknown_message(self, name: str, kind: str | None) -> str:
        pool = [s.name for s in self._parts.values() if kind is None or s.kind == kind]
        what = f"{kind} part" if kind else "part"
        msg = f"unknown {what} {name!r}"
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
        if close:
            owners = ", ".join(f"{c!r} (plugin {self._parts[c].plugin!r})" for c in close)
            msg += f"; did you mean {owners}?"
        prefix = name.split(".", 1)[0]
        home = self.homes.get(name)
        if "." in name and not any(p.startswith(prefix + ".") for p in self._parts):
            msg += f"; no loaded plugin provides parts named '{prefix}.*'; " + _install_hint(prefix, "by convention they come")
        elif home is not None and not any(s.plugin == home for s in self._parts.values()):
            msg += f"; {name!r} " + _install_hint(home, "comes")
        elif not close and pool:
            msg += f"; known {what}s: {', '.join(sorted(pool)[:12])}{' ...' if len(pool) > 12 else ''}"
        return msg

    def _timm(self, name: str, kind: str) -> PartSpec:
        model = name.split(".", 1)[1]
        target = "gancore.builtins.timm_parts:TimmEncoder" if kind == "encoder" else "gancore.builtins.timm_parts:TimmDiscriminator"
        return PartSpec(name=name, kind=kind, target=target, plugin="timm", preset={"model": model},
                        description=f"timm model {model!r} as a {kind} backbone")
