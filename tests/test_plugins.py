"""Plugin discovery, loading, disabling and failure reporting, with fake entry points and
in-memory plugin modules (nothing is installed; the pattern of pytest's
``test_plugin_preparse_prevents_setuptools_loading``)."""

from __future__ import annotations

import importlib.metadata as md
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gancore
from gancore import cli, plugins
from gancore.plugins import PLUGIN_API, PluginHost
from gancore.registry import UnknownPart

# ---------------------------------------------------------------------------------------
# fakes


class FakeDist:
    """What PluginHost reads of an ``importlib.metadata.Distribution``."""

    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """An ``importlib.metadata.EntryPoint`` look-alike whose ``load()`` returns ``module``
    (or raises ``error``) and records that it was called."""

    group = "gancore"

    def __init__(self, name: str, module: types.ModuleType | None = None, *, error: Exception | None = None,
                 dist: str | None = None, version: str = "1.0.0") -> None:
        self.name = name
        self.value = f"gancore_{name}.plugin"
        self.dist = FakeDist(dist or f"gancore-{name}", version)
        self._module, self._error = module, error
        self.loaded = False

    def load(self) -> types.ModuleType:
        self.loaded = True
        if self._error is not None:
            raise self._error
        return self._module


def make_plugin(name: str, parts: list[tuple[str, str]] | None = None, *, api: Any = PLUGIN_API,
                fail_after: int | None = None, commands: list[str] = (),
                benchmarks: list[tuple[Any, ...]] = ()) -> types.ModuleType:
    """An in-memory plugin module registering ``parts`` ([(name, kind)]) as lazy strings.

    ``fail_after=n`` makes ``register_parts`` raise after registering n parts;
    ``api=None`` leaves ``GANCORE_PLUGIN_API`` out.
    """
    module = types.ModuleType(f"gancore_{name}.plugin")
    if api is not None:
        module.GANCORE_PLUGIN_API = api
    parts = parts if parts is not None else [(f"{name}.generator", "generator")]

    @gancore.hookimpl
    def register_parts(register: Callable[..., None]) -> None:
        for i, (part, kind) in enumerate(parts):
            if fail_after is not None and i == fail_after:
                raise RuntimeError("boom while registering")
            register(part, "gancore.builtins.basic:BasicGenerator", f"{part} of {name}", kind=kind)

    module.register_parts = register_parts
    if commands:
        @gancore.hookimpl
        def register_commands(register: Callable[..., None]) -> None:
            for verb in commands:
                register(verb, f"the {verb} verb", lambda parser: None, lambda args: 0)

        module.register_commands = register_commands
    if benchmarks:
        @gancore.hookimpl
        def register_benchmarks(register: Callable[..., None]) -> None:
            for args in benchmarks:
                register(*args)

        module.register_benchmarks = register_benchmarks
    return module


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch: pytest.MonkeyPatch):
    """No plugin env vars, no process-wide host before or after each test."""
    monkeypatch.delenv("GANCORE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("GANCORE_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[FakeEntryPoint]]:
    """``installed(*eps)``: make these the only entry points the process-wide host sees."""

    def install(*eps: FakeEntryPoint) -> list[FakeEntryPoint]:
        def entry_points(group: str | None = None, **kw: Any) -> list[FakeEntryPoint]:
            assert group == "gancore"
            return list(eps)

        monkeypatch.setattr(md, "entry_points", entry_points)
        plugins.reset()
        return list(eps)

    return install


# ---------------------------------------------------------------------------------------
# discovery


def test_parts_are_attributed_to_their_plugin_with_versions() -> None:
    host = PluginHost(entry_points=[
        FakeEntryPoint("alpha", make_plugin("alpha", [("alpha.gen", "generator"), ("alpha.loss", "loss")]),
                       version="1.2.3"),
        FakeEntryPoint("beta", make_plugin("beta"), dist="gancore-beta-gan", version="0.4"),
    ])
    alpha, beta = host.statuses["alpha"], host.statuses["beta"]
    assert (alpha.state, alpha.distribution, alpha.version) == ("loaded", "gancore-alpha", "1.2.3")
    assert alpha.parts == {"generator": ["alpha.gen"], "loss": ["alpha.loss"]}
    assert alpha.module == "gancore_alpha.plugin"
    assert (beta.distribution, beta.version, beta.parts) == ("gancore-beta-gan", "0.4", {"generator": ["beta.generator"]})
    assert host.registry.get("alpha.gen").plugin == "alpha"
    assert host.registry.get("alpha.gen", "generator").description == "alpha.gen of alpha"
    assert [s.name for s in host.registry.list(plugin="alpha")] == ["alpha.gen", "alpha.loss"]
    # the built-ins come through the same hooks, as plugin "gancore"
    core = host.statuses["gancore"]
    assert core.state == "loaded" and core.distribution == "gancore" and core.version == gancore.__version__
    assert "l1" in core.parts["loss"] and host.registry.get("l1").plugin == "gancore"
    assert host.loaded() == ["gancore", "alpha", "beta"]


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_load() -> None:
    host = PluginHost(entry_points=[
        FakeEntryPoint("broken", error=ModuleNotFoundError("No module named 'not_installed_dep'")),
        FakeEntryPoint("good", make_plugin("good")),
    ])
    broken = host.statuses["broken"]
    assert broken.state == "failed"
    assert "import failed" in broken.error and "not_installed_dep" in broken.error
    assert broken.version == "1.0.0" and broken.distribution == "gancore-broken"
    assert host.statuses["good"].state == "loaded" and "good.generator" in host.registry
    assert [s.name for s in host.failed()] == ["broken"]


