"""The examples in docs/python-api.md run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python-api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_examples() -> None:
    blocks = _blocks()
    assert len(blocks) >= 3
    assert any("add_loss" in b and "residual.sparsity" in b and '"tv"' in b for b in blocks)


def test_evaluate_by_hand_example(capsys: pytest.CaptureFixture[str]) -> None:
    block = next(b for b in _blocks() if "both.evaluate" in b)
    exec(compile(block, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "'l1': 0.5" in out


def test_own_part_example() -> None:
    import torch

    block = next(b for b in _blocks() if "class Identity" in b)
    scope: dict = {}
    exec(compile(block, str(DOC), "exec"), scope)
    net = scope["Identity"](scale=2.0)
    x = torch.ones(1, 3, 4, 4)
    assert torch.equal(net(x), x)
    with pytest.raises(Exception, match="scale"):
        scope["Identity"](scale="big")


def test_mixed_plugin_losses_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gancore_residual")
    pytest.importorskip("gancore_synth")
    block = next(b for b in _blocks() if "add_loss" in b)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    block = block.replace('"train.steps=2"', '"train.steps=2", "data.resolution=32", "train.device=\'cpu\'"')
    exec(compile(block, str(DOC), "exec"), {})
    records = [json.loads(x) for x in (tmp_path / "runs" / "api-demo" / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    for phase in ("G0", "G1"):
        assert f"{phase}/residual_tv" in keys and f"{phase}/extra_sparsity" in keys
        assert f"{phase}/residual.sparsity" in keys  # the recipe's own term is still there
