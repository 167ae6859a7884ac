"""Tests of gancore-tdgan through the engine: the four steps each change only their own
network, forwards are shared, tag dropping keeps the requested fraction, two-step trains of
both CPU recipes, checkpoint reload, the metric on a trained run, and ``gancore rerender`` on
a synthetic chair and face, an unknown tag, an image without a face and a run of another
schedule.  Tiny (32 px, widths 4), CPU, well under a minute."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]  # the gancore checkout
RECIPES = {name: ROOT / "recipes" / f"tdgan-{name}.toml" for name in ("chairs", "faces", "chairs-cpu", "faces-cpu")}

TAGS = {"identity": 8, "view": 4}
TINY = {
    "recipe": {"name": "tdgan-tiny", "plugins": ["tdgan"]},
    "data": {"source": "synthchairs", "resolution": 32, "identities": 6, "partial_labels": ["identity", "view"]},
    "parts": {
        "R": {"use": "tdgan.disentangler", "tags": TAGS, "width": 4, "fc": 16},
        "g": {"use": "tdgan.tagnet", "tags": TAGS},
        "G": {"use": "tdgan.generator", "tags": TAGS, "width": 4},
        "D": {"use": "tdgan.discriminator", "width": 4, "fc": 8},
    },
    "schedule": {"use": "tdgan.alternating", "tags": ["identity", "view"], "where": {"elevation": 0}, "sample_values": 3},
}
FACE_TAGS = {"identity": 8, "pose": 4, "light": 4, "expression": 4}
TINY_FACES = {
    "recipe": {"name": "tdgan-tiny-faces", "plugins": ["tdgan"]},
    "data": {"source": "synthfaces", "profile": "multipie", "resolution": 32, "identities": 5, "size": 64},
    "parts": {
        "R": {"use": "tdgan.disentangler", "tags": FACE_TAGS, "width": 4, "fc": 16},
        "g": {"use": "tdgan.tagnet", "tags": FACE_TAGS},
        "G": {"use": "tdgan.generator", "tags": FACE_TAGS, "width": 4},
        "D": {"use": "tdgan.discriminator", "width": 4, "fc": 8},
    },
    "schedule": {"use": "tdgan.alternating", "tags": ["identity", "pose", "light", "expression"]},
}


def semi(recipe: dict, fraction: float = 0.5) -> dict:
    r = copy.deepcopy(recipe)
    r["data"]["label_fraction"] = fraction
    r["schedule"]["semi"] = True
    return r


@pytest.fixture(scope="module", autouse=True)
def eager_renders():
    """Tiny test renders are faster eagerly than through the renderer's one-off torch.compile."""
    from gancore_synth.render import set_render_backend

    set_render_backend("eager")
    yield
    set_render_backend(None)


# ---------------------------------------------------------------------------------------------
# the alternating schedule through the engine


