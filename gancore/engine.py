"""The training loop: one function, read top to bottom.

    gancore run recipes/residual.toml                      # CPU or one GPU
    torchrun --nproc_per_node 2 --no-python gancore run …   # two CPU processes (gloo)
    accelerate launch --multi_gpu -m gancore run …          # several GPUs

Each iteration runs the schedule's due phases in order (``every``, then ``when``).  The
networks some phase of the iteration trains keep their parameters trainable; the others
run without a graph.  For each phase the engine runs its forward on every micro-batch,
sums its loss terms and backpropagates them into the parameters of the roles the phase
trains, and nothing else (``backward(inputs=...)``: no other network accumulates or even
computes a weight gradient); it checks that every trained role got a gradient, averages
the gradients over processes (one explicit all-reduce), steps the optimizers and marks
the shared forward results of the stepped networks stale.  Forward results live in a
per-micro-batch :class:`~gancore.schedule.Context` shared by the phases of an iteration
(see :mod:`gancore.schedule` for the contract).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import (EMA_FILE, latest_checkpoint, latest_readable_checkpoint, load_checkpoint, load_weights,
                         read_state, rng_state, save_checkpoint)
from .ema import WeightAverage, averaged_roles
from .data.base import BatchPlan, DataError, DataSource, PartialLabels
from .grid import save_grid
from .losses import LossSum
from .recipe import Resolved
from .schedule import Context, Ledger, PartError, Phase

__all__ = ["train", "dry_run", "TrainingError", "RunExists", "make_accelerator", "build_nets", "heldout_batch",
           "save_grid", "LossScale"]


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what is kept."""


class RunExists(ValueError):
    """The run folder already holds checkpoints and neither resume nor overwrite was asked for."""

    def __init__(self, run_dir: Path, latest: Path) -> None:
        self.run_dir, self.latest = run_dir, latest
        super().__init__(self.render("resume=True", "overwrite=True"))

    def render(self, resume: str, overwrite: str) -> str:
        return (f"{self.run_dir} already holds checkpoints (latest {self.latest.name}); pass {resume} to continue "
                f"that run, {overwrite} to start it again from scratch (its checkpoints, samples and logs are "
                f"deleted), or set output.dir to a new folder")


# ---------------------------------------------------------------------------------------
# pieces the loop (and gancore.runs) use


def cpu_has_native_bf16(capabilities: Mapping[str, Any] | None = None) -> bool:
    """Whether this CPU computes bf16 natively: AVX-512 BF16 or AMX-BF16 instructions.

    Not oneDNN's ``_is_mkldnn_bf16_supported``: that says yes on any AVX-512 CPU, where bf16
    is emulated (measured on an AVX-512 Xeon without BF16: every CPU recipe's step 2-3x slower
    than fp32, docs/benchmarks.md).  ``capabilities`` (default: ``torch.cpu.get_capabilities()``) is for tests.
    """
    if capabilities is None:
        try:
            capabilities = torch.cpu.get_capabilities()
        except (AttributeError, RuntimeError):  # a torch build without the query: assume not
            return False
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def effective_precision(precision: str, cpu: bool) -> str:
    """The autocast a run uses: ``precision`` itself, or for ``"auto"`` bf16 where the device
    computes it natively and fp32 (``"no"``) elsewhere."""
    if precision != "auto":
        return precision
    if cpu:
        return "bf16" if cpu_has_native_bf16() else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"


