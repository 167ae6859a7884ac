"""benchmarks/step_speed.py: the step benchmark runs end to end on a tiny override of a
registered CPU recipe, and the FLOPs it counts inside the engine's loop are exactly those
of one whole iteration (the 2-step run's count minus the 1-step run's)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "step_speed.py"
TINY = ["data.resolution=32", "train.batch_size=2", "data.size=64"]

pytest.importorskip("gancore_residual")
pytest.importorskip("gancore_synth")


def _env() -> dict[str, str]:
    """Every installed plugin (the suite's default loads built-ins only), eager renders, one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("GANCORE_LOAD_PLUGINS", "GANCORE_DISABLE_PLUGINS")}
    return {**env, "GANCORE_RENDER_COMPILE": "0", "OMP_NUM_THREADS": "1"}


def _bench():
    """benchmarks/step_speed.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("step_speed", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_runs_and_reports_against_its_ceiling(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--plugin", "residual", "--setting", "cpu", "--precision", "fp32",
         "--device", "cpu", "--warmup", "1", "--steps", "2", "--threads", "1", "--json", str(out),
         *[a for o in TINY for a in ("--set", o)]],
        capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| residual | cpu | cpu | 4 |" in proc.stdout  # 2 images per stream, 2 streams
    assert "NOT the registered settings" in proc.stdout  # overrides are said
    (row,) = json.loads(out.read_text())["rows"]
    assert row["benchmark"] == "residual" and row["precision"] == "fp32" and len(row["times"]) == 2
    assert row["step_s"] > 0 and row["img_s"] == pytest.approx(4 / row["step_s"])
    assert row["flops"] > 0 and row["gflops"] == pytest.approx(row["flops"] / row["step_s"] / 1e9)
    conv = sum(v for k, v in row["flops_by_op"].items() if "convolution" in k)
    assert 0.9 * row["flops"] <= conv <= row["flops"]  # ResGAN is convolutions
    ceiling = row["ceiling"]
    assert ceiling["gflops"] > 0 and ceiling["format"] in ("contiguous", "channels_last")
    assert ceiling["shape"].startswith(("conv", "deconv")) and 0 < ceiling["share"] <= 1
    assert row["ratio"] == pytest.approx(row["gflops"] / ceiling["gflops"])
    assert row["peak_mb"] >= row["base_mb"] > 0


CHECK = r"""
import json, sys
from pathlib import Path
import importlib.util
spec_ = importlib.util.spec_from_file_location("step_speed", sys.argv[1])
bench = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(bench)
from torch.utils.flop_counter import FlopCounterMode
import gancore.engine as engine
spec = json.loads(sys.argv[2])
bench.prepare(spec)
probe = bench.Probe(warmup=10**9, device="cpu", profile=False)  # never counts: only the outer counters do
counts = []
for steps in (1, 2):
    resolved = bench.install({**spec, "warmup": steps, "steps": 0}, probe)
    with FlopCounterMode(display=False) as counter:
        engine.train(resolved, progress=False)
    counts.append(counter.get_total_flops())
print(json.dumps(counts[1] - counts[0]))
"""


def test_flops_counted_in_the_loop_are_one_whole_iteration(tmp_path: Path) -> None:
    spec = {"recipe": str(ROOT / "recipes" / "residual-cpu.toml"), "overrides": TINY, "cycle": 2,
            "data": str(tmp_path / "data.pt"), "device": "cpu", "precision": "no", "warmup": 2, "steps": 1,
            "threads": 1}
    two_minus_one = subprocess.run([sys.executable, "-c", CHECK, str(SCRIPT), json.dumps({**spec, "dir": str(tmp_path / "a")})],
                                   capture_output=True, text=True, env=_env(), timeout=600)
    assert two_minus_one.returncode == 0, two_minus_one.stderr[-3000:]
    # the benchmark's own count: the last warm-up iteration (step 1), bracketed inside the loop
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({**spec, "mode": "measure", "dir": str(tmp_path / "b"), "ceiling": False,
                                     "result": str(tmp_path / "result.json")}))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--child", str(spec_path)], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counted = json.loads((tmp_path / "result.json").read_text())["flops"]
    assert counted == json.loads(two_minus_one.stdout) > 0


def test_an_unknown_plugin_is_refused_naming_the_registered_ones() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--plugin", "nosuch"], capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 2
    assert "--plugin nosuch: no such benchmark or plugin" in proc.stderr and "residual (plugin residual)" in proc.stderr
    # every installed paper plugin registers its benchmarks (the step benchmark is not edited for them)
    for module, names in [("gancore_caae", ["caae"]), ("gancore_drgan", ["drgan", "drgan-multi"]),
                          ("gancore_tdgan", ["tdgan-chairs", "tdgan-faces"])]:
        if importlib.util.find_spec(module) is not None:
            plugin = module.removeprefix("gancore_")
            for name in names:
                assert f"{name} (plugin {plugin})" in proc.stderr, (name, proc.stderr)


def test_preloaded_data_serves_the_saved_samples_and_substitutes_the_others(tmp_path: Path) -> None:
    import torch

    bench = _bench()
    images = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2, 2)
    torch.save({"labels": {"attribute": torch.tensor([0, 1] * 5)}, "index": [2, 5, 7], "length": 10,
                "samples": {"image": images, "attribute": torch.tensor([0, 1, 1])},
                "info": {"resolution": 2, "channels": 2, "label_classes": {"attribute": 2}}}, tmp_path / "d.pt")
    source = bench.Preloaded(str(tmp_path / "d.pt"))
    assert len(source) == 10 and source.info().label_classes == {"attribute": 2}
    got = source.load([7, 2])
    assert torch.equal(got["image"], images[[2, 0]]) and got["attribute"].tolist() == [1, 0]
    assert torch.equal(source.load([4])["image"], images[[4 % 3]])  # not held: a held sample instead


def test_option_speed_ups_are_over_the_mean_of_both_plain_runs() -> None:
    bench = _bench()
    row = {"benchmark": "b", "setting": "cpu", "device": "cpu", "warmup_s": 1.0, "times": [0.1], "warmup": 1}
    table = bench.options_table([{**row, "option": "plain", "step_s": 0.3}, {**row, "option": "bf16", "step_s": 0.1},
                                 {**row, "option": "plain again", "step_s": 0.1}])
    lines = {line.split(" | ")[3]: line.split(" | ")[5] for line in table.splitlines()[2:]}
    assert lines == {"plain": "0.67×", "bf16": "2.00×", "plain again": "2.00×"}  # mean plain 0.2 s
