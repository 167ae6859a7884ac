"""``gancore new-plugin NAME``: write a working plugin package to start from.

``scaffold("stargan", Path("plugins"))`` creates ``plugins/gancore-stargan/``::

    pyproject.toml                 distribution gancore-stargan, entry point gancore: stargan
    README.md
    gancore_stargan/__init__.py
    gancore_stargan/plugin.py      the entry point: GANCORE_PLUGIN_API, lazy register_parts
    gancore_stargan/model.py       generator, discriminator, loss term, schedule (the template)
    recipes/stargan-tiny.toml      trains on the built-in ``blobs`` source at 16 px in seconds
    tests/test_stargan.py          2-step CPU train, a hand-computed loss value, checkpoint reload

The package works as generated (``pip install -e plugins/gancore-stargan && pytest
plugins/gancore-stargan``); a plugin author then replaces the template parts with the
paper's.

The templates are package data, ``gancore/templates/plugin/``: one ``.tmpl`` file per
generated file, laid out as the package is, found with :mod:`importlib.resources` (so they
work from a wheel as from a source tree).  In a template's *path*, ``__pkg__`` stands for
the package (``gancore_stargan``) and ``__name__`` for the plugin name; its *text* is filled
with :class:`string.Template` (``${name}``, ``${pkg}``, ``${dist}``, ``${Camel}``,
``${gancore_range}``; a literal dollar sign is written ``$$``).
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["scaffold", "check_name", "templates", "ScaffoldError", "RESERVED_NAMES"]

#: where the templates live inside the gancore package.
TEMPLATES = ("templates", "plugin")

#: names a plugin cannot take: the built-in plugin, and the ``timm.*`` backbone namespace.
RESERVED_NAMES = {
    "gancore": "it is the name of gancore's built-in plugin",
    "timm": "part names under 'timm.' are reserved for timm backbones",
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(ValueError):
    """A plugin cannot be scaffolded as asked; the message says why and what to do."""


def check_name(name: str) -> str:
    """``name`` if it is a valid plugin name, else :class:`ScaffoldError` naming the bad value.

    A plugin name is a lowercase Python identifier (letters, digits, ``_``; starting with
    a letter): it is the entry-point name, the prefix of every part (``<name>.<part>``)
    and, as ``gancore_<name>``, the package name.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and '_', starting with a letter "
            f"(e.g. 'stargan' or 'res_gan'); it becomes the package gancore_<name> and the part prefix <name>."
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"invalid plugin name {name!r}: it is a Python keyword")
    if name in RESERVED_NAMES:
        raise ScaffoldError(f"invalid plugin name {name!r}: {RESERVED_NAMES[name]}")
    return name


def scaffold(name: str, dir: Path | str) -> Path:  # noqa: A002 - the CLI's --dir
    """Create ``dir/gancore-<name>/``, a working plugin package; returns its path.

    Raises :class:`ScaffoldError` for an invalid name or when the folder already exists
    (nothing is overwritten).  Files are written to a temporary folder first and moved
    into place at the end, so a failure never leaves a half-written package.
    """
    check_name(name)
    dir = Path(dir)
    target = dir / f"gancore-{name}"
    if target.exists():
        raise ScaffoldError(f"{target} already exists; choose another name or --dir, or remove it first")
    if dir.exists() and not dir.is_dir():
        raise ScaffoldError(f"--dir {dir} is a file, not a folder")
    dir.mkdir(parents=True, exist_ok=True)
    values = {
        "name": name,
        "pkg": f"gancore_{name}",
        "dist": f"gancore-{name}",
        "Camel": "".join(p.capitalize() for p in name.split("_")),
        "gancore_range": _gancore_range(),
    }
    files = {_output_path(rel, values): source.read_text(encoding="utf-8") for rel, source in templates()}
    tmp = Path(tempfile.mkdtemp(prefix=f".gancore-{name}-", dir=dir))
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(values), encoding="utf-8")
        os.replace(tmp, target)  # fails (leaving nothing) if target appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def templates() -> list[tuple[str, Traversable]]:
    """``(relative template path, file)`` for every ``.tmpl`` file, sorted by path."""
    root = resources.files("gancore").joinpath(*TEMPLATES)
    if not root.is_dir():
        raise ScaffoldError(f"gancore's plugin templates are missing ({'/'.join(('gancore', *TEMPLATES))}); "
                            "reinstall gancore")
    return sorted(_walk(root, ""), key=lambda item: item[0])


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for entry in folder.iterdir():
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            if entry.name != "__pycache__":
                yield from _walk(entry, rel + "/")
        elif entry.name.endswith(".tmpl"):
            yield rel, entry


def _output_path(rel: str, values: dict[str, str]) -> str:
    """``__pkg__/plugin.py.tmpl`` → ``gancore_stargan/plugin.py``."""
    return re.sub(r"__(pkg|name)__", lambda m: values[m.group(1)], rel.removesuffix(".tmpl"))


def _gancore_range() -> str:
    """The versions of gancore a new plugin may run on: this minor release series
    (``>=0.1,<0.2`` for gancore 0.1.x): the plugin API may change between minor releases."""
    from . import __version__

    major, minor = (int(p) for p in __version__.split(".")[:2])
    return f">={major}.{minor},<{major}.{minor + 1}"