def test_disable_blocks_a_plugin_before_it_is_imported() -> None:
    blocked = FakeEntryPoint("x", make_plugin("x"))
    other = FakeEntryPoint("y", make_plugin("y"))
    host = PluginHost(disable=["x"], entry_points=[blocked, other])
    assert blocked.loaded is False  # never imported
    assert host.statuses["x"].state == "disabled" and host.statuses["x"].parts == {}
    assert "x.generator" not in host.registry
    assert other.loaded and host.statuses["y"].state == "loaded"


def test_load_only_loads_only_those() -> None:
    a, b, c = (FakeEntryPoint(n, make_plugin(n)) for n in "abc")
    host = PluginHost(load_only=["b"], entry_points=[a, b, c])
    assert (a.loaded, b.loaded, c.loaded) == (False, True, False)
    assert {n: s.state for n, s in host.statuses.items()} == {"gancore": "loaded", "a": "skipped", "b": "loaded",
                                                              "c": "skipped"}
    none = PluginHost(load_only=[], entry_points=[FakeEntryPoint("a", make_plugin("a"))])
    assert none.loaded() == ["gancore"]  # built-ins always load


@pytest.mark.parametrize("api", [2, None, "1"])
def test_a_plugin_for_another_api_is_refused_naming_the_versions(api: Any) -> None:
    host = PluginHost(entry_points=[FakeEntryPoint("old", make_plugin("old", api=api)),
                                    FakeEntryPoint("ok", make_plugin("ok"))])
    status = host.statuses["old"]
    assert status.state == "failed"
    assert f"plugin API {api!r}" in status.error and f"provides API {PLUGIN_API}" in status.error
    if api is None:
        assert f"GANCORE_PLUGIN_API = {PLUGIN_API}" in status.error
    assert "old.generator" not in host.registry and "ok.generator" in host.registry


def test_duplicate_part_names_are_an_error_naming_both_owners() -> None:
    host = PluginHost(entry_points=[
        FakeEntryPoint("one", make_plugin("one", [("shared.gen", "generator")])),
        FakeEntryPoint("two", make_plugin("two", [("two.ok", "loss"), ("shared.gen", "generator")])),
    ])
    assert host.statuses["one"].state == "loaded"
    two = host.statuses["two"]
    assert two.state == "failed"
    assert "'shared.gen'" in two.error and "'one'" in two.error and "'two'" in two.error
    assert host.registry.get("shared.gen").plugin == "one"
    assert "two.ok" not in host.registry  # the failed plugin's other parts are gone too


def test_clashing_with_a_builtin_name_names_gancore() -> None:
    host = PluginHost(entry_points=[FakeEntryPoint("mine", make_plugin("mine", [("l1", "loss")]))])
    assert host.statuses["mine"].state == "failed"
    assert "'gancore'" in host.statuses["mine"].error and "'mine'" in host.statuses["mine"].error
    assert host.registry.get("l1").plugin == "gancore"


def test_a_register_hook_that_raises_fails_the_plugin_and_removes_its_parts() -> None:
    host = PluginHost(entry_points=[
        FakeEntryPoint("half", make_plugin("half", [("half.a", "generator"), ("half.b", "loss")], fail_after=1,
                                           commands=["half-verb"])),
        FakeEntryPoint("whole", make_plugin("whole")),
    ])
    half = host.statuses["half"]
    assert half.state == "failed"
    assert "register_parts failed" in half.error and "boom while registering" in half.error
    assert half.parts == {} and "half.a" not in host.registry
    assert "half-verb" not in host.commands  # a failed plugin adds no CLI verb either
    assert "whole.generator" in host.registry