def make_accelerator(resolved: Resolved, run_dir: Path) -> Any:
    from accelerate import Accelerator

    t = resolved.train
    cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
    if t.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device = 'cuda', but no CUDA device is available; use 'auto' or 'cpu'")
    if t.precision == "fp16" and cpu:
        raise TrainingError("train.precision = 'fp16' needs a GPU; on CPU use 'no' or 'bf16'")
    precision = effective_precision(t.precision, cpu)
    if t.precision == "bf16" and cpu and not cpu_has_native_bf16() and _process_index() == 0:
        print("note: train.precision = 'bf16', but this CPU has no native bf16 instructions (AVX-512 BF16 or AMX); "
              "autocast will emulate them, usually slower than fp32: set train.precision = 'no' (or 'auto')",
              file=sys.stderr)
    if t.precision == "auto" and _process_index() == 0:
        what, why = ("bf16 autocast", "computes bf16 natively") if precision == "bf16" else ("fp32", "has no native bf16")
        print(f"note: train.precision = 'auto': {what} (this {'CPU' if cpu else 'GPU'} {why})", file=sys.stderr)
    # Accelerate keeps its settings in process-wide singletons; a second run in the same
    # process (Python API, tests) with other settings needs them forgotten. The process
    # group (PartialState) is kept.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": precision}
    if resolved.output.tensorboard:
        kwargs.update(log_with="tensorboard", project_dir=str(run_dir))
    acc = Accelerator(**kwargs)
    if acc.num_processes > 1:
        _destroy_process_group_at_exit()
    return acc


@functools.cache
def _destroy_process_group_at_exit() -> None:
    """Tear the process group down while the interpreter is still whole (registered once).

    The group is kept across runs in one process (see above), so nobody destroys it; left to
    interpreter teardown, Gloo's worker threads can outlive the objects they use and the
    process dies with SIGABRT ("terminate called without an active exception") after a run
    that succeeded (about 1 exit in 12 measured here, 2 processes on CPU). An ``atexit`` hook
    runs before that teardown.
    """
    import atexit

    def destroy() -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    atexit.register(destroy)


def build_nets(resolved: Resolved, info: Any) -> dict[str, nn.Module]:
    """Every role's network, built for the data; a part that cannot be is a :class:`PartError`."""
    nets = {}
    for role, (spec, cfg) in resolved.parts.items():
        try:
            nets[role] = spec.build(cfg, info=info)
        except (ValueError, TypeError, KeyError) as e:
            text = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise PartError(f"parts.{role} ({spec.name}) cannot be built for this data ({info.resolution} px, "
                            f"{info.channels} channels): {text}") from e
    return nets


def dry_run(resolved: Resolved) -> float:
    """One training step of every phase on 2 samples per stream (2 groups for a grouped
    stream), on the CPU in full precision, in a temporary folder that is then deleted, with
    a sample grid and a checkpoint at the end: it fails exactly where ``gancore run`` would
    fail in its first step (a part that cannot be built, a call a part's forward does not
    take, a loss term whose inputs do not fit).  Returns the seconds it took."""
    import tempfile

    from .recipe import load_recipe

    data = resolved.as_dict()
    with tempfile.TemporaryDirectory(prefix="gancore-dry-run-") as tmp:
        data["train"].update(steps=1, batch_size=2, grad_accum=1, device="cpu", precision="no", compile=False,
                             log_every=1, stream_batch_size={s: 2 for s in resolved.schedule.streams()})
        data["output"].update(dir=tmp, sample_every=1, checkpoint_every=1, num_samples=2, tensorboard=False)
        if "cache" in type(resolved.data_config).model_fields:
            data["data"]["cache"] = None  # never write test renders into a user's cache
        began = time.perf_counter()
        train(load_recipe(data), progress=False)
        return time.perf_counter() - began


def _source(resolved: Resolved, split: str | None = None) -> DataSource:
    """The recipe's data source on ``split`` (default: its own, normally "train"); a
    training split with ``label_fraction < 1`` keeps labels on that share of samples only."""
    cfg = resolved.data_config if split is None else resolved.data_config.model_copy(update={"split": split})
    source = resolved.data_spec.build(cfg)
    if cfg.split == "train" and cfg.label_fraction < 1:
        return PartialLabels(source, cfg.label_fraction, cfg.partial_labels)
    return source


