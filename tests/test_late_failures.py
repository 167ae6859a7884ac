"""What a recipe writer or plugin author meets, caught early and said clearly: a loss
override that would have been ignored, the failures `gancore run` would hit in its first
step (caught by `gancore validate`'s dry run), unreadable images, unreadable checkpoints,
and each schedule describing itself.

This module is also a small gancore plugin (``late.*`` parts), loaded by the ``late``
fixture, with parts written wrong on purpose.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gancore import cli, hookimpl, plugins
from gancore.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_weights
from gancore.engine import dry_run, train
from gancore.losses import LossTerm
from gancore.parts import Config, Generator
from gancore.recipe import load_recipe
from gancore.schedule import PartError

GANCORE_PLUGIN_API = 1
ROOT = Path(__file__).resolve().parents[1]


class Hinge(LossTerm):
    """relu(1 − logits), averaged: a third party's term reading what the built-in reads."""

    reads = ("logits",)

    def compute(self, logits):
        return torch.relu(1 - logits.float()).mean()


class NoLabelConfig(Config):
    z_dim: int = 8


class NoLabelGenerator(Generator):
    """Written as ``forward(self, z)``; ``alternating`` calls ``G(z, label)``."""

    Config = NoLabelConfig

    def __init__(self, config=None, *, info=None, **kw):
        super().__init__(config, info=info, **kw)
        r = self.info.resolution
        self.fc = nn.Linear(self.config.z_dim, 3 * r * r)

    def forward(self, z):
        r = self.info.resolution
        return torch.tanh(self.fc(z)).view(-1, 3, r, r)


@hookimpl
def register_parts(register) -> None:
    register("late.hinge", Hinge)
    register("late.nolabel", NoLabelGenerator)


@pytest.fixture
def late(monkeypatch):
    monkeypatch.setitem(plugins.BUILTIN_PLUGINS, "late", __name__)
    monkeypatch.setenv("GANCORE_LOAD_PLUGINS", "")
    plugins.reset()
    yield
    plugins.reset()


def _run(recipe: dict, out: Path, **kw: Any) -> Path:
    data = copy.deepcopy(recipe)
    data["output"]["dir"] = str(out)
    return train(load_recipe(data), progress=False, **kw)


# ---------------------------------------------------------------------------------------
# a [[losses]] entry never silently keeps the default term


def test_another_term_under_a_default_name_replaces_it(late, basic_recipe, tmp_path):
    basic_recipe["losses"] = [{"use": "late.hinge", "name": "d_real", "phase": "D"}]
    resolved = load_recipe(copy.deepcopy(basic_recipe))
    term = {t.name: t for t in resolved.phase_losses["D"]}["d_real"]
    assert type(term) is Hinge and term.sources == {"logits": "d_real"}  # reads what the default read
    logits = torch.tensor([0.3, -0.8, 2.5])
    assert float(term.compute(logits)) == pytest.approx((0.7 + 1.8 + 0) / 3)
    out = _run(basic_recipe, tmp_path / "hinge")
    assert "D/d_real" in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # the same class under its own name still changes the default's keys
    basic_recipe["losses"] = [{"use": "adversarial", "name": "d_real", "weight": 0.5}]
    term = {t.name: t for t in load_recipe(basic_recipe).phase_losses["D"]}["d_real"]
    assert term.config.weight == 0.5 and term.config.target == "real" and term.sources == {"logits": "d_real"}


# ---------------------------------------------------------------------------------------
# gancore validate: what run would fail on in its first step


def test_validate_dry_run_passes_a_good_recipe(basic_recipe, write_recipe, capsys):
    basic_recipe["data"] = {"source": "blobs", "resolution": 16}
    path = write_recipe(basic_recipe)
    assert cli.main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["train"]["steps"] == 2
    assert "dry run: one training step of every phase on 2 samples per stream (CPU): ok" in captured.err


def test_validate_catches_a_part_that_does_not_take_the_schedules_call(late, basic_recipe, write_recipe, capsys):
    basic_recipe["data"] = {"source": "blobs", "resolution": 16}
    basic_recipe["parts"]["G"] = {"use": "late.nolabel"}
    basic_recipe["schedule"] = {"use": "alternating"}
    path = write_recipe(basic_recipe)
    # without the dry run the recipe looks fine ...
    assert cli.main(["validate", str(path), "--no-dry-run"]) == 0
    capsys.readouterr()
    # ... with it, the call that run's first step would make fails, naming phase, role and part
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gancore validate: phase 'D' called role 'G' (NoLabelGenerator) as G(Tensor[2, 8] float32, None), " \
           "which failed: TypeError:" in err
    assert "Traceback" not in err


def test_validate_catches_a_resolution_a_part_cannot_take(basic_recipe, write_recipe, capsys):
    basic_recipe["data"] = {"source": "blobs", "resolution": 24}
    assert cli.main(["validate", str(write_recipe(basic_recipe))]) == 2
    assert ("gancore validate: parts.G (basic.generator) cannot be built for this data (24 px, 3 channels): "
            "basic.generator needs a resolution of 4·2^k, got 24") in capsys.readouterr().err


