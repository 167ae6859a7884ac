"""The recipe lines docs/photos.md gives for training on real faces (CelebA, UTKFace) work
as written: each ``gancore run`` line trains (one tiny step here) on a folder laid out like
the real dataset (synthetic faces exported in its layout), each root check counts the faces,
and a wrong root stops at once with exit code 2 and the layout the reader expects."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gancore import cli

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "photos.md"

pytest.importorskip("gancore_synth", reason="the datasets are made with gancore-synth's export")


def _section() -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"^## Real photos\b.*?(?=^## )", text, re.M | re.S)
    assert m, "docs/photos.md needs a section '## Real photos ...'"
    return m.group(0)


def _commands(prefix: str) -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", _section(), re.M | re.S)
    return [line for b in blocks for line in b.splitlines() if line.startswith(prefix)]


def _runs() -> dict[str, list[str]]:
    """``{source: argv}`` of the doc's ``gancore run`` lines on real data, CPU recipes first."""
    out: dict[str, list[str]] = {}
    for line in _commands("gancore run "):
        argv = shlex.split(line, comments=True)[2:]
        source = re.search(r'data=\{source="(\w+)"', line)
        if source and "-cpu.toml" in argv[0]:
            out.setdefault(source.group(1), argv)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders in CelebA's and UTKFace's layouts, each with train and test faces."""
    from gancore_synth.render import set_render_backend

    set_render_backend("eager")  # a few tiny renders: not worth torch.compile's start-up
    try:
        base = tmp_path_factory.mktemp("real-layouts")
        for fmt in ("celeba", "utkface"):
            assert cli.main(["data", "export", "synthfaces", "--profile", fmt, "--format", fmt, "--n", "24",
                             "--resolution", "64", "--split", "all", "--out", str(base / fmt)]) == 0
    finally:
        set_render_backend(None)
    return {"celeba": base / "celeba", "utkface": base / "utkface" / "UTKFace"}


def _with_root(argv: list[str], root: Path) -> list[str]:
    return [re.sub(r'root="[^"]*"', f'root="{root.as_posix()}"', a) for a in argv]


def test_the_doc_gives_both_datasets() -> None:
    assert set(_runs()) == {"celeba", "utkface"}
    assert len(_commands("python -c ")) == 2  # a root check for each


@pytest.mark.slow
@pytest.mark.parametrize("source", ["celeba", "utkface"])
def test_recipe_line_trains_on_the_dataset_layout(source: str, exported: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    argv = _with_root(_runs()[source], exported[source])
    tiny = ["--set", "train.steps=1", "--set", "train.batch_size=2", "--set", "train.threads=1",
            "--set", "output.sample_every=1000000", "--set", f"output.dir='{(tmp_path / 'run').as_posix()}'"]
    assert cli.main(["run", *argv, *tiny, "--no-progress"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints").is_dir()
    recipe = (tmp_path / "run" / "recipe.json").read_text()
    assert f'"source": "{source}"' in recipe
    # a wrong root: stops before training, exit 2, with the layout the reader expects
    wrong = _with_root(_runs()[source], tmp_path / "missing")
    assert cli.main(["run", *wrong, *tiny[:-1], f"output.dir='{(tmp_path / 'run2').as_posix()}'", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data root folder not found" in err and "expected layout" in err
    assert not (tmp_path / "run2" / "checkpoints").exists()


@pytest.mark.parametrize("source", ["celeba", "utkface"])
def test_root_check_counts_the_faces(source: str, exported: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    (line,) = [c for c in _commands("python -c ") if f"'{source}'" in c]
    code = shlex.split(line)[2]
    exec(re.sub(r"root='[^']*'", f"root='{exported[source].as_posix()}'", code), {})
    out = capsys.readouterr().out
    assert re.match(r"\d+ training faces", out), out
