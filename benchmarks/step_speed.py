"""Training-step speed of every registered paper plugin against the machine's own ceiling.

    python benchmarks/step_speed.py                      # every benchmark: paper + CPU setting, fp32 and bf16
    python benchmarks/step_speed.py --plugin residual    # one plugin (or one benchmark name)
    python benchmarks/step_speed.py --options            # channels_last, torch.compile, foreach/fused Adam, bf16
    python benchmarks/step_speed.py --profile --plugin caae --setting cpu   # where one step's time goes

Plugins register their benchmarks with the ``register_benchmarks`` hook (a paper recipe
and a CPU recipe each; see docs/plugins.md); this script knows no plugin by name.

For every benchmark, setting and precision, one subprocess trains the recipe through the
engine's own loop (``gancore.engine.train``, unchanged) for ``--warmup`` + ``--steps``
iterations and reports:

- **step time**: the median of the timed iterations (warm-up excluded), each measured
  from the end of one iteration to the end of the next (the engine's log call, which
  reads the losses back and so waits for the device);
- **img/s**: the images the iteration draws (every stream) over the step time;
- **FLOPs of one whole iteration** (every phase, forward and backward, the optimizer
  steps), counted with ``torch.utils.flop_counter.FlopCounterMode`` around the last
  warm-up iteration, and the achieved GFLOP/s;
- **the ceiling**: the heaviest convolution of that iteration (by FLOPs), with its exact
  shape, forward + backward (input and weight gradients) timed alone in the same
  process at the same precision, in both memory formats (the faster counts); the
  ratio achieved / ceiling says how much of the step is convolution at full speed;
- **peak memory** of the timed iterations: on CPU the process's peak resident set
  (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), with the resident
  set when timing began; on CUDA ``torch.cuda.max_memory_allocated``.

Data costs nothing: a preparing subprocess draws the first ``--cycle`` batches with the
recipe's real ``BatchPlan`` (so stream filters and groups hold) and loads them once; the
timed run's engine reads them from memory (its ``_source`` and ``BatchPlan`` are patched
for the run; the batches repeat every ``--cycle`` iterations).  Loss terms are evaluated
at their full weights (after any warm-up or ramp), so the steady-state iteration is
timed.  Checkpoints and sample grids are not written.  CUDA runs (bf16 and fp32) are
added when a GPU is present.  The load average is printed: timings taken while other
processes run are upper bounds, not results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: (warm-up, timed) iterations per setting by default; fewer timed steps keep the whole
#: default run within 10 minutes on 2 CPU cores, the networks are never made smaller.
DEFAULT_STEPS = {"paper": (1, 3), "cpu": (3, 15)}
#: --options: what each option changes (recipe overrides), measured against the plain run.
OPTIONS = {
    "channels_last": ["train.channels_last=true"],
    "compile": ["train.compile=true"],
    "adam_foreach": ["optim.implementation='foreach'"],
    "adam_fused": ["optim.implementation='fused'"],
    "bf16": [],  # train.precision = 'bf16' (set as the run's precision)
}
#: --options runs these by default: each option alone, and the likely best combinations.
DEFAULT_OPTIONS = [*OPTIONS, "channels_last+bf16", "channels_last+compile", "channels_last+bf16+adam_fused"]


def option_overrides(name: str) -> tuple[str, list[str]]:
    """``"channels_last+bf16"`` → (precision, overrides) of that combination."""
    parts = name.split("+")
    unknown = [x for x in parts if x not in OPTIONS]
    if unknown:
        raise ValueError(f"unknown option {'+'.join(unknown)!r}; options: {', '.join(OPTIONS)} (combine with '+')")
    return ("bf16" if "bf16" in parts else "fp32"), [o for x in parts for o in OPTIONS[x]]
LATE = 10**9  # the step at which loss weights are evaluated (every warm-up and ramp is over)


class Enough(Exception):
    """Raised from the engine's log call when a run's time budget leaves no room for
    another timed iteration; the iterations timed so far are the result."""


# ---------------------------------------------------------------------------------------
# child: prepare the data of one (benchmark, setting)


def load(recipe: str, overrides: list[str]) -> Any:
    from gancore.recipe import load_recipe

    return load_recipe(recipe, overrides)


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Draw the first ``cycle`` batches as the engine would and save their samples."""
    import torch

    import gancore.engine as engine

    resolved = load(spec["recipe"], spec["overrides"])
    if "cache" in type(resolved.data_config).model_fields:  # never write renders into a recipe's cache
        resolved.data_config = resolved.data_config.model_copy(update={"cache": None})
    t = resolved.train
    source = engine._source(resolved)
    plan = engine.BatchPlan(source.labels(), resolved.schedule.streams(), t.batch_size, t.seed, len(source),
                            batch_sizes=t.stream_batch_size)
    wanted = sorted({i for s in plan.streams for step in range(spec["cycle"]) for i in plan.draw(s, step)[0]})
    samples = source.load(wanted)
    info = source.info()
    torch.save({"labels": source.labels(), "index": wanted, "samples": samples, "length": len(source),
                "info": {"resolution": info.resolution, "channels": info.channels,
                         "label_classes": info.label_classes}}, spec["data"])
    return {"samples": len(wanted)}


