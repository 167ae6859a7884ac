"""Exponential moving averages of network weights (``train.ema``).

A GAN's generator weights wander from step to step around where Adam's noisy updates take
them; their running average renders with less of that noise (Karras et al. keep one for
every result they show).  :class:`WeightAverage` keeps a copy of each listed network and,
after every optimizer step of that network, moves the copy's parameters towards the live
ones: ``avg ← avg + (1 − d)(live − avg)`` with ``d = min(decay, (1 + n) / (10 + n))`` after
``n`` steps, so the first steps are not tied to the random initialisation.  Buffers (batch
norm's running statistics) are copied, not averaged.  The copies never train: they are
what sample grids, ``gancore eval`` and the plugin verbs use (``load_run(..., ema=False)``
or ``gancore eval --weights raw`` give the trained weights themselves).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage", "averaged_roles"]


def averaged_roles(resolved: Any) -> list[str]:
    """The roles ``train.ema`` averages: ``train.ema_roles``, or every role the schedule trains."""
    return list(resolved.train.ema_roles or resolved.schedule.optimized_roles())


class WeightAverage:
    """Averaged copies of ``nets[role]`` for each role of ``roles``."""

    def __init__(self, nets: dict[str, nn.Module], roles: list[str], decay: float) -> None:
        self.decay = decay
        self.nets = {r: copy.deepcopy(nets[r]).requires_grad_(False).eval() for r in roles}
        self.updates = {r: 0 for r in roles}
        self._live = {r: nets[r] for r in roles}

    def update(self, roles: tuple[str, ...] | list[str]) -> None:
        """After an optimizer step of ``roles``: move their averages towards the live weights."""
        for role in roles:
            if role not in self.nets:
                continue
            n = self.updates[role]
            d = min(self.decay, (1 + n) / (10 + n))
            avg, live = self.nets[role], self._live[role]
            with torch.no_grad():
                torch._foreach_lerp_(list(avg.parameters()), [p.detach() for p in live.parameters()], 1.0 - d)
                for x, y in zip(avg.buffers(), live.buffers()):
                    x.copy_(y)
            self.updates[role] = n + 1

    def state(self) -> dict[str, int]:
        return dict(self.updates)

    def load_state(self, updates: dict[str, int]) -> None:
        for role, n in updates.items():
            if role in self.updates:
                self.updates[role] = int(n)
