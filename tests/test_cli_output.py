"""What a user reads from the CLI: ``gancore eval``'s table and files, plain-text part
summaries, quiet ends when stdout is closed early, and no torch noise on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from gancore import PLUGIN_API, cli, hookimpl, plugins
from gancore.metrics import Metric, Pair, format_report, pairs, quantity

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# model vs baseline


@pytest.mark.parametrize("key,expected", [
    ("age_mse", ("age_mse", None)),
    ("age_mse_baseline", ("age_mse", "baseline")),
    ("age_mse_baseline_by_group", ("age_mse_by_group", "baseline")),
    ("add.model.l1_in_mask", ("add.l1_in_mask", "model")),
    ("add.baseline.l1_in_mask", ("add.l1_in_mask", "baseline")),
    ("model.success_nearest", ("success_nearest", "model")),
    ("baseline", ("baseline", None)),
    ("baselines_seen", ("baselines_seen", None)),
])
def test_quantity_naming_rule(key: str, expected: tuple[str, str | None]) -> None:
    assert quantity(key) == expected


def test_pairs_match_model_and_baseline_keys_in_order() -> None:
    result = {"faces": 8, "add.model.l1": 0.2, "add.baseline.l1": 0.4, "age_mse": 0.05, "age_mse_baseline": 0.06,
              "model.nearest": 0.9, "age_mse_reconstruction_baseline": 0.055, "note": "text", "by_group": [1, 2],
              "flag": True}
    got, rest = pairs(result)
    assert got == [Pair("add.l1", 0.2, 0.4, True), Pair("age_mse", 0.05, 0.06, True)]
    # a baseline without its model key, a model key without a baseline, notes, lists, flags: the rest
    assert list(rest) == ["faces", "model.nearest", "age_mse_reconstruction_baseline", "note", "by_group", "flag"]


def test_report_text_and_markdown(tmp_path: Path) -> None:
    figure = tmp_path / "eval" / "strip.png"
    results = {"run": str(tmp_path), "step": 7, "schedule": "x.y",
               "x.m": {"psnr": 21.23456, "psnr_baseline": 18.0, "count": 3, "note": "a note",
                       "by_group": [0.5, 0.25], "strip_png": str(figure)}}
    text = format_report(results)
    lines = text.splitlines()
    assert lines[0] == f"{tmp_path}: step 7, schedule x.y"
    header = next(i for i, line in enumerate(lines) if line.split() == ["metric", "model", "baseline"])
    assert lines[header + 1].split() == ["psnr", "21.23", "18"]
    assert "also: count 3" in text and "a note" in text and f"figure: {figure}" in text
    assert "{" not in text  # no JSON
    md = format_report(results, markdown=True, base=tmp_path)
    assert "| metric | model | baseline |" in md and "| psnr | 21.23 | 18 |" in md
    assert "| by_group | 0.5, 0.25 |" in md and "![strip_png](eval/strip.png)" in md


# ---------------------------------------------------------------------------------------
# gancore eval, end to end, with a metric from a (fake) plugin


class _Realism(Metric):
    """Mean D logit on real images, against 0 for the untrained answer."""

    schedules = ("alternating",)

    def compute(self, run: Any) -> dict[str, Any]:
        import torch

        from gancore.photo import save_image

        real = run.data("test").load([0, 1, 2, 3])["image"]
        d = float(run.nets["D"](real).logits.mean())
        path = run.dir / "eval" / "real.png"
        save_image(torch.cat(list(real), dim=2), path)
        return {"d_real": d, "d_real_baseline": 0.0, "images": 4, "real_png": str(path)}


@pytest.fixture
def realism_host(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType("fake_realism_plugin")

    @hookimpl
    def register_parts(register: Any) -> None:
        register("fake.realism", _Realism, "test metric")

    module.register_parts = register_parts
    module.GANCORE_PLUGIN_API = PLUGIN_API

    class EntryPoint:
        name, value, dist = "fake", "fake_realism_plugin", None

        def load(self) -> types.ModuleType:
            return module

    plugins.reset()
    host = plugins.PluginHost(load_only=["fake"], entry_points=[EntryPoint()])
    assert host.statuses["fake"].state == "loaded", host.statuses["fake"].error
    monkeypatch.setattr(plugins, "_HOST", host)
    yield
    plugins.reset()


def test_eval_prints_a_table_and_writes_json_and_markdown(realism_host: None, basic_recipe: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from gancore.testing import smoke_train

    run = smoke_train(basic_recipe, tmp_path, steps=1, overrides=["output.checkpoint_every=1"])
    assert cli.main(["eval", str(run)]) == 0
    out, err = capsys.readouterr()
    saved = json.loads((run / "eval.json").read_text())
    d_real = saved["fake.realism"]["d_real"]
    row = next(line for line in out.splitlines() if line.split()[:1] == ["d_real"])
    assert row.split() == ["d_real", f"{d_real:.4g}", "0"]
    assert "fake.realism" in out and "also: images 4" in out and not out.lstrip().startswith("{")
    md = (run / "eval.md").read_text()
    assert f"| d_real | {d_real:.4g} | 0 |" in md and "![real_png](eval/real.png)" in md
    assert (run / "eval" / "real.png").is_file()
    assert f"wrote {run / 'eval.json'} and {run / 'eval.md'}" in err
    assert not list(run.glob("*.tmp"))
    # --json: the raw results, as written to eval.json
    assert cli.main(["eval", str(run), "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw == json.loads((run / "eval.json").read_text())
    assert set(raw) == {"run", "step", "schedule", "fake.realism"} and raw["step"] == 1


def test_eval_of_an_averaged_run_says_which_weights(realism_host: None, basic_recipe: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """train.ema: eval uses the averages (and says so); --weights raw the trained ones, into eval-raw.json."""
    from gancore.testing import smoke_train

    run = smoke_train(basic_recipe, tmp_path, steps=2, overrides=["output.checkpoint_every=1", "train.ema=0.9",
                                                                  "train.ema_roles=['D']"])
    assert cli.main(["eval", str(run)]) == 0
    err = capsys.readouterr().err
    assert "evaluating the averaged weights (train.ema) of D" in err
    averaged = json.loads((run / "eval.json").read_text())
    assert averaged["weights"] == "train.ema averages of D"
    assert "weights: train.ema averages of D" in (run / "eval.md").read_text()
    assert cli.main(["eval", str(run), "--weights", "raw"]) == 0
    trained = json.loads((run / "eval-raw.json").read_text())
    assert "weights" not in trained
    # the fake metric reads D: the two evaluations saw different weights
    assert trained["fake.realism"]["d_real"] != averaged["fake.realism"]["d_real"]


class _Holdout(Metric):
    """A metric with a second protocol that reads a data folder (like drgan.recognition's 'cfp')."""

    schedules = ("alternating",)
    protocols = ("folder",)

    class Config(Metric.Config):
        protocol: str = "default"
        root: str | None = None
        n: int = 1

    def compute(self, run: Any) -> dict[str, Any]:
        return {"protocol": self.config.protocol, "root": self.config.root, "n": self.config.n}


def test_eval_protocol_runs_only_the_metrics_that_offer_it(monkeypatch: pytest.MonkeyPatch, basic_recipe: dict,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gancore.testing import smoke_train

    module = types.ModuleType("fake_holdout_plugin")

    @hookimpl
    def register_parts(register: Any) -> None:
        register("fake.realism", _Realism, "test metric")
        register("fake.holdout", _Holdout, "test metric with a protocol")

    module.register_parts = register_parts
    module.GANCORE_PLUGIN_API = PLUGIN_API

    class EntryPoint:
        name, value, dist = "fake", "fake_holdout_plugin", None

        def load(self) -> types.ModuleType:
            return module

    plugins.reset()
    monkeypatch.setattr(plugins, "_HOST", plugins.PluginHost(load_only=["fake"], entry_points=[EntryPoint()]))
    try:
        run = smoke_train(basic_recipe, tmp_path, steps=1, overrides=["output.checkpoint_every=1"])
        assert cli.main(["eval", str(run), "--json"]) == 0  # the default: both metrics, default protocol
        raw = json.loads(capsys.readouterr().out)
        assert raw["fake.holdout"]["protocol"] == "default" and "fake.realism" in raw
        assert cli.main(["eval", str(run), "--protocol", "folder", "--root", str(tmp_path), "--json"]) == 0
        raw = json.loads(capsys.readouterr().out)
        assert set(raw) == {"run", "step", "schedule", "fake.holdout"}  # only the metric offering it
        assert raw["fake.holdout"] == {"protocol": "folder", "root": str(tmp_path), "n": 1}
        assert json.loads((run / "eval-folder.json").read_text()) == raw and (run / "eval-folder.md").is_file()
        assert json.loads((run / "eval.json").read_text())["fake.holdout"]["protocol"] == "default"  # kept
        assert cli.main(["eval", str(run), "--protocol", "nope"]) == 2
        assert "offers protocol 'nope' (offered: folder)" in capsys.readouterr().err
        assert cli.main(["eval", str(run), "--root", str(tmp_path)]) == 2
        assert "give --protocol NAME" in capsys.readouterr().err
        # --set METRIC.KEY=VALUE: one metric's option, checked by its Config, recorded and shown
        assert cli.main(["eval", str(run), "--set", "fake.holdout.n=3", "--json"]) == 0
        raw = json.loads(capsys.readouterr().out)
        assert raw["fake.holdout"]["n"] == 3 and raw["options"] == {"fake.holdout": {"n": 3}}
        assert "fake.realism" in raw  # the other metric ran with its defaults
        assert "options fake.holdout.n=3" in (run / "eval.md").read_text().splitlines()[2]
        assert cli.main(["eval", str(run), "--set", "fake.holdout.n=3", "--protocol", "folder", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["fake.holdout"] == {"protocol": "folder", "root": None, "n": 3}
        assert cli.main(["eval", str(run), "--set", "fake.holdout.nope=1"]) == 2
        err = capsys.readouterr().err
        assert "options of metric 'fake.holdout'" in err and "fake.holdout.nope: unknown key" in err
        assert cli.main(["eval", str(run), "--set", "fake.holdout.nn=3"]) == 2
        assert "did you mean 'n'" in capsys.readouterr().err
        assert cli.main(["eval", str(run), "--set", "fake.holdout.n='many'"]) == 2
        assert "fake.holdout.n: " in capsys.readouterr().err
        assert cli.main(["eval", str(run), "--set", "other.n=3"]) == 2
        err = capsys.readouterr().err
        assert "expected METRIC.KEY=VALUE" in err and "fake.holdout, fake.realism" in err
    finally:
        plugins.reset()


# ---------------------------------------------------------------------------------------
# gancore parts: plain text


@pytest.mark.parametrize("text,plain", [
    ("loss on ``logits``: towards ``target``.", "loss on logits: towards target."),
    ("see :class:`~gancore.runs.TrainedRun` and :func:`load <gancore.load_run>`", "see TrainedRun and load"),
    ("a *residual* and **bold** word, `default` role", "a residual and bold word, default role"),
    ("alpha * ||r||_1, 2 * 3", "alpha * ||r||_1, 2 * 3"),
    ("Example::", "Example:"),
])
def test_plain_text(text: str, plain: str) -> None:
    assert cli.plain_text(text) == plain


@pytest.mark.usefixtures("builtins_only")
def test_parts_summaries_have_no_rest_markup(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["parts"]) == 0
    out = capsys.readouterr().out
    assert "adversarial" in out and "discriminator logits" in out
    assert "``" not in out and ":class:" not in out
    assert cli.main(["parts", "--json"]) == 0
    assert all("``" not in r["summary"] for r in json.loads(capsys.readouterr().out))


# ---------------------------------------------------------------------------------------
# subprocesses: what a user's terminal shows


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANCORE_")}
    env.update({"GANCORE_LOAD_PLUGINS": "", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", **extra})
    return env


@pytest.mark.parametrize("args", [["plugins"], ["parts"], ["schema"], ["validate", "recipes/basic-gan.toml"]])
def test_closed_stdout_ends_quietly(args: list[str]) -> None:
    """``gancore parts | head -3``: the reader goes away; no BrokenPipeError line, exit 141.
    The read end is closed before the command writes, so every write hits the closed pipe."""
    env = _env(GANCORE_LOAD_PLUGINS="synth")  # basic-gan.toml trains on synthfaces
    proc = subprocess.Popen([sys.executable, "-m", "gancore", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


@pytest.mark.slow
def test_no_cuda_home_warning_from_torch_compile(tmp_path: Path, basic_recipe: dict, write_recipe: Any) -> None:
    """On a machine with a CUDA toolkit but no usable GPU, torch.compile's CPU code generation
    imports torch.utils.cpp_extension, which warns "No CUDA runtime is found, using
    CUDA_HOME=...".  gancore drops that record: a run shows only gancore's own output."""
    env = _env(CUDA_HOME=str(tmp_path), CUDA_VISIBLE_DEVICES="")  # the warning's conditions, on any machine
    control = subprocess.run([sys.executable, "-c", "import torch.utils.cpp_extension"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert "No CUDA runtime is found" in control.stderr  # torch alone does warn here
    basic_recipe["train"].update(compile=True, steps=1)
    basic_recipe["output"]["dir"] = str(tmp_path / "run")
    recipe = write_recipe(basic_recipe)
    code = ("import sys; from gancore.cli import main; code = main(sys.argv[1:]); "
            "print('cpp_extension imported:', 'torch.utils.cpp_extension' in sys.modules); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(recipe), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpp_extension imported: True" in proc.stdout  # the compiled path really ran
    assert "No CUDA runtime is found" not in proc.stderr and "CUDA_HOME" not in proc.stderr, proc.stderr
    assert "torch.compile failed" not in proc.stderr
