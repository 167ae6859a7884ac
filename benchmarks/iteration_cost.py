"""Cost of one training iteration of a recipe under two versions of gancore, side by side.

    python benchmarks/iteration_cost.py --tree before=/path/to/old/venv/bin/python \
        --tree after=/path/to/new/venv/bin/python --recipe recipes/residual-cpu.toml \
        --recipe recipes/caae-cpu.toml

Each ``--tree NAME=PYTHON`` is the interpreter of an environment where one version of
gancore and its plugins is installed.  For every recipe, the runs alternate between the
trees (A B B A A B …, ``--repeats`` each); a run is a subprocess that trains the recipe
through that version's own engine for ``--steps`` steps on a small render cache of the
recipe's data (built by a first untimed run, so data costs nothing), with one torch
thread, and reports the process CPU time per step after the first ``--warmup`` steps
(the engine's own log clock, switched to ``time.process_time``).  Prints a markdown
table of medians and the ratio of each tree to the first.

Process CPU time is used because wall time swings with the other processes on a shared
machine; run it on an idle machine all the same (cache effects remain).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: runs in the tree's own interpreter: train, print seconds (process CPU) per timed step
CHILD = r"""
import json, sys, time, types
from pathlib import Path
import torch
torch.set_num_threads(1)
import gancore.engine as engine
from gancore.recipe import load_recipe
recipe, out, steps, warmup, cache, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
over = [f"train.steps={steps}", f"train.log_every={warmup}", "train.threads=1", f"output.dir='{out}'",
        "output.sample_every=1000000000", "output.checkpoint_every=1000000000", "output.num_samples=2",
        f"data.cache='{cache}'", f"data.size={size}"]
resolved = load_recipe(recipe, over)
engine.time = types.SimpleNamespace(perf_counter=time.process_time)
engine.train(resolved, progress=False)
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
first = next(r for r in rows if r["step"] == warmup)
print(json.dumps((rows[-1]["seconds"] - first["seconds"]) / (rows[-1]["step"] - first["step"])))
"""


def run(python: str, recipe: Path, root: Path, tag: str, steps: int, warmup: int, size: int) -> float:
    out = root / tag
    cache = root / f"cache-{tag.split('-')[0]}"
    proc = subprocess.run([python, "-P", "-c", CHILD, str(recipe), str(out), str(steps), str(warmup), str(cache),
                           str(size)], capture_output=True, text=True, cwd=root,
                          env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"{tag}: {proc.stderr[-2000:]}")
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", required=True, metavar="NAME=PYTHON")
    p.add_argument("--recipe", action="append", required=True, type=Path)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="samples of the data (cached once)")
    args = p.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    names = list(trees)
    root = Path(tempfile.mkdtemp(prefix="gancore-itcost-"))
    print("| recipe | " + " | ".join(f"{n} s/step (median, min–max)" for n in names) + " | "
          + " | ".join(f"{n} / {names[0]}" for n in names[1:]) + " |")
    print("|---" * (1 + 2 * len(names) - 1) + "|")
    for recipe in args.recipe:
        recipe = recipe.resolve()
        for n in names:  # build each tree's cache, warm imports
            run(trees[n], recipe, root, f"{n}-warm", args.warmup + 1, 1, args.size)
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.repeats):
            order = names if i % 2 == 0 else names[::-1]
            for n in order:
                times[n].append(run(trees[n], recipe, root, f"{n}-{i}", args.steps, args.warmup, args.size))
            print(f"{recipe.name} repeat {i + 1}: " + ", ".join(f"{n} {times[n][-1]:.4f}" for n in names),
                  file=sys.stderr, flush=True)
        med = {n: statistics.median(v) for n, v in times.items()}
        cells = [f"{med[n]:.4f} ({min(times[n]):.4f}–{max(times[n]):.4f})" for n in names]
        ratios = [f"**{med[n] / med[names[0]]:.3f}×**" for n in names[1:]]
        print(f"| {recipe.name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |", flush=True)
    subprocess.run(["rm", "-rf", str(root)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
