"""Training speed of DR-GAN through the engine: images/s and peak memory of one iteration
(D step + G step) at the paper setting, for several batch sizes.

    python plugins/gancore-drgan/scripts/benchmark.py                          # recipes/drgan.toml, batch 8 and 64
    python plugins/gancore-drgan/scripts/benchmark.py --recipe recipes/drgan-multi.toml --batches 2,11
    python plugins/gancore-drgan/scripts/benchmark.py --device cuda --steps 30 --warmup 10

Each batch size runs in a fresh process (so that its peak memory is its own): the recipe
is trained through ``gancore.engine.train`` for ``warmup + steps`` iterations, and the time
per iteration is read from the engine's own ``metrics.jsonl`` clock between the end of the
warm-up and the end (setup, the final checkpoint and sample grid are not counted).
The render cache is filled for exactly the batches the run will draw before the clock
starts, so the timing is the networks', not the renderer's.  images/s counts the real
images of a batch (a multi-image batch of G groups of n holds G·n).  Peak memory: CUDA's
``max_memory_allocated`` on a GPU, the process's peak resident set size on a CPU (which
includes Python, torch and the data).  Prints a markdown table (``--json`` for JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def measure(recipe: str, batch: int, steps: int, warmup: int, device: str, overrides: list[str], workdir: Path) -> dict[str, Any]:
    """One run of ``warmup + steps`` iterations at ``batch``; returns its numbers."""
    import torch

    from gancore.data.base import BatchPlan
    from gancore.engine import train
    from gancore.recipe import load_recipe

    total = warmup + steps
    out = workdir / f"b{batch}"
    resolved = load_recipe(recipe, [
        f"train.batch_size={batch}", f"train.steps={total}", "train.log_every=1", f"train.device='{device}'",
        f"output.dir='{out.as_posix()}'", "output.sample_every=1000000000", "output.checkpoint_every=1000000000",
        "output.num_samples=2", f"data.cache='{(workdir / 'cache').as_posix()}'", *overrides,
    ])
    # fill the render cache with the batches the run will draw (BatchPlan is a pure function of the seed)
    source = resolved.data_spec.build(resolved.data_config)
    plan = BatchPlan(source.labels(), resolved.schedule.streams(), batch, resolved.train.seed, len(source))
    for s in range(total):
        for name in plan.streams:
            source.load(plan.indices(name, s))
    images = len(plan.indices("batch", 0))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    train(resolved, progress=False)
    wall = time.perf_counter() - began
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == warmup)
    last = rows[-1]
    per_step = (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "recipe": recipe, "batch": batch, "images_per_batch": images, "device": "cuda" if cuda else "cpu",
        "s_per_iteration": round(per_step, 4), "images_per_s": round(images / per_step, 2),
        "peak_memory_mib": round(peak, 1), "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "steps_timed": last["step"] - first["step"], "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "drgan.toml"))
    p.add_argument("--batches", default="8,64", help="comma-separated batch sizes (groups, for a multi-image recipe)")
    p.add_argument("--steps", type=int, default=10, help="timed iterations")
    p.add_argument("--warmup", type=int, default=3, help="iterations before the clock starts")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe override (repeatable), e.g. --set train.precision='\"bf16\"'")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one batch, this process
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one is not None:
        print(json.dumps(measure(a.recipe, a.one, a.steps, a.warmup, a.device, a.overrides, Path(a.workdir))))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="drgan-bench-") as tmp:
        for batch in [int(b) for b in a.batches.split(",")]:
            cmd = [sys.executable, __file__, "--one", str(batch), "--recipe", a.recipe, "--steps", str(a.steps),
                   "--warmup", str(a.warmup), "--device", a.device, "--workdir", tmp]
            for o in a.overrides:
                cmd += ["--set", o]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if a.json:
        for r in results:
            print(json.dumps(r))
        return 0
    import torch

    print(f"recipe {a.recipe}; torch {torch.__version__}, {platform.machine()}, {results[0]['device']}; "
          f"{a.steps} iterations timed after {a.warmup}")
    print("| batch | images / iteration | s / iteration | images / s | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch']} | {r['images_per_batch']} | {r['s_per_iteration']} | {r['images_per_s']} | "
              f"{r['peak_memory_mib']} ({r['peak_memory_kind']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