def test_a_bad_registration_fails_only_that_plugin() -> None:
    host = PluginHost(entry_points=[
        FakeEntryPoint("badkind", make_plugin("badkind", [("badkind.x", "widget")])),
        FakeEntryPoint("badname", make_plugin("badname", [("bad name", "loss")])),
        FakeEntryPoint("timmish", make_plugin("timmish", [("timm.resnet18", "encoder")])),
    ])
    assert "kind 'widget'" in host.statuses["badkind"].error and "generator" in host.statuses["badkind"].error
    assert "invalid part name 'bad name'" in host.statuses["badname"].error
    assert "reserved" in host.statuses["timmish"].error
    assert host.loaded() == ["gancore"]


def test_plugin_commands_are_attributed_and_duplicates_refused() -> None:
    host = PluginHost(entry_points=[FakeEntryPoint("a", make_plugin("a", commands=["go"])),
                                    FakeEntryPoint("b", make_plugin("b", commands=["go"]))])
    assert host.commands["go"].plugin == "a" and host.statuses["a"].commands == ["go"]
    assert host.statuses["b"].state == "failed"
    assert "'go'" in host.statuses["b"].error and "'a'" in host.statuses["b"].error


def test_plugin_benchmarks_are_attributed_listed_and_checked(capsys: pytest.CaptureFixture,
                                                             installed: Callable) -> None:
    host = PluginHost(entry_points=[
        FakeEntryPoint("a", make_plugin("a", benchmarks=[("a", "recipes/a.toml", "recipes/a-cpu.toml")])),
        FakeEntryPoint("b", make_plugin("b", benchmarks=[("a", "recipes/b.toml")])),
        FakeEntryPoint("c", make_plugin("c", benchmarks=[("c", "recipes/c.yaml")])),
        FakeEntryPoint("d", make_plugin("d", benchmarks=[("d one", "recipes/d.toml")])),
    ])
    bench = host.benchmarks["a"]
    assert (bench.plugin, bench.recipes()) == ("a", {"paper": "recipes/a.toml", "cpu": "recipes/a-cpu.toml"})
    assert host.statuses["a"].benchmarks == [{"name": "a", "paper": "recipes/a.toml", "cpu": "recipes/a-cpu.toml"}]
    assert host.statuses["b"].state == "failed"  # a duplicate names both owners, and b's parts go too
    assert "benchmark 'a' is registered twice: by 'a' and by 'b'" in host.statuses["b"].error
    assert "b.generator" not in host.registry
    assert "paper must be the path of a recipe file (*.toml), got 'recipes/c.yaml'" in host.statuses["c"].error
    assert "invalid benchmark name 'd one'" in host.statuses["d"].error
    assert sorted(host.benchmarks) == ["a"]

    installed(FakeEntryPoint("a", make_plugin("a", benchmarks=[("a", "recipes/a.toml", "recipes/a-cpu.toml")])))
    assert cli.main(["plugins"]) == 0
    assert "    benchmark: a (paper recipes/a.toml, cpu recipes/a-cpu.toml)" in capsys.readouterr().out


@pytest.mark.parametrize("dist,name", [("gancore-residual", "residual"), ("gancore-caae", "caae")])
def test_paper_plugins_register_benchmarks_whose_recipes_exist(dist: str, name: str) -> None:
    if not _installed(dist):
        pytest.skip(f"{dist} is not installed")
    bench = PluginHost().benchmarks[name]
    assert set(bench.recipes()) == {"paper", "cpu"}
    root = Path(__file__).resolve().parents[1]
    for path in bench.recipes().values():
        assert (root / path).is_file(), path


# ---------------------------------------------------------------------------------------
# unknown parts


def test_unknown_part_lists_close_names() -> None:
    host = PluginHost(entry_points=[FakeEntryPoint("alpha", make_plugin("alpha", [("alpha.generator", "generator")]))])
    with pytest.raises(UnknownPart) as e:
        host.registry.get("alpha.generater", "generator")
    assert "unknown generator part 'alpha.generater'" in str(e.value)
    assert "did you mean 'alpha.generator' (plugin 'alpha')" in str(e.value)


def test_unknown_part_of_a_known_but_missing_plugin_says_what_to_install() -> None:
    host = PluginHost(entry_points=[])
    with pytest.raises(UnknownPart, match="pip install gancore-residual"):
        host.registry.get("residual.x")
    with pytest.raises(UnknownPart, match=r"no loaded plugin provides parts named 'nosuch\.\*'; by convention "
                                          r"they come from the plugin 'nosuch': pip install gancore-nosuch"):
        host.registry.get("nosuch.part")


