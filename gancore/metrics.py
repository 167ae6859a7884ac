"""Metrics: evaluation numbers for a trained run (``gancore eval RUN``).

A :class:`Metric` names the schedules it applies to and computes a flat dict of
numbers from a :class:`gancore.runs.TrainedRun` (networks in eval mode, the recipe,
the held-out data).  ``gancore eval`` runs every registered metric that applies to
the run's schedule, writes them all to ``RUN/eval.json`` and a readable ``RUN/eval.md``,
and prints a table.

**Model vs baseline.**  A number is compared with a baseline (e.g. the do-nothing answer)
by naming: a key with a ``baseline`` component is the baseline of the key that has
``model``, or nothing, in its place (components are separated by ``.`` or ``_``)::

    {"age_mse": 0.049, "age_mse_baseline": 0.064}                  # quantity "age_mse"
    {"add.model.l1_in_mask": 0.21, "add.baseline.l1_in_mask": 0.35} # quantity "add.l1_in_mask"

:func:`pairs` applies the rule; ``gancore eval`` shows such pairs side by side.

Helpers that metrics share: :func:`per_sample_mean` (optionally masked) and :func:`psnr`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from .parts import Config, make_config

if TYPE_CHECKING:
    from .runs import TrainedRun

__all__ = ["Metric", "Pair", "pairs", "quantity", "format_report", "per_sample_mean", "psnr", "PSNR_CAP"]

#: the highest PSNR reported (dB): identical images would otherwise give infinity.
PSNR_CAP = 60.0
_MSE = TypeVar("_MSE", float, torch.Tensor)


class Metric:
    """Base of every metric."""

    Config: ClassVar[type[Config]] = Config
    kind: ClassVar[str] = "metric"
    #: names of the schedules whose runs this metric evaluates ("*" for all).
    schedules: ClassVar[tuple[str, ...]] = ()
    #: evaluation protocols the metric offers besides its default one (``gancore eval RUN
    #: --protocol NAME [--root PATH]``); a metric that lists any has ``protocol`` and ``root``
    #: keys in its Config, which ``gancore eval`` sets.
    protocols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = make_config(type(self), config, overrides)

    def applies_to(self, schedule_name: str) -> bool:
        return "*" in self.schedules or schedule_name in self.schedules

    def compute(self, run: TrainedRun) -> dict[str, Any]:
        """A flat dict: numbers (``key`` beside ``key_baseline``, see the module docstring),
        short notes, and paths of figures written under ``run.dir / "eval"``."""
        raise NotImplementedError


# ------------------------------------------------------------------------------ model vs baseline

_ROLES = ("model", "baseline")


def quantity(key: str) -> tuple[str, str | None]:
    """``(quantity, role)`` of a result key: role ``"model"``, ``"baseline"`` or None.

    ``"add.baseline.l1_in_mask"`` → ``("add.l1_in_mask", "baseline")``;
    ``"age_mse_baseline_by_group"`` → ``("age_mse_by_group", "baseline")``;
    ``"recon_mse"`` → ``("recon_mse", None)``.
    """
    tokens = re.split(r"([._])", key)  # words at even positions, separators at odd ones
    for i in range(0, len(tokens), 2):
        if tokens[i] in _ROLES and len(tokens) > 1:
            role = tokens[i]
            drop = (i, i + 1) if i + 1 < len(tokens) else (i - 1, i)  # the word and one separator
            return "".join(t for j, t in enumerate(tokens) if j not in drop), role
    return key, None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Pair:
    """One quantity of a metric's result: its model value and, if the metric gave one, its baseline."""

    quantity: str
    model: float | int | None
    baseline: float | int | None = None
    has_baseline: bool = False


def pairs(result: dict[str, Any]) -> tuple[list[Pair], dict[str, Any]]:
    """Split a metric's flat result into ``(pairs, rest)``.

    ``pairs``: every number that has a baseline under the naming rule, with it, in the
    result's order.  ``rest``: everything else (numbers without a baseline, notes, lists,
    figure paths), under their original keys.
    """
    by_quantity: dict[str, dict[str | None, str]] = {}
    for key, value in result.items():
        if _number(value) or value is None:
            q, role = quantity(key)
            by_quantity.setdefault(q, {})[role] = key
    out: list[Pair] = []
    paired: set[str] = set()
    for q, roles in by_quantity.items():
        base = roles.get("baseline")
        model = roles.get("model", roles.get(None))
        if base is None or model is None:
            continue
        out.append(Pair(q, result[model], result[base], True))
        paired |= {base, model}
    return out, {k: v for k, v in result.items() if k not in paired}


