"""`gancore data export|preview` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gancore import cli
from gancore.data.readers import CelebA


def test_export_then_read_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "celeba"
    code = cli.main(["data", "export", "synthfaces", "--format", "celeba", "--n", "4", "--resolution", "32",
                     "--out", str(out)])
    assert code == 0
    assert "wrote 4 celeba samples" in capsys.readouterr().out
    reader = CelebA(root=str(out), resolution=32, split="all")
    assert len(reader) == 4
    assert reader.load([0])["image"].shape == (1, 3, 32, 32)


def test_export_refuses_bad_format_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "export", "synthfaces", "--format", "nope", "--n", "2", "--out", str(tmp_path / "a")]) == 2
    assert "unknown export format 'nope'" in capsys.readouterr().err
    assert cli.main(["data", "export", "blobs", "--profile", "x", "--format", "folder", "--n", "2",
                     "--out", str(tmp_path / "b")]) == 2
    assert "profile" in capsys.readouterr().err


def test_preview_writes_png(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "p.png"
    assert cli.main(["data", "preview", "synthfaces", "--resolution", "16", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.width >= 16 * 8 and img.height > 16 * 4  # samples plus the factor sweeps