def test_unprefixed_part_names_its_home_plugin_only_when_that_plugin_is_missing() -> None:
    host = PluginHost(entry_points=[])  # built-ins only: they declare where synthfaces lives
    with pytest.raises(UnknownPart, match=r"'synthfaces' comes from the plugin 'synth': pip install gancore-synth"):
        host.registry.get("synthfaces", "data")
    with pytest.raises(UnknownPart) as e:
        host.registry.get("synthfacez", "data")  # not a declared name: no install hint, the known sources
    assert "pip install" not in str(e.value) and "known data parts: blobs" in str(e.value)
    synth = make_plugin("synth", [("synthfaces", "data")])
    host = PluginHost(entry_points=[FakeEntryPoint("synth", synth)])
    assert host.registry.get("synthfaces", "data").plugin == "synth"


def test_malformed_part_homes_fail_the_plugin() -> None:
    bad = make_plugin("bad")
    bad.GANCORE_PART_HOMES = {"x": 1}
    host = PluginHost(entry_points=[FakeEntryPoint("bad", bad)])
    assert host.statuses["bad"].state == "failed"
    assert "GANCORE_PART_HOMES must map names to plugin names" in host.statuses["bad"].error
    bad = make_plugin("bad")
    bad.GANCORE_COMMAND_HOMES = ["rotate"]
    host = PluginHost(entry_points=[FakeEntryPoint("bad", bad)])
    assert host.statuses["bad"].state == "failed"
    assert "GANCORE_COMMAND_HOMES must map names to plugin names (str → str), got ['rotate']" in host.statuses["bad"].error


# ---------------------------------------------------------------------------------------
# the process-wide host and its environment variables


def test_gancore_load_plugins_env(monkeypatch: pytest.MonkeyPatch, installed: Callable) -> None:
    a, b = installed(FakeEntryPoint("a", make_plugin("a")), FakeEntryPoint("b", make_plugin("b")))
    monkeypatch.setenv("GANCORE_LOAD_PLUGINS", "b, zzz")
    host = plugins.get_host()
    assert host is plugins.get_host()  # loaded once
    assert (a.loaded, b.loaded) == (False, True)
    assert host.statuses["a"].state == "skipped" and host.statuses["b"].state == "loaded"
    assert "b.generator" in gancore.registry()

    monkeypatch.setenv("GANCORE_LOAD_PLUGINS", "")
    plugins.reset()
    assert plugins.get_host().loaded() == ["gancore"]


def test_gancore_disable_plugins_env(monkeypatch: pytest.MonkeyPatch, installed: Callable) -> None:
    a, b, c = installed(*(FakeEntryPoint(n, make_plugin(n)) for n in "abc"))
    monkeypatch.setenv("GANCORE_DISABLE_PLUGINS", "a,c")
    host = plugins.get_host()
    assert (a.loaded, b.loaded, c.loaded) == (False, True, False)
    assert [n for n, s in host.statuses.items() if s.state == "disabled"] == ["a", "c"]


def test_disable_function_acts_before_import(installed: Callable) -> None:
    (a,) = installed(FakeEntryPoint("a", make_plugin("a")))
    plugins.disable("a")
    assert plugins.get_host().statuses["a"].state == "disabled" and not a.loaded


# ---------------------------------------------------------------------------------------
# the CLI


def _plugins_json(capsys: pytest.CaptureFixture, *argv: str) -> dict[str, dict[str, Any]]:
    assert cli.main([*argv, "plugins", "--json"]) == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


def test_cli_plugins_json_lists_the_builtin_plugin(capsys: pytest.CaptureFixture, installed: Callable) -> None:
    installed()
    rows = _plugins_json(capsys)
    core = rows["gancore"]
    assert core["state"] == "loaded" and core["distribution"] == "gancore" and core["version"] == gancore.__version__
    assert {"l1", "tv", "adversarial"} <= set(core["parts"]["loss"])
    assert core["parts"]["schedule"] == ["alternating"] and "blobs" in core["parts"]["data"]
    assert core["commands"] == [] and "synthfaces" not in core["parts"]["data"]  # gancore-synth provides them