# ------------------------------------------------------------------------------ the report


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _is_figure(key: str, value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith((".png", ".jpg", ".jpeg", ".webp"))


def _relative(path: str, start: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return path


def _wrap(label: str, items: list[str], width: int = 96) -> list[str]:
    """``items`` joined by `` · `` on lines of at most ``width`` characters, the first led by ``label``."""
    lines: list[str] = []
    line = "  " + label
    for item in items:
        if len(line) + len(item) + 3 > width and line.strip() != label.strip():
            lines.append(line.rstrip(" ·"))
            line = "  " + " " * len(label)
        line += item + " · "
    if items:
        lines.append(line.rstrip(" ·"))
    return lines


def format_report(results: dict[str, Any], *, markdown: bool = False, base: Path | None = None) -> str:
    """``gancore eval``'s table of ``results`` (``{"run", "step", "schedule", <metric>: {...}}``).

    Plain text for a terminal, or Markdown (``markdown=True``: tables, and the figures
    embedded with paths relative to ``base``, the folder the Markdown file is written to).
    """
    head = {k: results[k] for k in ("run", "step", "schedule") if k in results}
    metrics = {k: v for k, v in results.items() if isinstance(v, dict) and k != "options"}
    lines: list[str] = []
    where = f"step {head.get('step', '?')}, schedule {head.get('schedule', '?')}"
    options = ", ".join(f"{m}.{k}={v!r}" for m, kv in results.get("options", {}).items() for k, v in kv.items())
    if options:
        where += f"; options {options}"
    if results.get("weights"):
        where += f"; weights: {results['weights']}"
    if markdown:
        lines += [f"# Evaluation of `{head.get('run', '?')}`", "", where, ""]
    else:
        lines += [f"{head.get('run', '?')}: {where}"]
    for name, result in metrics.items():
        rows, rest = pairs(result)
        numbers = {k: v for k, v in rest.items() if not isinstance(v, str)}
        notes = {k: v for k, v in rest.items() if isinstance(v, str) and not _is_figure(k, v)}
        figures = {k: v for k, v in rest.items() if _is_figure(k, v)}
        if markdown:
            lines += [f"## {name}", ""]
            if rows:
                lines += ["| metric | model | baseline |", "|---|---:|---:|"]
                lines += [f"| {r.quantity} | {_fmt(r.model)} | {_fmt(r.baseline)} |" for r in rows]
                lines.append("")
            if numbers:
                lines += ["| other | value |", "|---|---:|"]
                lines += [f"| {k} | {_fmt(v)} |" for k, v in numbers.items()]
                lines.append("")
            lines += [f"- {k}: {v}" for k, v in notes.items()]
            if notes:
                lines.append("")
            for k, v in figures.items():
                lines += [f"![{k}]({_relative(v, base) if base else v})", ""]
        else:
            lines += ["", name]
            if rows:
                width = max(len("metric"), *(len(r.quantity) for r in rows)) + 2
                lines.append(f"  {'metric':<{width}}{'model':>10}  {'baseline':>10}")
                lines += [f"  {r.quantity:<{width}}{_fmt(r.model):>10}  {_fmt(r.baseline):>10}" for r in rows]
            scalars = [f"{k} {_fmt(v)}" for k, v in numbers.items() if not isinstance(v, (list, tuple))]
            lines += _wrap("also: ", scalars)
            lines += [f"  {k}: {v}" for k, v in notes.items()]
            lines += [f"  figure: {v}" for v in figures.values()]
    return "\n".join(lines).rstrip() + "\n"


def per_sample_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` ``[B, ...]`` over everything but the batch: ``[B]``.

    With ``mask`` (broadcastable to ``values``, 1 where a pixel counts), the mean over the
    masked elements only; NaN for a sample whose mask is empty.
    """
    if mask is None:
        return values.flatten(1).mean(1)
    num = (values * mask).flatten(1).sum(1)
    den = mask.expand_as(values).flatten(1).sum(1)
    return num / den.where(den > 0, torch.full_like(den, float("nan")))


def psnr(mse: _MSE, cap: float = PSNR_CAP) -> _MSE:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2) from their MSE, capped at ``cap``.

    ``mse`` is a float (gives a float) or a tensor (gives a tensor of the same shape).
    """
    if isinstance(mse, torch.Tensor):
        return (10 * torch.log10(4.0 / mse.clamp_min(1e-12))).clamp(max=cap)
    return min(10 * math.log10(4.0 / max(float(mse), 1e-12)), cap)