def _to(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def heldout_batch(resolved: Resolved, n: int) -> tuple[dict[str, dict[str, torch.Tensor]], str | None]:
    """A fixed batch of ``n`` per stream from the test split, and ``None``; for data without
    a usable test split, training samples and a note saying so (shown on the sample grids)."""
    streams = resolved.schedule.streams()
    sizes = {name: n for name in streams}
    note = None
    # a test split keeps every label, so a stream of samples *missing* labels (semi-supervised
    # training) shows labelled test samples on the grid rather than falling back to training ones
    test_streams = {name: dataclasses.replace(s, unlabeled=()) for name, s in streams.items()}
    try:
        source = _source(resolved, "test")
        plan = BatchPlan(source.labels(), test_streams, n, seed=12345, num_samples=len(source), batch_sizes=sizes)
    except DataError as e:  # no test split (or none a stream can use): say so, show training images
        note = f"samples are TRAINING images: the data has no usable test split ({e})"
        source = _source(resolved)
        plan = BatchPlan(source.labels(), streams, n, seed=12345, num_samples=len(source), batch_sizes=sizes)
    batch = {}
    for name in plan.streams:
        idx, group = plan.draw(name, 0)
        batch[name] = source.load(idx)
        if group is not None:
            batch[name]["group"] = torch.tensor(group, dtype=torch.long)
    return batch, note


def _optimizer(resolved: Resolved, role: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = resolved.optim
    over = o.per_part.get(role)
    lr = over.lr if over and over.lr is not None else o.lr
    betas = over.betas if over and over.betas is not None else o.betas
    wd = over.weight_decay if over and over.weight_decay is not None else o.weight_decay
    if not params:
        raise TrainingError(f"role {role!r} is trained by the schedule but its network has no trainable parameters")
    kernels = {"auto": {}, "loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=wd, **kernels[o.implementation])


def _split(batch: dict[str, dict[str, torch.Tensor]], k: int) -> list[dict[str, dict[str, torch.Tensor]]]:
    """``k`` micro-batches; a grouped stream is cut between groups, never inside one."""
    if k == 1:
        return [batch]
    out: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in range(k)]
    for s, b in batch.items():
        if "group" in b:
            group = b["group"]
            per = (int(group.max()) + 1) // k
            for i in range(k):
                sel = (group >= i * per) & (group < (i + 1) * per)
                out[i][s] = {n: t[sel] for n, t in b.items()}
                out[i][s]["group"] = group[sel] - i * per
        else:
            for i in range(k):
                out[i][s] = {n: t.chunk(k)[i] for n, t in b.items()}
    return out


# ---------------------------------------------------------------------------------------
# the loop


def train(resolved: Resolved, *, resume: bool = False, overwrite: bool = False,
          progress: bool | None = None) -> Path:
    """Train the recipe; returns the run folder.  See the module docstring.

    A run folder that already holds checkpoints is continued with ``resume=True``, started
    again from scratch with ``overwrite=True`` (its checkpoints, samples and logs are
    deleted), and otherwise refused with :class:`RunExists`.
    """
    t, out = resolved.train, resolved.output
    run_dir = resolved.run_dir
    if t.threads:
        torch.set_num_threads(t.threads)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run, or start it again")

    # -- where we start -------------------------------------------------------------------
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and resume:  # continue from the newest checkpoint that can be read
        ckpt, notes = latest_readable_checkpoint(run_dir)
        for note in notes if _process_index() == 0 else []:
            print(f"note: {note}", file=sys.stderr)
        if ckpt is None:
            raise TrainingError(f"cannot resume {run_dir}: none of its checkpoints can be read ({'; '.join(notes)})")
    if ckpt is not None and overwrite:
        acc_probe = _process_index()
        if acc_probe == 0:
            _clear_run(run_dir)
        ckpt = None
    if ckpt is not None and not resume:
        raise RunExists(run_dir, ckpt)
    acc = make_accelerator(resolved, run_dir)
    main = acc.is_main_process
    device = acc.device
    world, rank = acc.num_processes, acc.process_index
    if resume and ckpt is not None:
        saved = read_state(ckpt)["recipe"]
        now = resolved.as_dict()
        for section in ("parts", "schedule", "data"):
            if saved.get(section) != now.get(section):
                raise TrainingError(f"cannot resume {run_dir}: the recipe's [{section}] differs from the one the "
                                    f"checkpoint was trained with (see {ckpt / 'state.json'})")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.json").write_text(json.dumps(resolved.as_dict(), indent=2))

    # -- data, networks, optimizers -------------------------------------------------------
    from accelerate.utils import set_seed

    set_seed(t.seed)
    source = _source(resolved)
    info = source.info()
    schedule = resolved.schedule
    plan = BatchPlan(source.labels(), schedule.streams(), t.batch_size, t.seed, len(source),
                     rank=rank, world=world, batch_sizes=t.stream_batch_size)
    if main:
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
    nets = build_nets(resolved, info)
    if t.init_from:
        init = Path(t.init_from)
        init = latest_checkpoint(init) or init
        load_weights(init, nets)
    if t.channels_last:
        nets = {r: n.to(memory_format=torch.channels_last) for r, n in nets.items()}
    trained_roles = schedule.optimized_roles()
    # the parameters each role trains (a part may freeze some of its own, e.g. a backbone)
    trainable = {r: [p for p in nets[r].parameters() if p.requires_grad] for r in trained_roles}
    optims = {r: _optimizer(resolved, r, trainable[r]) for r in trained_roles}

    # Gradients are averaged across processes by one explicit all-reduce per trained role
    # after a phase's last micro-batch (see _all_reduce_grads), not by DDP wrappers: a
    # forward made in one phase may be backpropagated in a later one, and DDP ties its
    # all-reduce to the order of forwards and backwards, which such reuse breaks.
    for role, net in nets.items():
        net.to(device)
        if role not in optims:
            net.requires_grad_(False)
    if world > 1:
        _broadcast_from_main(nets)
    plain = nets
    wrapped = {r: _compiled(m) for r, m in nets.items()} if t.compile else dict(nets)
    ledger = Ledger(plain, wrapped)
    losses = {name: LossSum(terms).to(device) for name, terms in resolved.phase_losses.items()}
    phases = schedule.phases()
    scaler = _loss_scale(t.precision, device)
    sched_state: dict[str, Any] = {}

    start = 0
    averages = WeightAverage(plain, averaged_roles(resolved), t.ema) if t.ema else None
    if resume and ckpt is not None:
        restored = load_checkpoint(ckpt, plain, optims, rank=rank, world=world)
        start = int(restored["step"])
        if averages is not None:
            _resume_averages(averages, ckpt, restored, main)
        sched_state.update(restored.get("schedule_state", {}))
        if scaler is not None and restored.get("loss_scale"):
            scaler.load_state_dict(restored["loss_scale"])
        if main:
            print(f"resuming {run_dir} from {ckpt.name}", file=sys.stderr)
        if restored.get("rng_note") and main:
            print(f"note: {restored['rng_note']}", file=sys.stderr)
    elif resume and main:
        print(f"--resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
    # noise differs between processes; the seed still fixes all of it.
    if start == 0:
        torch.manual_seed(t.seed + 1000 * rank)
    metrics_path = run_dir / "metrics.jsonl"
    if main:
        _truncate_metrics(metrics_path, start)
    heldout, heldout_note = heldout_batch(resolved, out.num_samples) if main else ({}, None)
    heldout = {s: _to(b, device, False) for s, b in heldout.items()}
    if heldout_note and main:
        print(f"note: {heldout_note}", file=sys.stderr)
    state = {"gancore": __version__, "recipe": resolved.as_dict(),
             "info": {"resolution": info.resolution, "channels": info.channels, "label_classes": info.label_classes}}

    def save(step: int) -> None:
        write_data_report()
        acc.wait_for_everyone()
        if world > 1:
            _average_buffers(plain, world)  # every process saves and continues with the same statistics
        rng = _gather_rng(world)
        if main:
            extra = {"schedule_state": _plain_numbers(sched_state)}
            if scaler is not None:
                extra["loss_scale"] = scaler.state_dict()
            if averages is not None:
                extra["ema_updates"] = averages.state()
            save_checkpoint(run_dir, step, plain, optims, {**state, **extra}, out.keep_last, rng=rng,
                            averages=averages.nets if averages is not None else None)

    def write_data_report() -> dict[str, Any]:
        """Unreadable and converted images so far (this process's share), into the run folder."""
        report = source.report()
        if main and report:
            tmp = run_dir / "data_report.json.tmp"
            tmp.write_text(json.dumps(report, indent=2))
            os.replace(tmp, run_dir / "data_report.json")
        return report

    def sample(step: int) -> None:
        if not main:
            return
        modes = {r: m.training for r, m in plain.items()}
        for m in plain.values():
            m.eval()
        shown = {**plain, **averages.nets} if averages is not None else plain
        with torch.random.fork_rng(devices=[]), torch.no_grad(), acc.autocast():
            rows = schedule.sample(shown, heldout)
        for r, m in plain.items():
            m.train(modes[r])
        save_grid(rows, run_dir / "samples" / f"step_{step:06d}.png", title=heldout_note)

    # -- the loop ---------------------------------------------------------------------------
    k = t.grad_accum
    pool = ThreadPoolExecutor(max_workers=1)

    def fetch(step: int) -> dict[str, dict[str, torch.Tensor]]:
        batch = {}
        for s in plan.streams:
            idx, group = plan.draw(s, step)
            batch[s] = source.load(idx)
            if group is not None:
                batch[s]["group"] = torch.tensor(group, dtype=torch.long)
        return batch

    # Prefetch the next batch in a thread when loading costs something (rendered or
    # decoded images); for instant sources the hand-off would cost more than it saves.
    timed = time.perf_counter()
    first = fetch(start) if start < t.steps else None
    prefetch = time.perf_counter() - timed > 0.005
    pending: Any = None
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    bad_at: dict[str, torch.Tensor] = {}  # first step each phase's total was not finite (no host sync per step)
    autocast = acc.autocast if acc.mixed_precision != "no" else contextlib.nullcontext
    never = torch.tensor(float("inf"), device=device)
    count = 0
    began = time.perf_counter()
    last_log = began
    bar = None
    show = main and (progress if progress is not None else sys.stderr.isatty())
    if show:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=start, desc=resolved.name, dynamic_ncols=True, unit="it")
    tb = out.tensorboard
    if tb:
        acc.init_trackers(resolved.name)
    for m in wrapped.values():
        m.train()
    grad_on = {role: True for role in optims}

    def check_finite() -> None:
        """Raise if any term went NaN/Inf since the last check (one host sync)."""
        if not (t.nan_check and bad_at):
            return
        phases_ = list(bad_at)
        firsts = torch.stack([bad_at[p] for p in phases_]).cpu()
        if bool(torch.isfinite(firsts).any()):
            i = int(firsts.argmin())
            phase = phases_[i]
            # the culprit term: the one whose running sum the non-finite value poisoned
            term = next((key.partition("/")[2] for key, v in sums.items()
                         if key.startswith(phase + "/") and not bool(torch.isfinite(torch.as_tensor(v)))), "?")
            raise TrainingError(_nan_message(phase, term, int(firsts[i]), run_dir))

    try:
        for step in range(start, t.steps):
            if step == start:
                batch = first
            else:
                batch = pending.result() if pending is not None else fetch(step)
            pending = pool.submit(fetch, step + 1) if prefetch and step + 1 < t.steps else None
            micro = [Context(step=step, batch=mb, info=info, ledger=ledger, state=sched_state)
                     for mb in _split({s: _to(b, device, t.channels_last) for s, b in batch.items()}, k)]
            # which phases run: `every`, then `when` (decided before any phase runs, by rank 0)
            due = [p for p in phases if not step % p.every]
            if any(p.when is not None for p in due):
                due = _decide(due, micro[0], world, device)
            ledger.iteration = frozenset(r for p in due for r in p.trains)
            for role in optims:  # networks no phase of this iteration trains run without a graph
                if grad_on[role] != (role in ledger.iteration):
                    grad_on[role] = role in ledger.iteration
                    for p in trainable[role]:
                        p.requires_grad_(grad_on[role])
            for phase in due:
                ledger.begin_phase(phase)
                params = [p for r in phase.trains for p in trainable[r]]
                pushed = False
                for i, ctx in enumerate(micro):
                    ctx.phase = phase.name
                    with autocast():
                        phase.run(ctx)
                        total, parts = losses[phase.name].evaluate(ctx, step)
                    if parts and phase.trains:
                        if not total.requires_grad:
                            raise TrainingError(_no_gradient_message(phase, list(parts)))
                        scaled = total / k if k > 1 else total
                        if scaler is not None:
                            scaled = scaler.scale(scaled)
                        # No retain_graph: a backward into this phase's roles only runs through a
                        # shared result's graph when a network that made it is trained here, and
                        # then that network steps and the result is made again when next asked.
                        scaled.backward(inputs=params)
                        pushed = True
                        del scaled
                    for name, value in parts.items():
                        key = f"{phase.name}/{name}"
                        v = value.detach().float()
                        sums[key] = sums.get(key, 0) + (v / k if k > 1 else v)
                    if t.nan_check:  # first non-finite step of this phase, kept on the device
                        bad_at[phase.name] = torch.minimum(
                            bad_at.get(phase.name, never),
                            torch.where(torch.isfinite(total.detach()), never, float(step + 1)))
                    if i == k - 1:
                        for name in parts:
                            key = f"{phase.name}/{name}"
                            counts[key] = counts.get(key, 0) + 1
                    del total, parts
                    ctx.end_phase()
                if not pushed:
                    continue
                # a non-zero objective that never reaches a trained role is a bug in the schedule
                reached = [any(p.grad is not None for p in trainable[r]) for r in phase.trains]
                if not all(reached):
                    if not any(reached):
                        raise TrainingError(_no_gradient_message(phase, list(losses[phase.name].names())))
                    raise TrainingError(_unreached_message(phase, phase.trains[reached.index(False)]))
                if world > 1:
                    _all_reduce_grads([plain[r] for r in phase.trains], world)
                for role in phase.trains:
                    if scaler is not None:
                        scaler.step(optims[role], trainable[role])
                    else:
                        optims[role].step()
                    optims[role].zero_grad(set_to_none=True)
                if averages is not None:
                    averages.update(phase.trains)
                ledger.stepped(phase.trains, phase.name)
                for ctx in micro:
                    ctx.release(phase.trains)
            if scaler is not None:
                scaler.update()  # once per iteration, after every phase has stepped
            micro.clear()
            count += 1
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                check_finite()
                now = time.perf_counter()
                values = _mean_over_processes({n: v / counts[n] for n, v in sums.items()}, world, device)
                record = {"step": done, **{n: round(v, 6) for n, v in values.items()},
                          "seconds": round(now - began, 3), "it_per_s": round(count / max(now - last_log, 1e-9), 3)}
                sums, counts, count, last_log = {}, {}, 0, now
                if main:
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    if tb:
                        acc.log({k_: v for k_, v in record.items() if k_ != "step"}, step=done)
                    if bar is not None:
                        bar.set_postfix({n.split("/")[-1][:10]: f"{v:.3g}" for n, v in list(record.items())[1:5]},
                                        refresh=False)
                    elif progress is not False and (done % (t.log_every * 10) == 0 or done == t.steps):
                        print(_status_line(record, t.steps, start), file=sys.stderr, flush=True)
            if bar is not None:
                bar.update(1)
            if done % out.sample_every == 0 or done == t.steps:
                check_finite()
                sample(done)
            if done % out.checkpoint_every == 0 or done == t.steps:
                check_finite()  # never save weights a NaN has touched
                save(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        ledger.restore()
        if bar is not None:
            bar.close()
        if tb:  # not acc.end_training(): it also destroys the process group, still needed below
            for tracker in acc.trackers:
                tracker.finish()
    report = write_data_report()
    if main and report.get("skipped"):
        print(f"data: skipped {report['skipped']} of {report['files']} files as unreadable (their samples were "
              f"replaced by the next readable ones; details in {run_dir / 'data_report.json'}):\n"
              f"{report['summary']}", file=sys.stderr)
    acc.wait_for_everyone()
    return run_dir


def _resume_averages(averages: WeightAverage, ckpt: Path, restored: dict[str, Any], main: bool) -> None:
    """The averaged weights of a resumed run: from the checkpoint, or restarted from the live
    weights (saying so) when it was written without ``train.ema``."""
    if (ckpt / EMA_FILE).is_file():
        load_weights(ckpt, averages.nets, file=EMA_FILE)
        averages.load_state(restored.get("ema_updates", {}))
    elif main:
        print(f"note: {ckpt.name} holds no averaged weights (trained without train.ema): the average starts "
              f"from its weights now", file=sys.stderr)


def _decide(due: list[Phase], ctx: Context, world: int, device: torch.device) -> list[Phase]:
    """The due phases whose ``when`` holds; with several processes, rank 0 decides for all."""
    wanted = [p.when is None or bool(p.when(ctx)) for p in due]
    if world > 1:
        import torch.distributed as dist

        flags = torch.tensor(wanted, dtype=torch.uint8, device=device)
        dist.broadcast(flags, src=0)
        wanted = [bool(f) for f in flags.tolist()]
    return [p for p, w in zip(due, wanted) if w]


def _no_gradient_message(phase: Phase, terms: list[str]) -> str:
    return (f"phase {phase.name!r} has a non-zero objective ({', '.join(terms)}) that reaches none of the "
            f"parameters of the roles it trains ({', '.join(phase.trains)}): a forward result it uses was made "
            f"without a graph (inside torch.no_grad, detached, or with ctx.value). Use ctx.once(key, fn) for "
            f"results a later phase backpropagates")


def _unreached_message(phase: Phase, role: str) -> str:
    return (f"phase {phase.name!r} trains role {role!r}, but its objective gives {role} no gradient: no loss term "
            f"of this phase depends on {role}'s output (or it was made without a graph). Remove {role!r} from the "
            f"phase's `trains`, or make its output part of the objective")


def _loss_scale(precision: str, device: torch.device) -> LossScale | None:
    return LossScale(device) if precision == "fp16" else None


class LossScale:
    """fp16 loss scaling for whole iterations: every phase's objective is multiplied by
    the same scale, each optimizer step is skipped if its gradients overflowed, and the
    scale is updated once per iteration (also when a phase steps several networks, or a
    network steps in several phases)."""

    def __init__(self, device: torch.device, init: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5,
                 interval: int = 2000) -> None:
        self.scale_ = torch.full((), init, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.growth, self.backoff, self.interval = growth, backoff, interval

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_.to(loss.dtype)

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> bool:
        """Unscale ``params``' gradients and step, unless they overflowed; returns whether it stepped."""
        grads = [p.grad for p in params if p.grad is not None]
        found = torch.zeros((), dtype=torch.float32, device=self.scale_.device)
        for dtype in {g.dtype for g in grads}:
            torch._amp_foreach_non_finite_check_and_unscale_(
                [g for g in grads if g.dtype == dtype], found, self.scale_.double().reciprocal().float())
        self.found_inf += found
        if float(found):
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        torch._amp_update_scale_(self.scale_, self.growth_tracker, (self.found_inf > 0).float(),
                                 self.growth, self.backoff, self.interval)
        self.found_inf.zero_()

    def state_dict(self) -> dict[str, float]:
        return {"scale": float(self.scale_), "growth_tracker": int(self.growth_tracker)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale_.fill_(state["scale"])
        self.growth_tracker.fill_(int(state["growth_tracker"]))


def _mean_over_processes(values: dict[str, torch.Tensor], world: int, device: torch.device) -> dict[str, float]:
    """Each logged value averaged over the processes (one all-reduce, at log steps only)."""
    if not values:
        return {}
    names = list(values)
    flat = torch.stack([torch.as_tensor(values[n], dtype=torch.float32, device=device) for n in names])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(flat)
        flat /= world
    return dict(zip(names, flat.tolist()))


def _average_buffers(nets: dict[str, nn.Module], world: int) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the processes."""
    import torch.distributed as dist

    with torch.no_grad():
        for net in nets.values():
            for buf in net.buffers():
                if buf.dtype.is_floating_point:
                    dist.all_reduce(buf)
                    buf /= world


def _gather_rng(world: int) -> list[dict[str, Any]]:
    """Every process's RNG state, in rank order (what each process restores on resume)."""
    mine = rng_state()
    if world == 1:
        return [mine]
    import torch.distributed as dist

    states: list[Any] = [None] * world
    dist.all_gather_object(states, mine)
    return states


def _plain_numbers(state: dict[str, Any]) -> dict[str, Any]:
    """The schedule state as JSON numbers (0-d tensors become floats)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            v = v.item()
        if not isinstance(v, (int, float, bool, str)) and v is not None:
            raise TrainingError(f"ctx.state[{k!r}] holds a {type(v).__name__}; it may hold only numbers "
                                f"(it is saved in every checkpoint)")
        out[k] = v
    return out


def _process_index() -> int:
    return int(os.environ.get("RANK", "0"))


def _clear_run(run_dir: Path) -> None:
    """What ``overwrite`` deletes: the training products gancore writes into a run folder."""
    for name in ("checkpoints", "samples"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("metrics.jsonl", "recipe.json", "eval.json", "eval.md"):
        (run_dir / name).unlink(missing_ok=True)


def _all_reduce_grads(modules: list[nn.Module], world: int) -> None:
    """Average the gradients of ``modules`` over all processes: one flat all-reduce.

    Every parameter takes part (a missing gradient counts as zero), so all processes
    always send buffers of the same size, whatever their phase computed.
    """
    import torch.distributed as dist

    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


def _broadcast_from_main(nets: dict[str, nn.Module]) -> None:
    """Start every process from the main process's weights and buffers."""
    import torch.distributed as dist

    with torch.no_grad():
        for net in nets.values():
            for tensor in [*net.parameters(), *net.buffers()]:
                dist.broadcast(tensor.data, src=0)


def _status_line(record: dict[str, Any], steps: int, start: int) -> str:
    """One log line for runs without a terminal progress bar (CI logs, nohup)."""
    done, secs = record["step"], record["seconds"]
    rate = (done - start) / max(secs, 1e-9)
    eta = (steps - done) / max(rate, 1e-9)
    terms = "  ".join(f"{k} {v:.4g}" for k, v in record.items() if "/" in k)
    return f"step {done}/{steps}  {terms}  {rate:.2f} it/s  ETA {eta / 60:.1f} min"


def _nan_message(phase: str, term: str, step: int, run_dir: Path) -> str:
    last = latest_checkpoint(run_dir)
    kept = f"the last good checkpoint, {last}, is kept" if last else "no checkpoint had been written yet"
    return (f"loss term {phase}/{term} became NaN or Inf at step {step}; training stopped and {kept}. "
            f"Lower optim.lr or this term's weight, then resume with --resume")


def _truncate_metrics(path: Path, start: int) -> None:
    """On resume, drop records past the checkpoint so the log reads as one run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= start:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    path.write_text("".join(x + "\n" for x in keep))


def _compiled(module: nn.Module) -> nn.Module:
    try:
        return torch.compile(module)
    except Exception as e:  # compile is an optimisation: fall back to eager, loudly
        print(f"torch.compile failed ({type(e).__name__}: {e}); running eagerly", file=sys.stderr)
        return module

