"""The training loop: one function, read top to bottom.

    gancore run recipes/residual.toml                      # CPU or one GPU
    torchrun --nproc_per_node 2 --no-python gancore run …   # two CPU processes (gloo)
    accelerate launch --multi_gpu -m gancore run …          # several GPUs

Each iteration runs the schedule's phases in order.  For each phase the engine makes
the roles it trains (and the roles it *prepares* for later phases) trainable and
freezes the rest, runs the phase's forward on every micro-batch, sums its loss terms,
backpropagates, averages the trained roles' gradients over processes (one explicit
all-reduce, so forward reuse across phases and micro-batches stays correct), and steps
their optimizers.  Forward results live in a
per-micro-batch :class:`~gancore.schedule.Context` shared by the phases of an iteration,
which is how a schedule reuses ``G(x)`` between its D and G phases.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import latest_checkpoint, load_checkpoint, load_weights, read_state, save_checkpoint
from .data.base import BatchPlan, DataSource
from .losses import LossSum
from .recipe import Resolved
from .schedule import Context, Nets

__all__ = ["train", "TrainingError", "make_accelerator", "build_nets", "heldout_batch", "save_grid"]


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what is kept."""


# ---------------------------------------------------------------------------------------
# pieces the loop (and gancore.runs) use


def make_accelerator(resolved: Resolved, run_dir: Path) -> Any:
    from accelerate import Accelerator

    t = resolved.train
    cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
    if t.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device = 'cuda', but no CUDA device is available; use 'auto' or 'cpu'")
    if t.precision == "fp16" and cpu:
        raise TrainingError("train.precision = 'fp16' needs a GPU; on CPU use 'no' or 'bf16'")
    # Accelerate keeps its settings in process-wide singletons; a second run in the same
    # process (Python API, tests) with other settings needs them forgotten. The process
    # group (PartialState) is kept.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": t.precision}
    if resolved.output.tensorboard:
        kwargs.update(log_with="tensorboard", project_dir=str(run_dir))
    return Accelerator(**kwargs)


def build_nets(resolved: Resolved, info: Any) -> dict[str, nn.Module]:
    return {role: spec.build(cfg, info=info) for role, (spec, cfg) in resolved.parts.items()}


def _source(resolved: Resolved, split: str | None = None) -> DataSource:
    cfg = resolved.data_config if split is None else resolved.data_config.model_copy(update={"split": split})
    return resolved.data_spec.build(cfg)


def _to(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def heldout_batch(resolved: Resolved, n: int) -> dict[str, dict[str, torch.Tensor]]:
    """A fixed batch per stream from the test split (the training split if there is none)."""
    try:
        source = _source(resolved, "test")
        plan = BatchPlan(source.labels(), resolved.schedule.streams(), n, seed=12345, num_samples=len(source))
    except Exception:  # a source without a usable test split: fall back to held-back training samples
        source = _source(resolved)
        plan = BatchPlan(source.labels(), resolved.schedule.streams(), n, seed=12345, num_samples=len(source))
    return {name: source.load(plan.indices(name, 0)) for name in plan.streams}


def save_grid(rows: list[tuple[str, torch.Tensor]], path: Path) -> None:
    """Save sample rows (each ``[N, C, H, W]`` in [-1, 1]) as one PNG grid, a row per entry."""
    from torchvision.utils import save_image

    if not rows:
        return
    n = max(r.shape[0] for _, r in rows)
    tiles = []
    for _, r in rows:
        r = r.detach().float().cpu().clamp(-1, 1)
        if r.shape[1] == 1:
            r = r.expand(-1, 3, -1, -1)
        if r.shape[0] < n:
            r = torch.cat([r, -torch.ones(n - r.shape[0], *r.shape[1:])])
        tiles.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    save_image(torch.cat(tiles) * 0.5 + 0.5, tmp, nrow=n, padding=1, pad_value=1.0)
    os.replace(tmp, path)


def _optimizer(resolved: Resolved, role: str, net: nn.Module) -> torch.optim.Optimizer:
    o = resolved.optim
    over = o.per_part.get(role)
    lr = over.lr if over and over.lr is not None else o.lr
    betas = over.betas if over and over.betas is not None else o.betas
    wd = over.weight_decay if over and over.weight_decay is not None else o.weight_decay
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"role {role!r} is trained by the schedule but its network has no trainable parameters")
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=wd)


def _split(batch: dict[str, dict[str, torch.Tensor]], k: int) -> list[dict[str, dict[str, torch.Tensor]]]:
    if k == 1:
        return [batch]
    return [{s: {n: t.chunk(k)[i] for n, t in b.items()} for s, b in batch.items()} for i in range(k)]


# ---------------------------------------------------------------------------------------
# the loop


