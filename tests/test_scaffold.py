"""``gancore new-plugin``: the generated package's file set, name checks, and (slow) the
real thing: ``pip install -e`` it, see it in ``gancore plugins``, run its own tests.

The install goes into a throw-away virtual environment layered on this interpreter
(``venv --system-site-packages``: same Python, same gancore and torch), so the shared
site-packages is never modified, even if the test is killed half-way.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
import types
import venv
from pathlib import Path

import pytest

from gancore import cli
from gancore.plugins import PluginHost
from gancore.scaffold import ScaffoldError, check_name, scaffold

EXPECTED = {
    "pyproject.toml",
    "README.md",
    "gancore_demo/__init__.py",
    "gancore_demo/plugin.py",
    "gancore_demo/model.py",
    "recipes/demo-tiny.toml",
    "tests/test_demo.py",
}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_file_set_and_metadata(tmp_path: Path) -> None:
    path = scaffold("demo", tmp_path)
    assert path == tmp_path / "gancore-demo"
    assert _files(path) == EXPECTED
    assert [p.name for p in tmp_path.iterdir()] == ["gancore-demo"]  # no temporary folder left behind
    meta = tomllib.loads((path / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "setuptools.build_meta"
    assert meta["project"]["name"] == "gancore-demo"
    assert "gancore" in meta["project"]["dependencies"]
    assert meta["project"]["entry-points"]["gancore"] == {"demo": "gancore_demo.plugin"}
    recipe = tomllib.loads((path / "recipes/demo-tiny.toml").read_text())
    assert recipe["data"] == {"source": "blobs", "resolution": 16, "size": 256}
    assert recipe["recipe"]["plugins"] == ["demo"]
    for py in path.rglob("*.py"):
        compile(py.read_text(), str(py), "exec")
    plugin = (path / "gancore_demo/plugin.py").read_text()
    assert "GANCORE_PLUGIN_API = 1" in plugin and "import torch" not in plugin


def test_names_with_underscores_become_camel_case_classes(tmp_path: Path) -> None:
    path = scaffold("res_gan2", tmp_path / "new" / "dir")  # missing folders are made
    assert (path / "gancore_res_gan2" / "model.py").read_text().count("class ResGan2Generator(") == 1
    assert (path / "tests" / "test_res_gan2.py").exists()


@pytest.mark.parametrize("name", ["Demo", "my-gan", "1gan", "_gan", "", "gan!", "dé", "class", "gancore", "timm"])
def test_bad_names_are_refused_naming_the_value(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match=f"invalid plugin name {name!r}"):
        scaffold(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_name_accepts_identifiers() -> None:
    for name in ["stargan", "res_gan", "gan2", "a"]:
        assert check_name(name) == name


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = scaffold("demo", tmp_path)
    (path / "README.md").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists"):
        scaffold("demo", tmp_path)
    assert (path / "README.md").read_text() == "mine"
    with pytest.raises(ScaffoldError, match="is a file"):
        scaffold("other", path / "README.md")


def test_cli_new_plugin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["new-plugin", "demo", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"created {tmp_path / 'gancore-demo'}" in out and "pip install -e" in out
    assert cli.main(["new-plugin", "demo", "--dir", str(tmp_path)]) != 0
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["new-plugin", "Not-Valid", "--dir", str(tmp_path)]) != 0
    assert "invalid plugin name 'Not-Valid'" in capsys.readouterr().err


def test_generated_plugin_registers_and_validates_in_process(tmp_path: Path) -> None:
    """Without installing: load the generated plugin module through a fake entry point and
    validate its recipe against the registry it filled (every lazy name must import)."""
    from gancore.recipe import load_recipe

    path = scaffold("demo", tmp_path)
    sys.path.insert(0, str(path))
    try:
        class EntryPoint:
            name, value, dist = "demo", "gancore_demo.plugin", None

            def load(self) -> types.ModuleType:
                return importlib.import_module(self.value)

        host = PluginHost(load_only=["demo"], entry_points=[EntryPoint()])
        status = host.statuses["demo"]
        assert status.state == "loaded", status.error
        assert status.parts == {"generator": ["demo.generator"], "discriminator": ["demo.discriminator"],
                                "loss": ["demo.moments"], "schedule": ["demo.gan"]}
        for spec in host.registry.list(plugin="demo"):
            assert spec.load().kind == spec.kind and spec.summary()
        resolved = load_recipe(path / "recipes" / "demo-tiny.toml", registry=host.registry)
        g_terms = {t.name: t.config.weight for t in resolved.phase_losses["G"]}
        assert g_terms == {"g_adv": 1.0, "demo.moments": 0.5}  # the recipe's [[losses]] overrides the default
    finally:
        sys.path.remove(str(path))
        for mod in [m for m in sys.modules if m == "gancore_demo" or m.startswith("gancore_demo.")]:
            del sys.modules[mod]


@pytest.mark.slow
def test_installed_plugin_is_listed_and_its_own_tests_pass(tmp_path: Path) -> None:
    path = scaffold("demo", tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = str(env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANCORE_")}
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")

    def run(*args: str, cwd: Path = tmp_path, timeout: int = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-input", "-e", str(path))
    try:
        rows = {r["name"]: r for r in json.loads(run("-m", "gancore", "plugins", "--json").stdout)}
        demo = rows["demo"]
        assert (demo["state"], demo["distribution"], demo["version"]) == ("loaded", "gancore-demo", "0.1.0"), demo
        assert demo["parts"] == {"generator": ["demo.generator"], "discriminator": ["demo.discriminator"],
                                 "loss": ["demo.moments"], "schedule": ["demo.gan"]}
        assert rows["gancore"]["state"] == "loaded"
        tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=path, timeout=180)
        assert " passed" in tests.stdout and "failed" not in tests.stdout
    finally:
        subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "gancore-demo"], env=env, capture_output=True,
                       timeout=120)
    leftovers = [p.name for p in env_dir.rglob("*") if "gancore_demo" in p.name or "gancore-demo" in p.name]
    assert leftovers == [], f"pip uninstall left {leftovers}"
