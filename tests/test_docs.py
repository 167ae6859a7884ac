"""The docs keep up with the code: every hook is documented with its exact signature
(datasette's ``test_plugin_hooks_are_documented``), every CLI verb and option is in the
CLI reference, and the Python examples in the plugin docs compile."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest

from gancore import hookspecs, plugins
from gancore.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _hookspecs() -> list[tuple[str, str]]:
    """(name, ``name(arg, ...)``) of every hookspec in gancore/hookspecs.py."""
    out = []
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, "gancore_spec"):
            out.append((name, f"{name}({', '.join(inspect.signature(fn).parameters)})"))
    return out


def test_there_are_hookspecs() -> None:
    assert ("register_parts", "register_parts(register)") in _hookspecs()


@pytest.mark.parametrize("name,signature", _hookspecs())
def test_every_hook_is_documented_with_its_signature(name: str, signature: str) -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert re.search(rf"^#+ .*`{re.escape(signature)}`", text, re.M), f"docs/plugins.md needs a heading `{signature}`"
    # the register-callback's own arguments, as the hookspec's docstring states them
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    call = re.search(r"``(register\(.*?\))``", doc)
    if call:  # the doc may show more (keyword-only) arguments than the docstring's summary
        assert call.group(1)[:-1] in text, f"docs/plugins.md should show the callback {call.group(1)}"


# ---------------------------------------------------------------------------------------
# the CLI


@pytest.fixture
def full_host(monkeypatch: pytest.MonkeyPatch):
    """The plugin host with every installed plugin (the suite's default loads built-ins only)."""
    monkeypatch.delenv("GANCORE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("GANCORE_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    yield plugins.get_host()
    plugins.reset()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def _documented_verbs(host: plugins.PluginHost) -> dict[str, argparse.ArgumentParser]:
    """Core verbs and those of plugins in this repository (plugins/<distribution>/);
    verbs of plugins installed from elsewhere are theirs to document."""
    verbs = _subcommands(build_parser(host))
    ours = {"gancore"} | {p.name for p in (ROOT / "plugins").glob("gancore-*")}
    for name, cmd in host.commands.items():
        if host.statuses[cmd.plugin].distribution not in ours:
            verbs.pop(name, None)
    return verbs


def _section(text: str, verb: str) -> str:
    """The part of docs/cli.md under the heading ``gancore VERB`` (up to the next such heading)."""
    m = re.search(rf"^## `gancore {re.escape(verb)}\b.*$", text, re.M)
    assert m, f"docs/cli.md needs a section '## `gancore {verb} ...`'"
    nxt = re.search(r"^## ", text[m.end():], re.M)
    return text[m.start(): m.end() + (nxt.start() if nxt else len(text))]


def test_every_cli_verb_and_option_is_in_docs_cli(full_host: plugins.PluginHost) -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    verbs = _documented_verbs(full_host)
    assert {"run", "validate", "schema", "eval", "plugins", "parts", "new-plugin", "data"} <= set(verbs)
    missing = []
    for verb, parser in verbs.items():
        section = _section(text, verb)
        missing += [f"gancore {verb} {o}" for o in _options(parser) if o not in section]
        for sub, subparser in _subcommands(parser).items():
            if f"gancore {verb} {sub}" not in section:
                missing.append(f"gancore {verb} {sub}")
            missing += [f"gancore {verb} {sub} {o}" for o in _options(subparser) if o not in section]
    for option in _options(build_parser(full_host)):  # global options
        if option != "--version" and option not in text:
            missing.append(f"gancore {option}")
    assert not missing, f"docs/cli.md does not mention: {', '.join(missing)}"


def test_every_cli_verb_is_in_the_readme(full_host: plugins.PluginHost) -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not written yet")
    text = readme.read_text(encoding="utf-8") + (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [v for v in _documented_verbs(full_host) if f"gancore {v}" not in text]
    assert not missing, f"neither README.md nor docs/cli.md mentions: {missing}"


# ---------------------------------------------------------------------------------------
# examples


@pytest.mark.parametrize("doc", ["plugins.md", "writing-a-plugin.md", "cli.md"])
def test_python_examples_compile(doc: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    for i, block in enumerate(blocks):
        compile(block, f"{doc} python block {i + 1}", "exec")


def test_plugin_docs_name_the_real_api() -> None:
    """Names the docs tell plugin authors to use exist."""
    import gancore
    import gancore.testing as testing

    text = (DOCS / "plugins.md").read_text(encoding="utf-8") + (DOCS / "writing-a-plugin.md").read_text(encoding="utf-8")
    assert f"GANCORE_PLUGIN_API = {gancore.PLUGIN_API}" in text
    for name in re.findall(r"gancore\.testing\.(\w+)", text):
        assert hasattr(testing, name), f"docs mention gancore.testing.{name}, which does not exist"
    for name in re.findall(r"`gancore\.(\w+)\b(?!\.)", text):
        assert hasattr(gancore, name) or (ROOT / "gancore" / f"{name}.py").exists(), f"gancore.{name} does not exist"
