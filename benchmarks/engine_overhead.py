"""Engine overhead: the same parts, losses and batches through gancore's engine and
through a plain hand-written PyTorch loop doing exactly the same math, in one process.

    nice -n 5 python benchmarks/engine_overhead.py                # basic GAN, 32 px, width 32
    python benchmarks/engine_overhead.py --steps 40 --repeats 5 --batch-size 16

The plain loop is what one would write by hand for the ``alternating`` schedule: one
G(z) per iteration; a D step on real vs G(z).detach(); then a G step through the frozen
D, reusing the same G(z) graph; Adam for both.  (The engine gets the same gradients by
backpropagating each phase into its trained roles only, and adds its bookkeeping: the
shared-result cache, the stale-result guard, BatchNorm-statistics control.)  Both draw the same batches (``BatchPlan`` + ``blobs``)
and start from the same weights.  Runs are interleaved (engine, plain, plain, engine,
...); the first ``--warmup`` steps of every run are excluded; the engine's time per
step comes from its own ``metrics.jsonl`` clock (``seconds``), so its setup, the final
checkpoint and sample grid are not counted.  Prints a markdown table.

On a shared machine wall-clock time per step swings by several times with the other
processes' load, so the default clock is the process's CPU time (``time.process_time``,
every thread of the process, the engine's prefetch thread included) with one torch
thread; ``--clock wall --threads 0`` measures elapsed time with torch's thread choice.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def recipe(args: argparse.Namespace, out: Path, steps: int) -> dict:
    return {
        "recipe": {"name": "engine-overhead"},
        "data": {"source": "blobs", "resolution": args.resolution, "size": 4096},
        "parts": {"G": {"use": "basic.generator", "width": args.width},
                  "D": {"use": "basic.discriminator", "width": args.width}},
        "schedule": {"use": "alternating"},
        "train": {"steps": steps, "batch_size": args.batch_size, "log_every": args.warmup, "device": "cpu",
                  "nan_check": True},
        "output": {"dir": str(out), "sample_every": 10**9, "checkpoint_every": 10**9, "num_samples": 2},
    }


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def run_engine(args: argparse.Namespace, root: Path, i: int) -> float:
    import types

    import gancore.engine as engine
    from gancore.recipe import load_recipe

    out = root / f"engine{i}"
    # the engine stamps metrics.jsonl with time.perf_counter(); give it the benchmark's clock
    saved = engine.time
    engine.time = types.SimpleNamespace(perf_counter=CLOCKS[args.clock])
    try:
        engine.train(load_recipe(recipe(args, out, args.steps)), progress=False)
    finally:
        engine.time = saved
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == args.warmup)
    last = rows[-1]
    shutil.rmtree(out, ignore_errors=True)
    return (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])


def run_plain(args: argparse.Namespace, root: Path, i: int) -> float:
    """The same math, written by hand."""
    from accelerate.utils import set_seed

    from gancore.data.base import BatchPlan
    from gancore.recipe import load_recipe

    resolved = load_recipe(recipe(args, root / f"plain{i}", args.steps))  # the same parts and data, resolved
    set_seed(0)
    source = resolved.data_spec.build(resolved.data_config)
    info = source.info()
    G = resolved.parts["G"][0].build(resolved.parts["G"][1], info=info).train()
    D = resolved.parts["D"][0].build(resolved.parts["D"][1], info=info).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    plan = BatchPlan(source.labels(), {"batch": resolved.schedule.streams()["batch"]}, args.batch_size, 0, len(source))
    torch.manual_seed(1)
    z_dim = G.config.z_dim
    clock = CLOCKS[args.clock]
    began = None
    for step in range(args.steps):
        if step == args.warmup:
            began = clock()
        real = source.load(plan.indices("batch", step))["image"]
        fake = G(torch.randn(real.shape[0], z_dim))
        # D step: real vs G(z).detach()
        D.requires_grad_(True)
        loss_d = F.softplus(-D(real).logits.float()).mean() + F.softplus(D(fake.detach()).logits.float()).mean()
        loss_d.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        # G step through the frozen D, reusing G(z)
        D.requires_grad_(False)
        loss_g = F.softplus(-D(fake).logits.float()).mean()
        loss_g.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
    return (clock() - began) / (args.steps - args.warmup)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", choices=["basic"], default="basic",
                   help="which parts to time (basic.generator / basic.discriminator)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=10, help="first steps of every run not timed")
    p.add_argument("--repeats", type=int, default=5, help="runs of each, interleaved")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU time (stable on a shared machine); wall: elapsed time")
    args = p.parse_args(argv)
    if args.steps <= args.warmup or args.steps % args.warmup:
        p.error("--steps must be a multiple of --warmup and larger than it")
    if args.threads:
        torch.set_num_threads(args.threads)
    import os

    os.environ.setdefault("GANCORE_LOAD_PLUGINS", "")  # built-ins only: nothing else is timed
    engine, plain = [], []
    root = Path(tempfile.mkdtemp(prefix="gancore-bench-"))
    try:
        run_plain(argparse.Namespace(**{**vars(args), "steps": args.warmup + 1}), root, -1)  # import/alloc warm-up
        for i in range(args.repeats):
            order = (run_engine, run_plain) if i % 2 == 0 else (run_plain, run_engine)
            for fn in order:
                (engine if fn is run_engine else plain).append(fn(args, root, i))
            print(f"repeat {i + 1}/{args.repeats}: engine {engine[-1] * 1e3:.1f} ms/step, "
                  f"plain {plain[-1] * 1e3:.1f} ms/step", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    e, q = statistics.median(engine), statistics.median(plain)
    print(f"\nbasic.generator + basic.discriminator, width {args.width}, {args.resolution} px blobs, "
          f"batch {args.batch_size}, `alternating` (D then G, G(z) reused); {args.repeats} interleaved runs of "
          f"{args.steps} steps, first {args.warmup} excluded; {args.clock} clock; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n")
    print("| loop | median s/step | min s/step | max s/step |")
    print("|---|---|---|---|")
    print(f"| gancore engine | {e:.4f} | {min(engine):.4f} | {max(engine):.4f} |")
    print(f"| plain PyTorch loop | {q:.4f} | {min(plain):.4f} | {max(plain):.4f} |")
    print(f"| **ratio engine / plain** | **{e / q:.3f}×** | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
