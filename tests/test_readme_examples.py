"""The README's examples run as written, in order, each on what the ones before it left.

The commands are read from README.md at test time (the Setup's training command, then every
``gancore`` line of the fenced bash blocks under "## Using it", then its Python block), so
the README cannot drift from what works.  Three things are shortened, and nothing else is
changed: every ``gancore run`` gets ``--set train.steps=N`` appended (2 steps, 3 for a
``--resume``, which must go past the run it continues), and the Python example's
``train.steps=100`` becomes 2; ``gancore eval`` is given options for fewer faces
(``QUICK_EVAL``).  The images a user brings (``photo.jpg``, ``a.jpg``,
``b.jpg``, ``chair.png``) are held-out synthetic renders that this test writes; the
face detector finds the faces in them, as it would in a photo.

Every command must exit 0, and the files the README says it writes must exist afterwards.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytest.importorskip("gancore_synth")
for _plugin in ("gancore_residual", "gancore_caae", "gancore_drgan", "gancore_tdgan"):
    pytest.importorskip(_plugin)


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```", section, re.M | re.S)


def _gancore_lines(block: str) -> list[list[str]]:
    """``gancore ...`` commands of a bash block, split as the shell would (comments dropped)."""
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        for i, word in enumerate(argv):  # "pip install ... && gancore run ..." keeps the gancore part
            if word == "gancore":
                commands.append(argv[i + 1 :])
                break
    return commands


def readme_commands() -> tuple[list[list[str]], str]:
    text = README.read_text(encoding="utf-8")
    setup = [c for b in _blocks(_section(text, "Setup"), "bash") for c in _gancore_lines(b)]
    assert setup and setup[0][:1] == ["run"], "the Setup's first command should install and `gancore run` a recipe"
    using = _section(text, "Using it")
    commands = setup[:1] + [c for b in _blocks(using, "bash") for c in _gancore_lines(b)]
    python = _blocks(using, "python")
    assert len(python) == 1, "README's 'Using it' should hold one Python example"
    return commands, python[0]


# `gancore eval` of a README run evaluates fewer faces and trains no oracle CNN (its own options)
QUICK_EVAL = ["--set", "residual.edit.num_faces=8", "--set", "residual.edit.oracle_steps=0"]


def _shortened(argv: list[str]) -> list[str]:
    if argv[:1] == ["eval"]:
        return [*argv, *QUICK_EVAL]
    if argv[:1] == ["run"]:
        return [*argv, "--set", f"train.steps={3 if '--resume' in argv else 2}"]
    return argv


def _save(image, path: Path) -> None:
    from PIL import Image

    arr = ((image.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    canvas = np.full((360, 480, 3), 120, np.uint8)  # a face on a plain background, like a snapshot
    h, w = arr.shape[:2]
    canvas[60 : 60 + h, 100 : 100 + w] = arr
    Image.fromarray(canvas).save(path)


def _user_images(folder: Path) -> None:
    from gancore_synth.synthchairs import SynthChairs
    from gancore_synth.synthfaces import SynthFaces

    faces = SynthFaces(profile="celeba", resolution=160, size=4, split="test").load([0, 2])["image"]
    _save(faces[0], folder / "photo.jpg")
    _save(faces[0], folder / "a.jpg")
    _save(faces[1], folder / "b.jpg")
    chair = SynthChairs(resolution=64, identities=4, split="test").load([0])["image"][0]
    _save(chair, folder / "chair.png")


# what each verb writes, where the README names it
def _expected_outputs(argv: list[str]) -> list[str]:
    out = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "--out"]
    if argv[:1] == ["eval"]:
        out += [f"{argv[1]}/eval.json", f"{argv[1]}/eval.md"]
    return out


def test_readme_commands_are_found() -> None:
    commands, python = readme_commands()
    verbs = [c[0] for c in commands]
    # the training of every model the later examples apply comes before its use
    for run_dir, recipe in [("runs/residual-cpu", "residual-cpu"), ("runs/caae-cpu", "caae-cpu"),
                            ("runs/drgan-cpu", "drgan-cpu"), ("runs/tdgan-chairs-cpu", "tdgan-chairs-cpu")]:
        uses = [i for i, c in enumerate(commands) if run_dir in c and c[0] != "run"]
        trains = [i for i, c in enumerate(commands) if c[0] == "run" and f"recipes/{recipe}.toml" in c]
        assert uses and trains and trains[0] < uses[0], f"README applies {run_dir} before training it"
    assert {"run", "eval", "edit", "age", "rotate", "verify", "rerender"} <= set(verbs)
    assert "gancore.train(" in python


@pytest.mark.slow
def test_readme_examples_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from gancore.cli import main

    commands, python = readme_commands()
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    _user_images(tmp_path)
    for argv in commands:
        argv = _shortened(argv)
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"`gancore {shlex.join(argv)}` exited {code}:\n{out.out[-2000:]}\n{out.err[-2000:]}"
        for path in _expected_outputs(argv):
            assert (tmp_path / path).is_file(), f"`gancore {shlex.join(argv)}` did not write {path}"
    # the runs the README trains hold their checkpoints; the resumed one went on past the first
    from gancore.checkpoint import latest_checkpoint, read_state

    for run in ("residual-cpu", "quick", "caae-cpu", "drgan-cpu", "tdgan-chairs-cpu"):
        assert latest_checkpoint(tmp_path / "runs" / run) is not None, run
    assert read_state(latest_checkpoint(tmp_path / "runs" / "residual-cpu"))["step"] == 3

    assert "train.steps=100" in python
    exec(compile(python.replace("train.steps=100", "train.steps=2"), "README.md", "exec"), {})
    assert latest_checkpoint(tmp_path / "runs" / "from-python") is not None
