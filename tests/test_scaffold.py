"""``gancore new-plugin``: the generated package's file set, name checks, and (slow) the
real thing: ``pip install -e`` it, see it in ``gancore plugins``, run its own tests.

The install goes into a throw-away folder (``pip install --target``) that this very
interpreter puts on its path, so it sees the same gancore and torch however Python was
installed, and the user's environment is never modified, even if the test is killed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from gancore import cli
from gancore.plugins import PluginHost
from gancore.scaffold import ScaffoldError, check_name, scaffold

ROOT = Path(__file__).resolve().parents[1]

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
    assert meta["project"]["dependencies"] == ["gancore>=0.1,<0.2", f"torch{_core_torch_floor()}"]
    assert meta["project"]["entry-points"]["gancore"] == {"demo": "gancore_demo.plugin"}
    recipe = tomllib.loads((path / "recipes/demo-tiny.toml").read_text())
    assert recipe["data"] == {"source": "blobs", "resolution": 16, "size": 256}
    assert recipe["recipe"]["plugins"] == ["demo"]
    for py in path.rglob("*.py"):
        compile(py.read_text(), str(py), "exec")
    plugin = (path / "gancore_demo/plugin.py").read_text()
    assert "GANCORE_PLUGIN_API = 1" in plugin and "import torch" not in plugin


def _core_torch_floor() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"torch\b", d)).removeprefix("torch")


def test_generated_dependencies_follow_the_core() -> None:
    """A plugin may run on this minor series of gancore, and needs the torch gancore needs."""
    import gancore
    from gancore.scaffold import _gancore_range

    major, minor = gancore.__version__.split(".")[:2]
    assert _gancore_range() == f">={major}.{minor},<{major}.{int(minor) + 1}"
    assert _core_torch_floor() == ">=2.4"
    template = (ROOT / "gancore/templates/plugin/pyproject.toml.tmpl").read_text()
    assert f'"torch{_core_torch_floor()}"' in template


def test_generated_readme_links_stay_inside_the_package(tmp_path: Path) -> None:
    """On a package index the README is shown alone: a relative link out of the package breaks."""
    path = scaffold("demo", tmp_path)
    text = (path / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s]+)", text) + re.findall(r"^\[[^]]+\]:\s*(\S+)", text, re.M):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        assert (path / target.split("#")[0]).resolve().is_relative_to(path.resolve()), target
        assert (path / target.split("#")[0]).exists(), target
    assert "../" not in text and "docs/" not in text


def test_templates_are_package_files_one_per_generated_file(tmp_path: Path) -> None:
    """The templates are files under gancore/templates/plugin (no inline strings), found
    through importlib.resources; every generated file comes from exactly one of them."""
    import gancore.scaffold as scaffold_module
    from gancore.scaffold import templates

    rels = [rel for rel, _ in templates()]
    assert rels == sorted(rels) and all(r.endswith(".tmpl") for r in rels)
    assert {r.removesuffix(".tmpl").replace("__pkg__", "gancore_demo").replace("__name__", "demo") for r in rels} == EXPECTED
    source = Path(scaffold_module.__file__).read_text()
    assert "class ${Camel}" not in source and "[build-system]" not in source
    # what is generated is exactly the template text, filled in
    path = scaffold("demo", tmp_path)
    model = dict(templates())["__pkg__/model.py.tmpl"].read_text(encoding="utf-8")
    assert (path / "gancore_demo/model.py").read_text() == model.replace("${Camel}", "Demo").replace(
        "${name}", "demo").replace("${pkg}", "gancore_demo").replace("$$", "$")


@pytest.mark.slow
def test_templates_ship_in_the_wheel(tmp_path: Path) -> None:
    """A non-editable install (a wheel from an index) has the templates too."""
    import zipfile

    from gancore.scaffold import templates

    problem = _can_build_wheels()
    if problem:
        pytest.fail(f"{problem}; install the test dependencies: pip install -e \".[test]\" (setuptools>=70.1)")
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the working tree
    shutil.copytree(ROOT / "gancore", src / "gancore", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("gancore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("gancore/templates/plugin/") for n in names if n.startswith("gancore/templates/plugin/")}
    assert shipped == {rel for rel, _ in templates()}


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


def _can_build_wheels() -> str | None:
    """None if this interpreter's setuptools builds wheels offline, else why not."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed"
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts >= (70, 1) or importlib.util.find_spec("wheel") is not None:
        return None
    return f"setuptools {version} needs the 'wheel' package to build wheels"


@pytest.mark.slow
def test_installed_plugin_is_listed_and_its_own_tests_pass(tmp_path: Path) -> None:
    """The real thing, whatever the Python installation (a venv, a venv seeing packages
    through a .pth file, no venv at all): pip installs the generated package, without
    network or build isolation, into a folder of its own (``--target``), and *this*
    interpreter runs with that folder on ``PYTHONPATH``.  So it sees exactly what the
    running interpreter sees (gancore, torch) plus the plugin, found through its
    entry point like any installed plugin, and the user's environment is never touched."""
    problem = _can_build_wheels()
    if problem:
        pytest.fail(f"{problem}; install the test dependencies: pip install -e \".[test]\" (setuptools>=70.1)")
    path = scaffold("demo", tmp_path / "src")
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANCORE_", "PIP_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def run(*args: str, cwd: Path = tmp_path, timeout: int = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    run("-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--no-input",
        "--target", str(site), str(path))
    assert [p.name for p in site.glob("gancore_demo-0.1.0.dist-info")], sorted(p.name for p in site.iterdir())
    rows = {r["name"]: r for r in json.loads(run("-m", "gancore", "plugins", "--json").stdout)}
    demo = rows["demo"]
    assert (demo["state"], demo["distribution"], demo["version"]) == ("loaded", "gancore-demo", "0.1.0"), demo
    assert demo["parts"] == {"generator": ["demo.generator"], "discriminator": ["demo.discriminator"],
                             "loss": ["demo.moments"], "schedule": ["demo.gan"]}
    assert rows["gancore"]["state"] == "loaded"
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=path)
    assert re.search(r"\b5 passed\b", tests.stdout) and "failed" not in tests.stdout, tests.stdout[-2000:]
    # the user's environment does not have it: neither this process nor a plain subprocess
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("gancore-demo")
    env.pop("PYTHONPATH")
    rows = {r["name"] for r in json.loads(run("-m", "gancore", "plugins", "--json").stdout)}
    assert "demo" not in rows
