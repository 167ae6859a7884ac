"""Checkpoints: complete, atomic, resumable.

Layout of ``checkpoints/step_000500/``:

- ``model.safetensors`` — every network's state dict, keys prefixed by role (``G0.net.0.weight``);
  safetensors holds tensors only, never pickled code;
- ``ema.safetensors`` — with ``train.ema``: the averaged weights of the averaged roles, same layout;
- ``optim.pt`` — optimizer states (tensors and numbers; read back with ``weights_only=True``);
- ``rng.pt`` — the RNG states of torch (CPU and CUDA), ``random`` and numpy, one per
  process (``{"ranks": [...]}``): after a resume every process draws its own noise again;
- ``state.json`` — step, gancore version, the data description, the resolved recipe and
  the schedule's state (``schedule_state``).

A checkpoint is written into a hidden temporary folder and renamed into place, so a
crash or kill mid-write leaves the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"  # train.ema's averaged weights, same key layout as WEIGHTS_FILE

__all__ = ["WEIGHTS_FILE", "EMA_FILE", "save_checkpoint", "latest_checkpoint", "latest_readable_checkpoint", "check_readable",
           "list_checkpoints", "load_weights", "load_checkpoint", "CheckpointError", "rng_state", "set_rng_state"]


class CheckpointError(RuntimeError):
    pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if p.is_dir() and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def check_readable(ckpt: Path) -> None:
    """Raise :class:`CheckpointError` (naming the file) unless ``ckpt``'s state, weights header,
    optimizer and RNG files can be read."""
    from safetensors import safe_open

    read_state(ckpt)
    files = [WEIGHTS_FILE] + ([EMA_FILE] if (Path(ckpt) / EMA_FILE).exists() else [])
    for weights in (Path(ckpt) / name for name in files):
        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"{weights} cannot be read ({type(e).__name__}: {e})") from None
    for name in ("optim.pt", "rng.pt"):
        path = Path(ckpt) / name
        if not path.is_file() or path.stat().st_size == 0:
            raise CheckpointError(f"{path} is missing or empty")


def latest_readable_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that can be read, and a note for each newer one that cannot
    (a kill mid-write leaves none, but a disk error or a copy cut short can)."""
    notes = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            check_readable(ckpt)
        except CheckpointError as e:
            notes.append(f"skipping unreadable checkpoint {ckpt.name}: {e}")
            continue
        return ckpt, notes
    return None, notes


def save_checkpoint(run_dir: Path, step: int, nets: dict[str, torch.nn.Module], optims: dict[str, Any],
                    state: dict[str, Any], keep_last: int, rng: list[dict[str, Any]] | None = None,
                    averages: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep_last``.

    ``rng``: every process's RNG state in rank order (default: this process's alone);
    ``averages``: the averaged weights of ``train.ema`` by role, written to ``ema.safetensors``.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-step_{step:06d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, group in ((WEIGHTS_FILE, nets), (EMA_FILE, averages or {})):
        if group:
            tensors = {f"{role}.{key}": value.detach().to("cpu").contiguous().clone()
                       for role, net in group.items() for key, value in net.state_dict().items()}
            save_file(tensors, str(tmp / name), metadata={"format": "gancore"})
    torch.save({role: opt.state_dict() for role, opt in optims.items()}, tmp / "optim.pt")
    torch.save({"ranks": rng if rng is not None else [rng_state()]}, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. final == periodic): swap safely
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    for stale in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(ckpt) / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {ckpt} has no readable state.json: {e}") from None


def load_weights(ckpt: Path, nets: dict[str, torch.nn.Module], strict: bool = True,
                 file: str = WEIGHTS_FILE) -> None:
    """Load each role's weights from ``ckpt/model.safetensors`` (or another file of the checkpoint,
    e.g. the averaged weights ``ema.safetensors``)."""
    path = Path(ckpt) / file
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a gancore checkpoint folder")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors' own error types for a corrupt header or a cut file
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    for role, net in nets.items():
        prefix = f"{role}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sd and strict:
            raise CheckpointError(f"checkpoint {ckpt} has no weights for role {role!r}")
        problems = _mismatches(net, sd) if strict else []
        if problems:
            shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
            raise CheckpointError(f"weights of role {role!r} in {ckpt} do not fit the network built from the "
                                  f"recipe ({type(net).__name__}):\n  {shown}")
        net.load_state_dict(sd, strict=strict)


def _mismatches(net: torch.nn.Module, saved: dict[str, torch.Tensor]) -> list[str]:
    """Each tensor name that is missing, unexpected, or of another shape, with the shapes."""
    own = net.state_dict()
    out = [f"missing in the checkpoint: {k} {list(v.shape)}" for k, v in own.items() if k not in saved]
    out += [f"not in the network: {k} {list(v.shape)}" for k, v in saved.items() if k not in own]
    out += [f"shape of {k}: checkpoint {list(saved[k].shape)}, network {list(v.shape)}"
            for k, v in own.items() if k in saved and saved[k].shape != v.shape]
    return out


def load_checkpoint(ckpt: Path, nets: dict[str, torch.nn.Module], optims: dict[str, Any], rank: int = 0,
                    world: int = 1) -> dict[str, Any]:
    """Restore weights, optimizer and process ``rank``'s RNG state; returns state.json
    (with ``rng_note`` set when the checkpoint was written by a different number of processes)."""
    state = read_state(ckpt)
    load_weights(ckpt, nets)
    try:
        opt_states = torch.load(Path(ckpt) / "optim.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{Path(ckpt) / 'optim.pt'} cannot be read ({type(e).__name__}: {e})") from None
    for role, opt in optims.items():
        opt.load_state_dict(opt_states[role])
    saved = torch.load(Path(ckpt) / "rng.pt", map_location="cpu", weights_only=True)
    ranks = saved["ranks"] if "ranks" in saved else [saved]  # checkpoints before per-process states
    if len(ranks) == world:
        set_rng_state(ranks[rank])
    else:
        set_rng_state(ranks[0])
        if rank:
            torch.manual_seed(int(state["step"]) * 7919 + rank)
        state["rng_note"] = (f"{ckpt} was written by {len(ranks)} process(es) and is resumed by {world}: "
                             f"process 0 continues the saved random streams, the others start new ones")
    return state