def train(resolved: Resolved, *, resume: bool = False, progress: bool | None = None) -> Path:
    """Train the recipe; returns the run folder.  See the module docstring."""
    t, out = resolved.train, resolved.output
    run_dir = resolved.run_dir
    if t.threads:
        torch.set_num_threads(t.threads)
    acc = make_accelerator(resolved, run_dir)
    main = acc.is_main_process
    device = acc.device

    # -- where we start -------------------------------------------------------------------
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise TrainingError(f"{run_dir} already holds checkpoints (latest {ckpt.name}); pass --resume to continue "
                            f"it, or set output.dir to a new folder")
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
                     rank=acc.process_index, world=acc.num_processes)
    nets = build_nets(resolved, info)
    if t.init_from:
        init = Path(t.init_from)
        init = latest_checkpoint(init) or init
        load_weights(init, nets)
    if t.channels_last:
        nets = {r: n.to(memory_format=torch.channels_last) for r, n in nets.items()}
    trained_roles = schedule.optimized_roles()
    optims = {r: _optimizer(resolved, r, nets[r]) for r in trained_roles}

    # Gradients are averaged across processes by one explicit all-reduce per trained role
    # after a phase's last micro-batch (see _all_reduce_grads), not by DDP wrappers: a
    # schedule may make a forward in one phase and backpropagate it in a later one, and DDP
    # ties its all-reduce to the order of forwards and backwards, which such reuse breaks.
    # The optimizers still go through accelerator.prepare (gradient scaling for fp16).
    for role, net in nets.items():
        net.to(device)
        if role not in optims:
            net.requires_grad_(False)
    for role in optims:
        optims[role] = acc.prepare(optims[role])
    if acc.num_processes > 1:
        _broadcast_from_main(nets)
    plain = nets
    wrapped = {r: _compiled(m) for r, m in nets.items()} if t.compile else dict(nets)
    losses = {name: LossSum(terms).to(device) for name, terms in resolved.phase_losses.items()}
    phases = schedule.phases()

    # the torch optimizers inside Accelerate's wrappers: what checkpoints save and restore
    raw_optims = {r: getattr(o, "optimizer", o) for r, o in optims.items()}
    start = 0
    if resume and ckpt is not None:
        start = int(load_checkpoint(ckpt, plain, raw_optims)["step"])
        if main:
            print(f"resuming {run_dir} from {ckpt.name}", file=sys.stderr)
    elif resume and main:
        print(f"--resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
    # noise differs between processes; the seed still fixes all of it.
    if start == 0:
        torch.manual_seed(t.seed + 1000 * acc.process_index)
    metrics_path = run_dir / "metrics.jsonl"
    if main:
        _truncate_metrics(metrics_path, start)
    heldout = {s: _to(b, device, False) for s, b in heldout_batch(resolved, out.num_samples).items()} if main else None
    state = {"gancore": __version__, "recipe": resolved.as_dict(),
             "info": {"resolution": info.resolution, "channels": info.channels, "label_classes": info.label_classes}}

    def save(step: int) -> None:
        acc.wait_for_everyone()
        if main:
            save_checkpoint(run_dir, step, plain, raw_optims, state, out.keep_last)

    def sample(step: int) -> None:
        if not main:
            return
        modes = {r: m.training for r, m in plain.items()}
        for m in plain.values():
            m.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad(), acc.autocast():
            rows = schedule.sample(plain, heldout)
        for r, m in plain.items():
            m.train(modes[r])
        save_grid(rows, run_dir / "samples" / f"step_{step:06d}.png")

    # -- the loop ---------------------------------------------------------------------------
    k = t.grad_accum
    pool = ThreadPoolExecutor(max_workers=1)

    def fetch(step: int) -> dict[str, dict[str, torch.Tensor]]:
        return {s: source.load(plan.indices(s, step)) for s in plan.streams}

    # Prefetch the next batch in a thread when loading costs something (rendered or
    # decoded images); for instant sources the hand-off would cost more than it saves.
    timed = time.perf_counter()
    first = fetch(start) if start < t.steps else None
    prefetch = time.perf_counter() - timed > 0.005
    pending: Any = None
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    bad_at: dict[str, torch.Tensor] = {}  # first step each phase's total was not finite (no host sync per step)
    autocast = acc.autocast if t.precision != "no" else contextlib.nullcontext
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
            micro = [Context(step=step, batch=mb, info=info)
                     for mb in _split({s: _to(b, device, t.channels_last) for s, b in batch.items()}, k)]
            for phase in phases:
                if step % phase.every:
                    continue
                active = set(phase.trains) | set(phase.prepares)
                for role in optims:
                    if grad_on[role] != (role in active):  # toggle only what changes
                        grad_on[role] = role in active
                        plain[role].requires_grad_(grad_on[role])
                view = Nets(wrapped, plain, active)
                for i, ctx in enumerate(micro):
                    ctx.nets, ctx.phase = view, phase.name
                    with autocast():
                        phase.run(ctx)
                        total, parts = losses[phase.name].evaluate(ctx, step)
                    if total.requires_grad:
                        acc.backward(total / k if k > 1 else total)
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
                if acc.num_processes > 1:
                    _all_reduce_grads([plain[r] for r in phase.trains], acc.num_processes)
                for role in phase.trains:
                    optims[role].step()
                    optims[role].zero_grad(set_to_none=True)
            micro.clear()
            count += 1
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                check_finite()
                now = time.perf_counter()
                record = {"step": done, **{n: round(float(v) / counts[n], 6) for n, v in sums.items()},
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
        if bar is not None:
            bar.close()
        if tb:
            acc.end_training()
    acc.wait_for_everyone()
    return run_dir


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

