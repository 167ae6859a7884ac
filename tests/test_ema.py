"""train.ema: the averaged weights, against hand-computed values; saved, resumed, loaded, evaluated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gancore.ema import WeightAverage
from gancore.engine import train
from gancore.recipe import RecipeError, load_recipe
from gancore.runs import load_run
from safetensors.torch import load_file

@pytest.fixture
def recipe(basic_recipe: dict[str, Any]) -> dict[str, Any]:
    """The tiny alternating GAN, 4 steps, G averaged with decay 0.5, a checkpoint every 2 steps."""
    basic_recipe["recipe"]["name"] = "ema"
    basic_recipe["train"].update(steps=4, ema=0.5, ema_roles=["G"])
    basic_recipe["output"].update(checkpoint_every=2, keep_last=5)
    return basic_recipe


def test_average_moves_towards_the_live_weights_by_the_warmed_up_decay() -> None:
    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = WeightAverage({"G": live}, ["G"], decay=0.5)
    w0 = live[0].weight.detach().clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
        live[1].running_mean.fill_(3.0)
    avg.update(["G", "D"])  # roles without an average are ignored
    # first update: d = min(0.5, 1/10) = 0.1 -> avg = 0.1 * w0 + 0.9 * (w0 + 1)
    assert torch.allclose(avg.nets["G"][0].weight, w0 + 0.9)
    assert torch.equal(avg.nets["G"][1].running_mean, torch.full((2,), 3.0))  # buffers are copied
    with torch.no_grad():
        live[0].weight.add_(1.0)
    avg.update(["G"])
    # second: d = min(0.5, 2/11) = 2/11 -> avg = 2/11 * (w0 + 0.9) + 9/11 * (w0 + 2)
    assert torch.allclose(avg.nets["G"][0].weight, w0 + (2 / 11) * 0.9 + (9 / 11) * 2)
    # eleventh and later: the decay itself (0.5 < (1+n)/(10+n))
    for _ in range(20):
        avg.update(["G"])
    before = avg.nets["G"][0].weight.detach().clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
    avg.update(["G"])
    assert torch.allclose(avg.nets["G"][0].weight, 0.5 * before + 0.5 * live[0].weight)
    assert avg.state() == {"G": 23}
    assert not any(p.requires_grad for p in avg.nets["G"].parameters())


def _run(recipe: dict[str, Any], tmp_path: Path, *overrides: str) -> Path:
    return train(load_recipe(recipe, [f"output.dir='{(tmp_path / 'run').as_posix()}'", *overrides]), progress=False)


def test_a_run_saves_loads_and_resumes_the_averages(recipe: dict[str, Any], tmp_path: Path) -> None:
    run = _run(recipe, tmp_path, "train.steps=2")
    ckpt = run / "checkpoints" / "step_000002"
    avg, model = load_file(str(ckpt / "ema.safetensors")), load_file(str(ckpt / "model.safetensors"))
    assert avg and all(k.startswith("G.") for k in avg)  # only the listed role
    assert {k for k in model if k.startswith("G.")} == set(avg)
    moved = [k for k in avg if avg[k].is_floating_point() and not torch.equal(avg[k], model[k])]
    assert moved, "the average equals the trained weights"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["ema_updates"] == {"G": 2}  # one G step per iteration of 'alternating'
    # load_run: averaged weights by default, trained ones on request
    loaded, raw = load_run(run), load_run(run, ema=False)
    assert loaded.averaged == ("G",) and raw.averaged == ()
    for k, v in loaded.nets["G"].state_dict().items():
        assert torch.equal(v, avg[f"G.{k}"])
    for k, v in raw.nets["G"].state_dict().items():
        assert torch.equal(v, model[f"G.{k}"])
    for k, v in loaded.nets["D"].state_dict().items():  # not averaged: the trained weights
        assert torch.equal(v, model[f"D.{k}"])
    # resume to 4 steps equals training 4 steps at once (averages included)
    resumed = train(load_recipe(recipe, [f"output.dir='{run.as_posix()}'"]), resume=True, progress=False)
    at_once = _run(recipe, tmp_path / "b")
    a = load_file(str(resumed / "checkpoints" / "step_000004" / "ema.safetensors"))
    b = load_file(str(at_once / "checkpoints" / "step_000004" / "ema.safetensors"))
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert json.loads((resumed / "checkpoints" / "step_000004" / "state.json").read_text())["ema_updates"] == {"G": 4}


def test_default_roles_are_every_trained_role(recipe: dict[str, Any], tmp_path: Path) -> None:
    run = _run(recipe, tmp_path, "train.steps=2", "train.ema_roles=[]")
    roles = {k.split(".")[0] for k in load_file(str(run / "checkpoints" / "step_000002" / "ema.safetensors"))}
    assert roles == {"G", "D"}


def test_without_ema_no_average_is_written(basic_recipe: dict[str, Any], tmp_path: Path) -> None:
    basic_recipe["output"]["checkpoint_every"] = 2
    run = train(load_recipe(basic_recipe, [f"output.dir='{(tmp_path / 'plain').as_posix()}'"]), progress=False)
    assert not (run / "checkpoints" / "step_000002" / "ema.safetensors").exists()
    assert load_run(run).averaged == ()


@pytest.mark.parametrize("overrides, key, says", [
    (["train.ema_roles=['Q']"], "train.ema_roles", "no trained role 'Q' to average; trained roles: "),
    (["train.ema=1.0"], "train.ema", "less than 1"),
    (["train.ema_roles=['G']", "train.ema=0.999"], None, None),
])
def test_recipe_checks_ema(recipe: dict[str, Any], overrides: list[str], key: str | None, says: str | None) -> None:
    if key is None:
        load_recipe(recipe, overrides)
        return
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe, overrides)
    assert key in str(e.value) and says in str(e.value)


def test_ema_roles_without_a_decay_is_refused(basic_recipe: dict[str, Any]) -> None:
    basic_recipe["train"]["ema_roles"] = ["G"]
    with pytest.raises(RecipeError, match=r"train.ema_roles.*set train.ema"):
        load_recipe(basic_recipe)
