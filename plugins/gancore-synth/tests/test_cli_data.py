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


def test_plugin_is_listed_with_its_sources_and_verb(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gancore import plugins

    monkeypatch.delenv("GANCORE_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("GANCORE_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    try:
        assert cli.main(["plugins", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    finally:
        plugins.reset()
    synth = rows["synth"]
    assert synth["state"] == "loaded" and synth["distribution"] == "gancore-synth"
    assert synth["module"] == "gancore_synth.plugin"
    assert synth["parts"] == {"data": ["synthfaces", "synthchairs"]} and synth["commands"] == ["data"]
    assert "synthfaces" not in rows["gancore"]["parts"]["data"] and "data" not in rows["gancore"]["commands"]