def test_validate_catches_loss_inputs_that_do_not_fit(basic_recipe, write_recipe, capsys):
    basic_recipe["data"] = {"source": "blobs", "resolution": 16}
    # an L1 between D's logits [B] and the fake images [B, 3, 16, 16]: the shapes do not broadcast
    basic_recipe["losses"] = [{"use": "l1", "phase": "G", "inputs": {"pred": "g_fake", "target": "fake"}}]
    assert cli.main(["validate", str(write_recipe(basic_recipe))]) == 2
    err = capsys.readouterr().err
    assert ("loss 'l1' (L1) in phase 'G' cannot be computed from its inputs (pred = 'g_fake': Tensor[2] float32, "
            "target = 'fake': Tensor[2, 3, 16, 16] float32): RuntimeError:") in err


def test_dry_run_leaves_nothing_behind(basic_recipe, tmp_path):
    basic_recipe["data"] = {"source": "blobs", "resolution": 16}
    basic_recipe["output"]["dir"] = str(tmp_path / "never")
    assert dry_run(load_recipe(basic_recipe)) > 0
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------
# unreadable images are counted where a user looks


def test_skipped_images_are_counted_in_the_run_folder(basic_recipe, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "faces"
    (root / "images").mkdir(parents=True)
    rows = ["path,smile,split"]
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 80, 120)).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,{i % 2},train")
    (root / "images" / "3.png").write_bytes(b"\x89PNG not really")  # unreadable
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    basic_recipe["data"] = {"source": "folder", "root": str(root), "resolution": 16, "test_fraction": 0.0}
    basic_recipe["train"].update(steps=3, batch_size=4)
    out = _run(basic_recipe, tmp_path / "run")
    err = capsys.readouterr().err
    assert "data: skipped 1 of 8 files as unreadable" in err
    report = json.loads((out / "data_report.json").read_text())
    assert report["skipped"] == 1 and report["files"] == 8 and report["split"] == "train"
    assert report["examples"][next(iter(report["skipped_by_reason"]))] == [str(root / "images" / "3.png")]


# ---------------------------------------------------------------------------------------
# checkpoints that cannot be read


def test_resume_falls_back_to_the_newest_readable_checkpoint(basic_recipe, tmp_path, capsys):
    basic_recipe["train"]["steps"] = 3
    basic_recipe["output"]["checkpoint_every"] = 1
    out = _run(basic_recipe, tmp_path / "run")
    newest = latest_checkpoint(out)
    (newest / "model.safetensors").write_bytes(b"\xff" * 64)  # a corrupt header
    with pytest.raises(CheckpointError, match=rf"{newest / 'model.safetensors'} cannot be read"):
        load_weights(newest, {})
    capsys.readouterr()
    _run(basic_recipe, out, resume=True)
    err = capsys.readouterr().err
    assert f"note: skipping unreadable checkpoint step_000003: {newest / 'model.safetensors'} cannot be read" in err
    assert "resuming" in err and "from step_000002" in err
    assert [p.name for p in list_checkpoints(out)][-1] == "step_000003"  # step 3 trained again and saved
    from gancore.runs import load_run

    assert load_run(out).step == 3


def test_weights_that_do_not_fit_name_every_tensor(basic_recipe, tmp_path):
    out = _run(basic_recipe, tmp_path / "run")
    wider = copy.deepcopy(basic_recipe)
    wider["parts"]["G"]["width"] = 8
    resolved = load_recipe(wider)
    spec, cfg = resolved.parts["G"]
    nets = {"G": spec.build(cfg, info=resolved.data_spec.build(resolved.data_config).info())}
    with pytest.raises(CheckpointError) as info:
        load_weights(latest_checkpoint(out), nets)
    text = str(info.value)
    assert "weights of role 'G'" in text and "(BasicGenerator):" in text
    assert "shape of fc.weight: checkpoint [128, 8], network [256, 8]" in text  # names and both shapes
    assert "shape of net.2.weight: checkpoint [8, 4, 4, 4], network [16, 8, 4, 4]" in text


# ---------------------------------------------------------------------------------------
# schedules describe themselves


def test_parts_details_describes_a_schedule(capsys):
    assert cli.main(["parts", "--kind", "schedule", "--details", "alternating"]) == 0
    out = capsys.readouterr().out
    assert "G (generator): G(z [B, z_dim], label [B] or None)" in out
    assert "D: trains D" in out and "provides: d_real, d_fake" in out
    assert "term g_adv: Adversarial(logits ← g_fake; target real, mode nonsaturating, player generator)" in out


def test_docs_schedules_page_is_current():
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GANCORE_")}}
    proc = subprocess.run([sys.executable, "-m", "gancore.describe"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (ROOT / "docs" / "schedules.md").read_text() == proc.stdout, \
        "docs/schedules.md is out of date: python -m gancore.describe > docs/schedules.md"


def test_part_errors_are_value_errors():
    assert issubclass(PartError, ValueError)
