"""Shared fixtures for the core's tests: tiny recipe dicts, a TOML writer, a built-ins-only
plugin host.  Everything is sized for 2 shared CPU cores: 16 px blobs, widths 4–8, 2–4 steps."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from gancore import plugins

#: a plain conditional-free GAN on 16 px blobs: the smallest complete recipe.
BASIC: dict[str, Any] = {
    "recipe": {"name": "tiny"},
    "data": {"source": "blobs", "resolution": 16, "size": 64},
    "parts": {
        "G": {"use": "basic.generator", "width": 4, "z_dim": 8},
        "D": {"use": "basic.discriminator", "width": 4},
    },
    "schedule": {"use": "alternating"},
    "optim": {"lr": 2e-4},
    "train": {"steps": 2, "batch_size": 4, "log_every": 1, "device": "cpu", "threads": 1},
    "output": {"sample_every": 1_000_000, "checkpoint_every": 1_000_000, "num_samples": 4},
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for recipe dicts (tables, arrays of tables, inline values)."""
    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not _is_table(v) and not _is_table_list(v)}
        if prefix and (scalars or not d):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            name = f"{prefix}.{k}" if prefix else k
            if _is_table(v):
                table(name, v)
            elif _is_table_list(v):
                for item in v:
                    lines.append(f"[[{name}]]")
                    for kk, vv in item.items():
                        lines.append(f"{kk} = {_toml_value(vv)}")

    table("", data)
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


@pytest.fixture
def basic_recipe() -> dict[str, Any]:
    """A fresh copy of the tiny alternating-GAN recipe dict (edit it freely)."""
    return copy.deepcopy(BASIC)


@pytest.fixture
def write_recipe(tmp_path: Path):
    """``write_recipe(data, name="recipe.toml") -> Path``: the dict written as a TOML file."""

    def write(data: dict[str, Any], name: str = "recipe.toml") -> Path:
        path = tmp_path / name
        path.write_text(dump_toml(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def builtins_only(monkeypatch: pytest.MonkeyPatch):
    """Load only gancore's built-ins (no installed plugin), fresh for every test.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("builtins_only")``."""
    monkeypatch.setenv("GANCORE_LOAD_PLUGINS", "")
    monkeypatch.delenv("GANCORE_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def builtin_registry():
    """A registry of the built-ins alone, independent of the process-wide host."""
    return plugins.PluginHost(load_only=[]).registry