def test_cli_plugins_reports_fakes_failures_and_disable(capsys: pytest.CaptureFixture, installed: Callable) -> None:
    installed(FakeEntryPoint("alpha", make_plugin("alpha"), version="2.0"),
              FakeEntryPoint("broken", error=ImportError("cannot import name 'x'")),
              FakeEntryPoint("gamma", make_plugin("gamma")))
    rows = _plugins_json(capsys, "--disable", "gamma")
    assert rows["alpha"]["state"] == "loaded" and rows["alpha"]["version"] == "2.0"
    assert rows["alpha"]["parts"] == {"generator": ["alpha.generator"]}
    assert rows["broken"]["state"] == "failed" and "cannot import name 'x'" in rows["broken"]["error"]
    assert rows["gamma"]["state"] == "disabled" and rows["gamma"]["parts"] == {}

    plugins.reset()
    assert cli.main(["--disable=alpha", "plugins"]) == 0  # the text listing, and the --disable=NAME form
    out = capsys.readouterr().out
    assert "alpha  [disabled]  gancore-alpha 2.0" in out
    assert "broken  [failed]" in out and "error: import failed: ImportError: cannot import name 'x'" in out


def test_cli_verb_of_a_missing_plugin_says_what_to_install(capsys: pytest.CaptureFixture,
                                                             installed: Callable) -> None:
    installed()  # built-ins only: they declare where the project's own verbs live
    assert cli.main(["rotate", "a.jpg", "--run", "r"]) == 2
    assert capsys.readouterr().err.strip() == (
        "gancore rotate: this command comes from the plugin 'drgan', which is not loaded; pip install gancore-drgan")
    assert cli.main(["--disable", "x", "data", "export", "synthfaces"]) == 2  # options before the verb are skipped
    assert "comes from the plugin 'synth', which is not loaded; pip install gancore-synth" in capsys.readouterr().err

    installed(FakeEntryPoint("drgan", make_plugin("drgan", commands=["rotate"])))
    assert cli.main(["--disable", "drgan", "rotate"]) == 2  # installed but disabled: says so, not "pip install"
    assert capsys.readouterr().err.strip() == ("gancore rotate: this command comes from the plugin 'drgan', which is "
                                               "not loaded; it is disabled (see `gancore plugins`)")
    plugins.reset()
    assert cli.main(["rotate"]) == 0  # loaded: the plugin's own verb runs
    with pytest.raises(SystemExit):  # a verb nobody declares stays argparse's "invalid choice"
        cli.main(["frobnicate"])
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed("gancore-residual"), reason="gancore-residual is not installed")
def test_cli_disable_residual(capsys: pytest.CaptureFixture) -> None:
    rows = _plugins_json(capsys)
    assert rows["residual"]["state"] == "loaded" and "residual.dual" in rows["residual"]["parts"]["schedule"]
    plugins.reset()
    rows = _plugins_json(capsys, "--disable", "residual")
    assert rows["residual"]["state"] == "disabled" and rows["residual"]["parts"] == {}
    assert rows["residual"]["distribution"] == "gancore-residual"
    assert "residual.dual" not in gancore.registry()


# ---------------------------------------------------------------------------------------
# mistakes plugin authors make


def test_misspelt_hook_name_fails_the_plugin() -> None:
    module = make_plugin("typo")

    @gancore.hookimpl
    def register_part(register: Callable[..., None]) -> None:  # not a gancore hook
        register("typo.x", "gancore.builtins.basic:BasicGenerator", kind="generator")

    module.register_part = register_part
    host = PluginHost(entry_points=[FakeEntryPoint("typo", module), FakeEntryPoint("ok", make_plugin("ok"))])
    status = host.statuses["typo"]
    assert status.state == "failed" and "register_part" in status.error
    assert "typo.generator" not in host.registry
    assert host.statuses["ok"].state == "loaded" and "ok.generator" in host.registry


def test_lazy_target_without_colon_is_refused() -> None:
    module = types.ModuleType("gancore_bad.plugin")
    module.GANCORE_PLUGIN_API = PLUGIN_API

    @gancore.hookimpl
    def register_parts(register: Callable[..., None]) -> None:
        register("bad.gen", "gancore.builtins.basic.BasicGenerator", kind="generator")

    module.register_parts = register_parts
    host = PluginHost(entry_points=[FakeEntryPoint("bad", module)])
    assert host.statuses["bad"].state == "failed"
    assert "must be 'package.module:Class'" in host.statuses["bad"].error


def test_builtin_plugin_cannot_be_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    from gancore.registry import RegistryError

    with pytest.raises(RegistryError, match="built-in plugin 'gancore' cannot be disabled"):
        PluginHost(entry_points=[], disable=["gancore"])
    plugins.reset()
    try:
        assert cli.main(["--disable", "gancore", "plugins"]) == 2
        assert "cannot be disabled" in capsys.readouterr().err
    finally:
        plugins.reset()