@pytest.mark.parametrize("mode", ["tagged", "semi", "recon"])
def test_each_step_changes_only_its_own_network(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gancore.testing import trace_phases
    from gancore_tdgan import model

    calls = {"R": 0, "g": 0, "G": 0, "D": 0}
    for role, cls in (("R", model.TDGANDisentangler), ("g", model.TagMapping), ("G", model.TDGANGenerator),
                      ("D", model.TDGANDiscriminator)):
        forward = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, *a, _f=forward, _r=role, **k: (
            calls.__setitem__(_r, calls[_r] + 1), _f(self, *a, **k))[1])
    semi_supervised = mode == "semi"
    recipe = semi(TINY) if semi_supervised else TINY
    overrides = {"tagged": [], "semi": ["train.stream_batch_size={untagged = 3}"],
                 "recon": ["schedule.lambda_recon=1.0", "schedule.lambda_recon_R=0.01"]}[mode]
    t = trace_phases(recipe, tmp_path, steps=2, overrides=overrides)
    t.check()  # every step changed exactly the weights of the network it trains, gradient reached only it
    assert t.ran() == [(s, p) for s in (0, 1) for p in ("g", "G", "R", "D")]
    # per iteration: R twice (R(x) for the g, G and R steps; again, without a graph, for D's),
    # g twice (again after g stepped), G five times (G(g(C)) in g's step; G(g(C)) again and
    # G(R(x)) in G's; G(R(x)) again after G stepped, in R's; once for D), D four times (G's and
    # R's steps, real and fake in D's).  The untagged stream adds R(x_u) (and again for D),
    # G(R(x_u)) in G's, R's and D's steps, D(G(R(x_u))) in G's and R's (D's step judges both
    # streams in one call each).  Then the final sample grid: R once, G once plus once per
    # swept value (3).  The tagged reconstruction reads G(R(x)), already made for f3: no forward more.
    per_iter = {"R": 4, "g": 2, "G": 8, "D": 6} if semi_supervised else {"R": 2, "g": 2, "G": 5, "D": 4}
    grid = {"R": 1, "g": 0, "G": 1 + 3, "D": 0}
    assert calls == {r: 2 * per_iter[r] + grid[r] for r in calls}
    metrics = [json.loads(line) for line in (t.run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = {"g/f1", "g/f2", "G/f2", "G/f3", "R/f1", "R/f3", "D/f3"}
    keys |= {"semi": {"G/f1u", "R/f1u"}, "recon": {"G/f1r", "R/f1r"}}.get(mode, set())
    assert keys <= set(metrics[-1]) and all(math.isfinite(metrics[-1][k]) for k in keys)


def test_tag_dropping_keeps_the_requested_fraction() -> None:
    from gancore.data.base import BatchPlan
    from gancore.engine import _source
    from gancore.recipe import load_recipe

    recipe = semi(TINY, fraction=0.1)
    recipe["data"]["identities"] = 40  # 40 chairs x 31 views x 2 elevations = 2480 images
    resolved = load_recipe(recipe)
    source = _source(resolved)
    labels = source.labels()
    one_elevation = labels["elevation"] == 0
    tagged = one_elevation & (labels["identity"] >= 0) & (labels["view"] >= 0)
    untagged = one_elevation & (labels["identity"] < 0) & (labels["view"] < 0)
    assert int(one_elevation.sum()) == 40 * 31 and int((tagged | untagged).sum()) == 40 * 31  # both tags go together
    assert int(tagged.sum()) / (40 * 31) == pytest.approx(0.1, abs=0.02)
    assert int((labels["identity"] >= 0).sum()) == round(0.1 * len(source))  # the core's choice, over the whole split
    assert (labels["elevation"] >= 0).all()  # only the tags are dropped
    plan = BatchPlan(labels, resolved.schedule.streams(), 8, seed=0, num_samples=len(source))
    t, _ = plan.draw("tagged", 0)
    u, _ = plan.draw("untagged", 0)
    assert tagged[t].all() and untagged[u].all()
    batch = source.load(u)
    assert (batch["identity"] == -1).all() and (batch["view"] == -1).all()


def test_mismatched_tags_are_a_clear_error(tmp_path: Path) -> None:
    from gancore.testing import smoke_train

    recipe = copy.deepcopy(TINY)
    recipe["parts"]["G"]["tags"] = {"view": 4, "identity": 8}
    with pytest.raises(Exception, match=r"parts.G.tags lists \['view', 'identity'\], but schedule.tags is"):
        smoke_train(recipe, tmp_path, steps=1)


def test_recipes_validate_and_the_cpu_recipes_train_two_steps(tmp_path: Path) -> None:
    from gancore.recipe import load_recipe
    from gancore.testing import smoke_train

    for name in ("chairs", "faces"):  # the paper settings: validated here (training them is a GPU job)
        r = load_recipe(RECIPES[name])
        assert r.data_config.resolution == 128 and r.schedule_spec.name == "tdgan.alternating"
    for name in ("chairs-cpu", "faces-cpu"):  # the CPU settings at their own size, 2 steps at batch 2
        run = smoke_train(RECIPES[name], tmp_path / name, steps=2, overrides=[f"data.cache='{tmp_path / 'cache'}'"])
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(v) for v in rows[-1].values())


# ---------------------------------------------------------------------------------------------
# a tiny trained run: checkpoints, evaluation, gancore rerender


@pytest.fixture(scope="module")
def chair_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gancore.testing import smoke_train

    return smoke_train(TINY, tmp_path_factory.mktemp("chairs"), steps=2, overrides=["output.checkpoint_every=2"])


@pytest.fixture(scope="module")
def face_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gancore.testing import smoke_train

    return smoke_train(TINY_FACES, tmp_path_factory.mktemp("faces"), steps=1, overrides=["output.checkpoint_every=1"])


def test_checkpoint_round_trip_and_eval(chair_run: Path) -> None:
    from gancore.metrics import pairs
    from gancore.testing import checkpoint_roundtrip
    from gancore_tdgan.metric import RerenderMetric

    run = checkpoint_roundtrip(chair_run)
    assert run.step == 2 and run.schedule_name == "tdgan.alternating"
    out = RerenderMetric(figure_objects=1).compute(run)
    assert out["objects"] == 2 and out["view.values"] == 31  # the test split's 2 chairs, each at 31 views
    for key in ("view.mse_vs_nn", "view.mse_vs_nn_baseline", "view.mse_vs_copy_baseline", "view.mse_new_vs_copy"):
        assert math.isfinite(out[key]), key
    assert len(out["view.mse_by_value"]) == len(out["view.mse_by_offset"]) == 31
    assert out["view.pairs_without_truth"] == 0 and Path(out["view.figure_png"]).is_file()
    quantities = {p.quantity: p for p in pairs(out)[0]}
    assert quantities["view.mse_vs_nn"].baseline == out["view.mse_vs_nn_baseline"]


def test_face_eval_changes_pose_light_and_expression(face_run: Path) -> None:
    from gancore.runs import load_run
    from gancore_tdgan.metric import RerenderMetric

    out = RerenderMetric(objects=2, figure_objects=1, nn=False).compute(load_run(face_run))
    assert out["tags"] == ["pose", "light", "expression"]
    for tag in out["tags"]:
        assert math.isfinite(out[f"{tag}.mse_vs_copy"]) and out[f"{tag}.pairs_without_truth"] == 0, tag
    assert out["pose.degrees_by_value"][:2] == [-90.0, -75.0] and "pose.mse_by_offset" not in out


def rerender(*args: str) -> int:
    from gancore.cli import main

    return main(["rerender", *args])


def _save(t: torch.Tensor, path: Path) -> Path:
    from gancore.photo import save_image

    return save_image(t, path)


def test_rerender_a_synthetic_chair(chair_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    from gancore.runs import load_run

    chair = load_run(chair_run).data("test").load([0])["image"][0]
    src = _save(torch.nn.functional.interpolate(chair[None], size=80, mode="bilinear")[0], tmp_path / "chair.png")
    assert rerender(str(src), "--run", str(chair_run), "--out", str(tmp_path / "one.png"), "--tag", "view=30deg") == 0
    assert Image.open(tmp_path / "one.png").size == (32, 32)
    assert rerender(str(src), "--run", str(chair_run), "--out", str(tmp_path / "strip.png"), "--sweep", "view") == 0
    assert Image.open(tmp_path / "strip.png").size == (32 * 32, 32)  # the input + 31 views


def test_rerender_a_synthetic_face(face_run: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from gancore.runs import load_run

    face = load_run(face_run).data("test").load([0])["image"][0]
    big = torch.nn.functional.interpolate(face[None], size=96, mode="bilinear")[0]
    canvas = np.full((200, 240, 3), 120, np.uint8)
    canvas[50:146, 70:166] = ((big.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(canvas).save(tmp_path / "photo.png")
    box = "70,50,96,96"  # by hand: a tiny untrained run must not depend on Haar's luck
    assert rerender(str(tmp_path / "photo.png"), "--run", str(face_run), "--out", str(tmp_path / "lit.png"), "--box", box,
                    "--tag", "light=3", "--tag", "pose=0deg") == 0
    assert Image.open(tmp_path / "lit.png").size == (240, 200)  # pasted back into the photo
    assert rerender(str(tmp_path / "photo.png"), "--run", str(face_run), "--out", str(tmp_path / "s.png"), "--box", box,
                    "--sweep", "expression") == 0
    assert Image.open(tmp_path / "s.png").size == (32 * 5, 32)  # the aligned crop + 4 expressions


def test_rerender_errors(chair_run: Path, face_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    out = str(tmp_path / "o.png")
    assert rerender(str(blank), "--run", str(chair_run), "--out", out, "--tag", "colour=3") == 2
    assert "unknown tag 'colour'; this run's tags are identity, view" in capsys.readouterr().err
    assert rerender(str(blank), "--run", str(chair_run), "--out", out, "--tag", "view=31") == 2
    assert "tag 'view' takes a value 0..30, got 31" in capsys.readouterr().err
    assert rerender(str(blank), "--run", str(chair_run), "--out", out, "--sweep", "light") == 2
    assert "unknown tag 'light' for --sweep" in capsys.readouterr().err
    assert rerender(str(blank), "--run", str(face_run), "--out", out) == 2  # a face run, no face in the image
    assert "no face found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert rerender(str(bad), "--run", str(chair_run), "--out", out) == 2
    assert "cannot read" in capsys.readouterr().err
    assert rerender(str(blank), "--run", str(tmp_path), "--out", out) == 2
    assert "not a gancore run" in capsys.readouterr().err
    assert not Path(out).exists()


def test_rerender_refuses_a_run_of_another_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gancore.testing import smoke_train

    other = {
        "recipe": {"name": "not-tdgan"},
        "data": {"source": "blobs", "resolution": 16, "size": 8},
        "parts": {"G": {"use": "basic.generator"}, "D": {"use": "basic.discriminator"}},
        "schedule": {"use": "alternating"},
    }
    run = smoke_train(other, tmp_path, steps=1, overrides=["output.checkpoint_every=1"])
    assert rerender(str(tmp_path / "x.png"), "--run", str(run), "--out", str(tmp_path / "o.png")) == 2
    assert "is a run of schedule 'alternating', not 'tdgan.alternating'" in capsys.readouterr().err


def test_step_speed_script_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tdgan_step", ROOT / "benchmarks" / "tdgan_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    assert bench.main(["--smoke", "--steps", "2", "--warmup", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["timed_steps"] == 2 and r["img_per_s"] > 0 and r["streams"] == {"tagged": 4}
    assert r["peak_memory_mib"] is None or r["peak_memory_mib"] > 0