class Preloaded:
    """A data source holding the samples of the first batches in memory (its label table
    is the real source's, so the engine's ``BatchPlan`` draws exactly what it would).  A
    sample it does not hold (the sample grid's held-out batch) is replaced by one it does."""

    def __init__(self, path: str) -> None:
        import torch

        from gancore.parts import DataInfo

        data = torch.load(path, weights_only=False)
        self._labels, self._length = data["labels"], data["length"]
        self._row = {int(i): r for r, i in enumerate(data["index"])}
        self._samples = data["samples"]
        self._info = DataInfo(**data["info"])

    def __len__(self) -> int:
        return self._length

    def labels(self) -> dict[str, Any]:
        return self._labels

    def label_classes(self) -> dict[str, int]:
        return dict(self._info.label_classes)

    def info(self) -> Any:
        return self._info

    def report(self) -> dict[str, Any]:
        return {}

    def load(self, indices: Any) -> dict[str, Any]:
        import torch

        n = len(self._row)
        rows = torch.tensor([self._row.get(int(i), int(i) % n) for i in indices], dtype=torch.long)
        return {k: v.index_select(0, rows) for k, v in self._samples.items()}


# ---------------------------------------------------------------------------------------
# child: time one configuration


class ConvShapes:
    """A dispatch mode that records every forward convolution's arguments and FLOPs."""

    def __new__(cls) -> Any:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import conv_flop_count

        class Mode(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.shapes: dict[tuple, list[int]] = {}  # key -> [calls, forward FLOPs per call]

            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                if func is torch.ops.aten.convolution.default:
                    x, w, _, stride, padding, dilation, transposed, out_pad, groups = args
                    key = (tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding), tuple(dilation),
                           bool(transposed), tuple(out_pad), int(groups))
                    entry = self.shapes.setdefault(key, [0, conv_flop_count(list(x.shape), list(w.shape),
                                                                             list(out.shape), bool(transposed))])
                    entry[0] += 1
                return out

        return Mode()


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    """Hooks into the engine's loop: where an iteration begins (a Context is made for it)
    and ends (the engine's log call). Counts FLOPs of the last warm-up iteration, resets
    the peak-memory mark when timing begins, and stamps the end of every iteration."""

    def __init__(self, warmup: int, device: str, profile: bool, clock: Any = time.perf_counter,
                 deadline: float | None = None) -> None:
        self.warmup, self.device, self.profile, self.clock = warmup, device, profile, clock
        self.deadline = deadline  # time.perf_counter() after which no further iteration is timed
        self.step = -1
        self.ends: list[float] = []
        self.images: dict[int, int] = {}
        self.modes: list[Any] = []
        self.flops: int | None = None
        self.flops_by_op: dict[str, int] = {}
        self.shapes: dict[tuple, list[int]] = {}
        self.base_mb = float("nan")
        self.started = 0.0  # the clock when training began
        self.profiler: Any = None

    def begin(self, step: int, batch: dict[str, dict[str, Any]]) -> None:
        import torch

        if step == self.step:  # another micro-batch of the same iteration
            self.images[step] += sum(len(b["image"]) for b in batch.values())
            return
        self.step = step
        self.images[step] = sum(len(b["image"]) for b in batch.values())
        if step == self.warmup - 1:  # count the last warm-up iteration
            from torch.utils.flop_counter import FlopCounterMode

            self.modes = [FlopCounterMode(display=False), ConvShapes()]
            for m in self.modes:
                m.__enter__()
        if step == self.warmup:  # timing begins: reset the peak-memory mark
            if self.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                self.base_mb = torch.cuda.memory_allocated() / 2**20
            else:
                Path("/proc/self/clear_refs").write_text("5")
                self.base_mb = memory_mb("VmRSS")
            if self.profile:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if self.device == "cuda" else []))
                self.profiler.start()

    def end(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        if self.modes:
            for m in reversed(self.modes):
                m.__exit__(None, None, None)
            counter, shapes = self.modes
            self.flops = counter.get_total_flops()
            self.flops_by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
            self.shapes = shapes.shapes
            self.modes = []
        self.ends.append(self.clock())
        timed = len(self.ends) - self.warmup
        if self.deadline is not None and timed >= 1:
            last = self.ends[-1] - self.ends[-2]
            if time.perf_counter() + last > self.deadline:
                raise Enough

    def heaviest(self) -> tuple | None:
        if not self.shapes:
            return None
        return max(self.shapes, key=lambda k: self.shapes[k][0] * self.shapes[k][1])


def conv_ceiling(key: tuple, flops: int, dtype: Any, device: str, reps: int) -> dict[str, Any]:
    """GFLOP/s of one convolution of this exact shape, forward + both gradients, timed
    alone (median of ``reps`` after one untimed run), in both memory formats."""
    import torch

    x_shape, w_shape, stride, padding, dilation, transposed, out_pad, groups = key
    best: dict[str, Any] = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(x_shape, device=device, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
        w = (torch.randn(w_shape, device=device, dtype=dtype) * 0.02).contiguous(memory_format=fmt).requires_grad_()
        times = []
        for i in range(reps + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            y = torch.ops.aten.convolution(x, w, None, list(stride), list(padding), list(dilation), transposed,
                                           list(out_pad), groups)
            torch.autograd.grad(y, (x, w), torch.ones_like(y))
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - began)
        rate = 3 * flops / statistics.median(times) / 1e9
        if rate > best.get("gflops", 0):
            best = {"gflops": rate, "format": "channels_last" if fmt is torch.channels_last else "contiguous"}
    return best


def run_overrides(spec: dict[str, Any], steps: int) -> list[str]:
    """The recipe overrides of a timed run: ``steps`` iterations, a log record each, the
    spec's device and precision, nothing written but the log."""
    threads = [f"train.threads={spec['threads']}"] if spec.get("threads") else []  # else the recipe's own
    return [*spec["overrides"], *threads, f"train.steps={steps}", "train.log_every=1", f"train.device='{spec['device']}'",
            f"train.precision='{spec['precision']}'", f"output.dir='{Path(spec['dir'])}'",
            f"output.sample_every={10**9}", f"output.checkpoint_every={10**9}", "output.num_samples=2",
            "output.tensorboard=false"]


def install(spec: dict[str, Any], probe: Probe) -> Any:
    """Patch the engine for a timed run of ``spec`` (memory data, cycling batches, loss
    weights at their steady state, no checkpoint or grid files, the probe's hooks) and
    return the resolved recipe.  For a child process only: the patches are not undone."""
    import gancore.engine as engine
    from gancore.losses import LossTerm

    resolved = load(spec["recipe"], run_overrides(spec, spec["warmup"] + spec["steps"]))
    source = Preloaded(spec["data"])
    cycle = spec["cycle"]

    class CyclingPlan(engine.BatchPlan):
        def draw(self, name: str, step: int) -> Any:
            return super().draw(name, step % cycle)

    class ProbedContext(engine.Context):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            probe.begin(kw["step"], kw["batch"])

    mean_over = engine._mean_over_processes

    def logged(*a: Any) -> Any:
        values = mean_over(*a)
        probe.end()
        return values

    weight_at = LossTerm.weight_at
    engine._source = lambda resolved, split=None: source
    engine.BatchPlan, engine.Context, engine._mean_over_processes = CyclingPlan, ProbedContext, logged
    engine.save_checkpoint = lambda *a, **k: None
    engine.save_grid = lambda *a, **k: None
    LossTerm.weight_at = lambda self, step: weight_at(self, LATE)  # the steady-state iteration
    return resolved


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    import gancore.engine as engine

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    warmup, steps, device = spec["warmup"], spec["steps"], spec["device"]
    clock = time.process_time if spec.get("clock") == "cpu" else time.perf_counter
    budget = spec.get("budget")
    probe = Probe(warmup, device, spec.get("profile", False), clock,
                  deadline=time.perf_counter() + budget if budget else None)
    resolved = install(spec, probe)
    started, probe.started = time.perf_counter(), probe.clock()
    try:
        engine.train(resolved, progress=False)
    except Enough:
        pass
    loop_s = time.perf_counter() - started
    if probe.profiler is not None:
        probe.profiler.stop()
    peak = (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else memory_mb("VmHWM")
    times = [b - a for a, b in zip(probe.ends[warmup - 1 :], probe.ends[warmup:])]
    step_s = statistics.median(times)
    images = statistics.median([probe.images[s] for s in range(warmup, warmup + len(times))])
    result: dict[str, Any] = {
        "step_s": step_s, "times": times, "images": images, "img_s": images / step_s, "flops": probe.flops,
        "gflops": probe.flops / step_s / 1e9 if probe.flops else None, "peak_mb": peak, "base_mb": probe.base_mb,
        "threads": torch.get_num_threads(), "flops_by_op": probe.flops_by_op, "loop_s": loop_s,
        "warmup_s": probe.ends[warmup - 1] - probe.started,
    }
    key = probe.heaviest()
    if key is not None and spec.get("ceiling", True):
        calls, per_call = probe.shapes[key]
        dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
        conv = conv_ceiling(key, per_call, dtype, device, spec.get("ceiling_reps", 3))
        conv_flops = sum(c * f for c, f in probe.shapes.values())
        result["ceiling"] = {**conv, "shape": describe_conv(key), "calls": calls,
                             "share": calls * per_call / conv_flops}
        if result["gflops"]:
            result["ratio"] = result["gflops"] / conv["gflops"]
    if probe.profiler is not None:
        result["profile"] = probe.profiler.key_averages().table(
            sort_by="self_cuda_time_total" if device == "cuda" else "self_cpu_time_total", row_limit=30)
        result["profile_groups"] = profile_groups(probe.profiler.key_averages(), steps)
    return result


def describe_conv(key: tuple) -> str:
    x, w, stride, padding, _, transposed, _, _ = key
    kind = "deconv" if transposed else "conv"
    cin, cout = (w[0], w[1]) if transposed else (w[1], w[0])
    return f"{kind} {w[2]}x{w[3]}/{stride[0]} {cin}->{cout} on {list(x)}"


#: operator name fragments → the group a profile reports them under
GROUPS = [
    ("convolution", ("conv", "mkldnn_convolution")),
    ("matmul", ("addmm", "::mm", "bmm", "linear", "matmul")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("max_pool", "avg_pool")),
    ("copies / fills / layout", ("copy_", "contiguous", "clone", "cat", "to_dense", "_to_copy", "reorder", "pad",
                                 "fill_", "zero_")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("activations", ("relu", "elu", "tanh", "sigmoid", "threshold", "silu")),  # relu/elu also match leaky_relu/gelu
]


def profile_groups(events: Any, steps: int) -> dict[str, float]:
    """Self CPU time per timed step (ms), grouped by kind of operator."""
    out: dict[str, float] = {}
    for e in events:
        name = e.key.lower()
        group = next((g for g, frags in GROUPS if any(f in name for f in frags)), "other")
        out[group] = out.get(group, 0.0) + e.self_cpu_time_total / 1e3 / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = prepare(spec) if spec["mode"] == "prepare" else measure(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------
# parent


def registered(wanted: list[str]) -> list[Any]:
    from gancore.plugins import get_host

    host = get_host()
    benches = list(host.benchmarks.values())
    if not wanted:
        return benches
    known = {b.name for b in benches} | {b.plugin for b in benches}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        have = ", ".join(f"{b.name} (plugin {b.plugin})" for b in benches) or "none"
        print(f"error: --plugin {', '.join(unknown)}: no such benchmark or plugin; registered: {have} "
              f"(see `gancore plugins`)", file=sys.stderr)
        raise SystemExit(2)
    return [b for b in benches if b.name in wanted or b.plugin in wanted]


def recipe_path(path: str) -> Path | None:
    p = Path(path)
    for candidate in ([p] if p.is_absolute() else [ROOT / p, Path.cwd() / p]):
        if candidate.is_file():
            return candidate
    return None


def run_child(spec: dict[str, Any], tmp: Path, tag: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    spec = {**spec, "result": str(tmp / f"{tag}.result.json"), "dir": str(tmp / f"{tag}.run")}
    spec_path = tmp / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    began = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
                "stderr": proc.stderr[-4000:]}
    result = json.loads(Path(spec["result"]).read_text())
    result["wall_s"] = time.perf_counter() - began
    return result


def fmt(v: Any, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def speed_table(rows: list[dict[str, Any]]) -> str:
    """One line per (benchmark, setting, device): fp32 and bf16 side by side."""
    head = ("| benchmark | setting | device | images/it | GFLOP/it | fp32 s/step | fp32 img/s | fp32 GFLOP/s | "
            "fp32 ceiling | fp32 of ceiling | bf16 s/step | bf16 img/s | bf16 GFLOP/s | bf16 ceiling | "
            "bf16 of ceiling | bf16 speed-up | peak MB fp32 / bf16 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["setting"], r["device"]), {})[r["precision"]] = r
    for (bench, setting, device), by in groups.items():
        cells = [bench, setting, device]
        any_r = next(iter(by.values()))
        flops = next((r.get("flops") for r in by.values() if r.get("flops")), None)
        cells += [fmt(any_r.get("images"), ".0f"), fmt(flops / 1e9 if flops else None, ".1f")]
        for prec in ("fp32", "bf16"):
            r = by.get(prec)
            if r is None or "error" in r:
                cells += ["—"] * 5 if r is None else [f"error: {r['error'][:60]}"] + ["—"] * 4
                continue
            ceil = r.get("ceiling", {})
            cells += [fmt(r["step_s"], ".3f"), fmt(r["img_s"], ".1f"), fmt(r.get("gflops"), ".0f"),
                      fmt(ceil.get("gflops"), ".0f"), f"{100 * r['ratio']:.0f}%" if r.get("ratio") else "—"]
        f32, b16 = by.get("fp32", {}), by.get("bf16", {})
        ok = "step_s" in f32 and "step_s" in b16
        cells.append(f"{f32['step_s'] / b16['step_s']:.2f}×" if ok else "—")
        cells.append(" / ".join(fmt(by.get(p, {}).get("peak_mb"), ".0f") for p in ("fp32", "bf16")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        tag = f"{r['benchmark']} {r['setting']} {r['device']} {r['precision']}"
        if "error" in r:
            out.append(f"- {tag}: **error** {r['error']}")
            continue
        c = r.get("ceiling", {})
        conv = sum(v for k, v in r.get("flops_by_op", {}).items() if "convolution" in k)
        share = f", convolutions {100 * conv / r['flops']:.0f}% of its FLOPs" if r.get("flops") else ""
        out.append(f"- {tag}: step times {', '.join(f'{t:.3f}' for t in r['times'])} s (median {r['step_s']:.3f}); "
                   f"ceiling shape {c.get('shape', '—')} ({c.get('format', '—')}, {c.get('calls', 0)} calls, "
                   f"{100 * c.get('share', 0):.0f}% of the conv FLOPs){share}; "
                   f"resident {r['base_mb']:.0f} MB when timing began, peak {r['peak_mb']:.0f} MB; "
                   f"{r['threads']} threads; {r['wall_s']:.0f} s in all")
    return "\n".join(out)


def options_table(rows: list[dict[str, Any]]) -> str:
    """Each option's speed-up over the mean step time of the two plain fp32 runs that bracket
    the options (``plain`` first, ``plain again`` last), so that a drift of the machine over
    the run shows in the two plain rows rather than in every ratio."""
    lines = ["| benchmark | setting | device | option | s/step | speed-up (mean of plain runs ÷ option) | set-up + warm-up s |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["setting"], r["device"]), []).append(r)
    for (bench, setting, device), rs in groups.items():
        base = [r["step_s"] for r in rs if r["option"] in ("plain", "plain again") and "step_s" in r]
        ref = statistics.mean(base) if base else None
        for r in rs:
            if "error" in r:
                lines.append(f"| {bench} | {setting} | {device} | {r['option']} | error: {r['error'][:80]} | — | — |")
                continue
            ratio = f"{ref / r['step_s']:.2f}×" if ref else "—"
            lines.append(f"| {bench} | {setting} | {device} | {r['option']} | {r['step_s']:.3f} | {ratio} | "
                         f"{r['warmup_s']:.0f} ({len(r['times'])} timed after {r['warmup']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--plugin", action="append", default=[], metavar="NAME",
                   help="run only this plugin's benchmarks (or the benchmark of this name); repeatable")
    p.add_argument("--setting", choices=["paper", "cpu", "all"], default="all", help="which registered recipes")
    p.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="auto: the CPU, and CUDA too when a GPU is present")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: 1 paper, 3 cpu)")
    p.add_argument("--steps", type=int, default=None, help="timed iterations (default: 3 paper, 15 cpu)")
    p.add_argument("--cycle", type=int, default=2, help="distinct batches loaded; the iterations cycle through them")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a recipe override applied to every benchmark (smoke tests; the table then says so)")
    p.add_argument("--options", action="store_true",
                   help="instead: the speed-up of each option over the plain fp32 step: "
                        + ", ".join(DEFAULT_OPTIONS))
    p.add_argument("--option", action="append", default=[], dest="only_options", metavar="NAME[+NAME...]",
                   help=f"with --options: only this option or combination (repeatable); options: {', '.join(OPTIONS)}")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (the result); cpu: process CPU time, steadier on a shared machine "
                        "for relative comparisons with --threads 1 (not a speed)")
    p.add_argument("--profile", action="store_true", help="also print a profile of the timed iterations")
    p.add_argument("--json", type=Path, default=None, help="write every result to this file")
    p.add_argument("--budget", type=float, default=540,
                   help="seconds for the whole run (default 540): each run gets an equal share of what is left "
                        "and times fewer iterations (at least one) when its share runs out; 0: no budget")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed to one subprocess")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if (args.warmup is not None and args.warmup < 1) or (args.steps is not None and args.steps < 1):
        p.error("--warmup and --steps must be at least 1 (the FLOPs are counted in the last warm-up iteration)")

    import torch

    from gancore.engine import cpu_has_native_bf16

    benches = registered(args.plugin)
    if not benches:
        print("no benchmark is registered (install a paper plugin, e.g. pip install -e plugins/gancore-residual)",
              file=sys.stderr)
        return 2
    settings = ["paper", "cpu"] if args.setting == "all" else [args.setting]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("error: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    env = {**os.environ, "GANCORE_RENDER_COMPILE": "0"}  # preparing renders a few batches: eager is quicker
    load_before = os.getloadavg()
    header = (f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs "
              f"(bf16: {'native' if cpu_has_native_bf16() else 'not native'}), "
              f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}"
              + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(header, file=sys.stderr)
    print(f"load average before: {load_before[0]:.2f}", file=sys.stderr)
    if args.clock == "cpu":
        header += "; clock: process CPU time (for ratios only)"
    if args.overrides:
        print(f"overrides for every recipe (NOT the registered settings): {args.overrides}", file=sys.stderr)
    configs = []  # (device, precision, option, overrides) of every run of one benchmark setting
    for device in devices:
        if args.options:
            names = ["plain", *(args.only_options or DEFAULT_OPTIONS), "plain again"]
            for name in names:
                try:
                    prec, extra = ("fp32", []) if name.startswith("plain") else option_overrides(name)
                except ValueError as e:
                    print(f"error: --option: {e}", file=sys.stderr)
                    return 2
                configs.append((device, prec, name, extra))
        else:
            configs += [(device, prec, None, []) for prec in precisions]
    todo = sum(len(configs) for b in benches for s in settings if b.recipes().get(s))
    overheads = [20.0]  # seconds a run spends outside its timed loop (start-up, warm-up, ceiling): measured as we go
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gancore-step-speed-") as tmp_:
        tmp = Path(tmp_)
        for bench in benches:
            for setting in settings:
                path = bench.recipes().get(setting)
                if path is None:
                    continue
                recipe = recipe_path(path)
                base = {"benchmark": bench.name, "setting": setting}
                if recipe is None:
                    rows.append({**base, "device": "cpu", "precision": "fp32",
                                 "error": f"recipe {path} not found (relative paths are read from {ROOT})"})
                    print(f"{bench.name} {setting}: recipe {path} not found", file=sys.stderr)
                    continue
                warmup, steps = DEFAULT_STEPS[setting]
                warmup = args.warmup or warmup
                steps = args.steps or steps
                tag = f"{bench.name}-{setting}"
                spec = {"mode": "prepare", "recipe": str(recipe), "overrides": args.overrides, "cycle": args.cycle,
                        "data": str(tmp / f"{tag}.data.pt"), "threads": args.threads}
                prep = run_child(spec, tmp, f"{tag}-prepare", env, args.timeout)
                if "error" in prep:
                    rows.append({**base, "device": "cpu", "precision": "fp32", "error": f"preparing: {prep['error']}"})
                    print(f"{tag}: preparing failed:\n{prep.get('stderr', prep['error'])}", file=sys.stderr)
                    continue
                spec.update(mode="measure", warmup=warmup, steps=steps)
                for device, prec, option, extra in configs:
                    share = None
                    if args.budget:  # an equal share of what is left, less what a run spends outside its loop
                        left = args.budget - (time.perf_counter() - began)
                        share = max(1.0, left / max(todo, 1) - statistics.mean(overheads))
                    todo -= 1
                    label = f"{tag} {device} {option or prec}"
                    w = max(warmup, 3) if option and "compile" in option else warmup  # compiling takes the first iterations
                    result = run_child({**spec, "device": device, "precision": "bf16" if prec == "bf16" else "no",
                                        "overrides": [*args.overrides, *extra], "warmup": w,
                                        "profile": args.profile, "ceiling": not args.options, "clock": args.clock,
                                        "budget": share},
                                       tmp, label.replace(" ", "-"), env, args.timeout)
                    row = {**base, "device": device, "precision": prec, "option": option, "warmup": w, **result}
                    if "loop_s" in result:
                        overheads.append(result["wall_s"] - result["loop_s"])
                    rows.append(row)
                    if "error" in result:
                        print(f"{label}: error\n{result.get('stderr', result['error'])}", file=sys.stderr)
                        continue
                    print(f"{label}: {result['step_s']:.3f} s/step, {result['img_s']:.1f} img/s"
                          + (f", {result['gflops']:.0f} GFLOP/s" if result.get("gflops") else "")
                          + (f", {100 * result['ratio']:.0f}% of {result['ceiling']['gflops']:.0f}"
                             if result.get("ratio") else "")
                          + f"  ({result['wall_s']:.0f} s)", file=sys.stderr, flush=True)
                    if args.profile:
                        print(f"\n{label}: self CPU ms per step by group: {result['profile_groups']}\n"
                              f"{result['profile']}", flush=True)
    load_after = os.getloadavg()
    print(f"\n{header}\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{time.perf_counter() - began:.0f} s in all")
    if args.overrides:
        print(f"overrides for every recipe (NOT the registered settings): {' '.join(args.overrides)}")
    print()
    print(options_table(rows) if args.options else speed_table(rows))
    if not args.options:
        print()
        print(details(rows))
    spent = time.perf_counter() - began
    if args.budget and spent > args.budget * 1.1:
        print(f"\nnote: the run took {spent:.0f} s, more than --budget {args.budget:.0f} s: the start-up and warm-up "
              f"of {len(rows)} runs do not fit in it; choose fewer with --plugin/--setting/--precision",
              file=sys.stderr)
    if max(load_before[0], load_after[0]) > 1.3:
        print("\nnote: the machine was not idle (load average above 1.3): these timings are upper bounds, "
              "not results", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "load": [load_before[0], load_after[0]],
                                         "overrides": args.overrides, "rows": rows}, indent=2))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
