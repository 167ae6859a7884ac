"""CI runs what the README tells a user to run: ``.ci/run`` reads the test command from
README.md at run time, and that command installs every plugin whose tests the suite runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason=".ci/run is a bash script")


def _ci(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(cwd / ".ci" / "run"), *args], capture_output=True, text=True, timeout=60)


def _readme_setup_blocks(text: str) -> list[str]:
    setup = re.search(r"^## Setup\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert setup, "README.md needs a '## Setup' section"
    return re.findall(r"^```[a-z]*\n(.*?)^```", setup.group(1), re.M | re.S)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    blocks = [b for b in _readme_setup_blocks((ROOT / "README.md").read_text()) if re.search(r"\bpytest\b", b)]
    assert len(blocks) == 1, blocks
    proc = _ci("--print-command")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == blocks[0]


def test_the_test_command_installs_every_plugin_of_the_repository() -> None:
    """The suite collects plugins/*/tests; a plugin missing from the command fails in a fresh venv."""
    command = _ci("--print-command").stdout
    assert '-e ".[test]"' in command
    plugins = sorted(p.parent.name for p in (ROOT / "plugins").glob("gancore-*/pyproject.toml"))
    assert plugins
    missing = [p for p in plugins if f"-e plugins/{p}" not in command]
    assert not missing, f"README's test command does not install {missing}"


def test_ci_refuses_a_readme_without_a_unique_test_command(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text("# x\n\n## Setup\n\n```bash\npip install .\n```\n\n## Next\n\n```\npytest\n```\n")
    proc = _ci("--print-command", cwd=tmp_path)
    assert proc.returncode == 2 and "exactly one fenced block under '## Setup'" in proc.stderr
    (tmp_path / "README.md").write_text("# x\n\n## Setup\n\n```bash\npip install . && pytest -q\n```\n")
    proc = _ci("--print-command", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "pip install . && pytest -q\n")
