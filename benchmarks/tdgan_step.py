"""Speed of one TD-GAN training iteration through the engine: images/s and peak memory.

    python benchmarks/tdgan_step.py                                  # paper setting: recipes/tdgan-chairs.toml
    python benchmarks/tdgan_step.py --recipe recipes/tdgan-faces.toml
    python benchmarks/tdgan_step.py --recipe recipes/tdgan-chairs-cpu.toml --steps 20
    python benchmarks/tdgan_step.py --set train.batch_size=16 --set train.precision='"bf16"'
    python benchmarks/tdgan_step.py --smoke                          # tiny networks, 32 px: checks the script runs

One iteration is TD-GAN's four steps (g, G, R, D) on one tagged batch (and an untagged one with
``schedule.semi``), run by the engine's own loop (``gancore.engine.train``, unchanged).  A first
untimed run of the same steps fills a render cache in a temporary folder, so in the timed run
data costs nothing (the batch plan is a function of the seed: both runs draw the same samples).
The timed run logs every step; the step time is the median over the steps after ``--warmup``
(from the engine's own clock in ``metrics.jsonl``); img/s is the images one iteration draws
(every stream) over that time.  Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` of the
timed run, on CPU the process's peak resident set during it (``VmHWM``, reset through
``/proc/self/clear_refs`` before it starts).  No checkpoint or sample grid is written.

Timings taken while other processes run are upper bounds; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what --smoke changes: a run of a few seconds with the recipe's schedule and parts.
SMOKE = ["data.resolution=32", "data.identities=6", "train.batch_size=4", "parts.R.width=4", "parts.R.fc=16",
         "parts.G.width=4", "parts.D.width=4", "parts.D.fc=8", "parts.R.tags={identity = 8, view = 4}",
         "parts.g.tags={identity = 8, view = 4}", "parts.G.tags={identity = 8, view = 4}"]


def _rss_peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(recipe: str, overrides: list[str], steps: int, warmup: int) -> dict:
    import torch

    from gancore.engine import train
    from gancore.recipe import load_recipe

    total = warmup + steps
    with tempfile.TemporaryDirectory(prefix="tdgan-step-") as tmp:
        common = [f"train.steps={total}", "train.log_every=1", f"data.cache='{tmp}/cache'",
                  "output.sample_every=1000000000", "output.checkpoint_every=1000000000", "output.num_samples=2",
                  *overrides]
        resolved = load_recipe(recipe, [*common, f"output.dir='{tmp}/fill'"])
        train(resolved, progress=False)  # untimed: renders every sample the timed run draws into the cache
        resolved = load_recipe(recipe, [*common, f"output.dir='{tmp}/timed'"])
        cuda = torch.cuda.is_available() and resolved.train.device != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        reset = _rss_peak_reset()
        train(resolved, progress=False)
        rows = [json.loads(x) for x in (Path(tmp) / "timed" / "metrics.jsonl").read_text().splitlines()]
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else (_rss_peak_mib() if reset else None)
    times = [b["seconds"] - a["seconds"] for a, b in zip(rows, rows[1:])][warmup - 1 if warmup else 0:]
    t = resolved.train
    per_stream = {s: t.stream_batch_size.get(s) or st.batch_size or t.batch_size
                  for s, st in resolved.schedule.streams().items()}
    images = sum(per_stream.values())
    step = statistics.median(times)
    return {"recipe": recipe, "overrides": overrides, "device": "cuda" if cuda else "cpu",
            "precision": t.precision, "resolution": resolved.data_config.resolution, "streams": per_stream,
            "timed_steps": len(times), "s_per_step": step, "img_per_s": images / step,
            "peak_memory_mib": peak, "peak_memory_kind": "cuda allocated" if cuda else "process peak RSS"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "tdgan-chairs.toml"), help="recipe (default: the paper setting)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="steps before the timed ones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--smoke", action="store_true", help="tiny networks at 32 px: only checks the script runs")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be at least 1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    r = measure(args.recipe, overrides, args.steps, args.warmup)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peak = "n/a" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f} MiB ({r['peak_memory_kind']})"
    print(f"{Path(r['recipe']).name}{' (SMOKE: tiny networks)' if args.smoke else ''}: {r['resolution']} px, "
          f"batch {r['streams']}, {r['device']} {r['precision']}, torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, load average {load:.2f}")
    print("| s/step (median) | img/s | peak memory | timed steps |\n|---|---|---|---|")
    print(f"| {r['s_per_step']:.3f} | {r['img_per_s']:.1f} | {peak} | {r['timed_steps']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
