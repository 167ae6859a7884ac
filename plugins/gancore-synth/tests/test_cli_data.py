"""`gancore data export|preview` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


def test_preview_is_labelled_and_tight(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from gancore.grid import grid_image
    from gancore_synth.preview import sweeps
    from gancore_synth.synthfaces import SynthFaces

    out = tmp_path / "p.png"
    assert cli.main(["data", "preview", "synthfaces", "--resolution", "16", "--out", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    dark = (img < 100).all(-1)
    assert dark[:, :16].sum() > 50  # the labels at the left of the rows
    # the same pictures, labelled, one sweep per row (the old layout): mostly white on the right
    src = SynthFaces(resolution=16)
    samples = src.load(list(range(26)))["image"]
    loose = grid_image([("samples", samples[:13]), ("", samples[13:])]
                       + [(name, images, captions) for name, captions, images in sweeps(src)], labels=True)
    assert img.shape[0] * img.shape[1] < 0.6 * loose.width * loose.height


def test_preview_sweeps_carry_factor_and_values() -> None:
    from gancore_synth.preview import sweeps
    from gancore_synth.synthfaces import SynthFaces

    rows = {name: (captions, images) for name, captions, images in
            sweeps(SynthFaces(resolution=16, size=4, supersample=1))}
    assert rows["yaw"][0][:2] == ["-90°", "-75°"] and rows["glasses"][0] == ["none", "eyegl.", "sungl."]
    assert rows["age"][0] == ["1", "5", "10", "15", "20", "30", "40", "50", "60", "70", "80"]
    captions, images = rows["glasses"]
    assert images.shape == (3, 3, 16, 16) and not torch.equal(images[0], images[2])  # the factor changes the face


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
