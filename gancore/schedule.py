"""Schedules: a paper's training algorithm, written as data.

A :class:`Schedule` names the network *roles* it needs (``{"G0": "generator", "D":
"discriminator"}``), the data *streams* it draws each iteration (``x0``: images without
the attribute, ``x1``: with it), and the ordered :class:`Phase` list of one iteration.

A phase says which roles step (``trains``), how to compute the tensors its losses read
(``run``, which fills the shared :class:`Context`), which tensors that makes available
(``provides``, checked against every loss term's ``reads`` before training starts), its
default loss terms, and when it runs (``every`` n iterations, and optionally only ``when``
a condition on the schedule's state holds: DR-GAN's "1 D : 4 G once D is strong").

The contract is safe by construction; a schedule author never detaches for correctness,
never touches ``requires_grad`` and never reasons about graph lifetimes:

- **Forward results are shared.** ``ctx.once("fake0", lambda: ctx.nets.G0(x0))`` runs
  ``G0(x0)`` the first time any phase asks and hands the same result, with its graph, to
  every later phase of the iteration.  When a network it used has stepped since, ``once``
  computes it again, so a result is never backpropagated through stale weights.
  ``ctx.value(key, fn)`` gives the numbers without a graph; ``pre_step=True`` gives the
  numbers from before the networks stepped, which is what a *simultaneous* update uses.
- **Gradients go where the phase says.** Each phase's objective is backpropagated into the
  parameters of the roles it ``trains`` and nothing else; networks that no phase of the
  iteration trains run without a graph.  A phase whose non-zero objective gives one of its
  trained roles no gradient is an error naming the phase and role, and a result kept
  outside the context and backpropagated after its network stepped raises
  :class:`StaleResult`.
- **BatchNorm statistics follow the training forward.** A forward updates a network's
  running statistics only if the running phase trains that network, or the forward makes
  a shared (``ctx.once``) result and some phase of this iteration trains it.  Elsewhere
  (D judging a fake in G's phase, ResGAN's dual pass) the network normalises with batch
  statistics but leaves its running statistics alone; ``Phase.updates_stats`` overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .losses import LossTerm
from .parts import Config, DataInfo, make_config

__all__ = ["Phase", "Stream", "Schedule", "Context", "Nets", "Ledger", "StaleResult", "PartError", "ROLE_KINDS",
           "describe"]

#: the kinds a schedule may ask for as a role.
ROLE_KINDS = ("encoder", "generator", "discriminator", "network")


class StaleResult(RuntimeError):
    """A forward result was backpropagated after the network that made it had stepped."""


class PartError(ValueError):
    """A part cannot be built for the data, or does not accept what the schedule passes it."""


def describe(obj: Any) -> str:
    """A short description of a value for error messages: ``Tensor[2, 3, 64, 64] float32``."""
    if isinstance(obj, torch.Tensor):
        return f"Tensor[{', '.join(map(str, obj.shape))}] {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        inner = f" (first: {describe(obj[0])})" if obj else ""
        return f"{type(obj).__name__} of {len(obj)}{inner}"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return repr(obj)
    return type(obj).__name__


@dataclass(frozen=True)
class Stream:
    """One batch drawn per iteration.

    :param where: keep only samples whose labels equal these values, e.g. ``{"attribute": 1}``.
    :param batch_size: this stream's batch size (``None``: ``train.batch_size``); a recipe
        overrides it with ``train.stream_batch_size = {name = n}``.
    :param group_by: draw groups of samples sharing this label's value (multi-image DR-GAN
        fuses several images of one identity).  The batch then holds ``batch_size`` groups
        of up to ``group_size`` samples each, group after group, and carries ``"group"``
        ``[N]`` (0 … groups − 1).  A value with fewer samples makes a smaller group; values
        with fewer than ``min_group`` samples are left out, counted and reported.
    :param labeled: keep only samples whose listed labels are present (not missing).
    :param unlabeled: keep only samples whose listed labels are all missing.
    """

    where: Mapping[str, int] = field(default_factory=dict)
    batch_size: int | None = None
    group_by: str | None = None
    group_size: int = 1
    min_group: int = 1
    labeled: tuple[str, ...] = ()
    unlabeled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"Stream.batch_size must be at least 1, got {self.batch_size}")
        if self.group_size < 1 or not 1 <= self.min_group <= self.group_size:
            raise ValueError(f"Stream needs 1 <= min_group <= group_size, got {self.min_group} and {self.group_size}")
        both = set(self.labeled) & set(self.unlabeled)
        if both:
            raise ValueError(f"Stream asks for labels {sorted(both)} both present and missing")

    def labels_needed(self) -> list[str]:
        """Every label this stream filters or groups on."""
        out = [*self.where, *self.labeled, *self.unlabeled]
        return out + [self.group_by] if self.group_by else out


@dataclass
class Phase:
    """One step of an iteration: which roles step on which losses.

    :param when: ``when(ctx) -> bool``, evaluated when an iteration on which the phase is
        due starts (before any phase runs), from ``ctx.state`` and ``ctx.step``; the phase
        runs only if it is true.  With several processes, rank 0's answer is used.
    :param updates_stats: roles whose BatchNorm running statistics this phase's forwards
        update although the phase does not train them.
    """

    name: str
    trains: tuple[str, ...]
    run: Callable[[Context], None]
    provides: tuple[str, ...] = ()
    losses: list[LossTerm] = field(default_factory=list)
    every: int = 1
    when: Callable[[Context], bool] | None = None
    updates_stats: tuple[str, ...] = ()
    #: whether loss terms added by a recipe without a ``phase`` key attach here.
    accepts_extra_losses: bool = False


# ---------------------------------------------------------------------------------------
# the bookkeeping the engine shares with every context


class Ledger:
    """Per-run bookkeeping the engine shares with the contexts: how often each role has
    stepped, which roles this iteration and this phase train, and each role's norm layers.

    :param plain: the networks by role; :param wrapped: what to call instead (compiled
        modules), by role.
    """

    def __init__(self, plain: Mapping[str, nn.Module], wrapped: Mapping[str, nn.Module] | None = None) -> None:
        self.plain = dict(plain)
        self.wrapped = dict(wrapped or plain)
        self.versions = {role: 0 for role in self.plain}
        self.stepped_in = {role: "" for role in self.plain}
        self.iteration: frozenset[str] = frozenset()  # roles some phase of this iteration trains
        self.phase = ""
        self.trains: frozenset[str] = frozenset()
        self.stats: frozenset[str] = frozenset()  # roles whose running stats the phase may update
        self._norms = {role: [m for m in net.modules() if isinstance(m, _NormBase) and m.track_running_stats]
                       for role, net in self.plain.items()}
        self._tracking = {role: True for role in self.plain}

    def begin_phase(self, phase: Phase) -> None:
        self.phase = phase.name
        self.trains = frozenset(phase.trains)
        self.stats = frozenset(phase.trains) | frozenset(phase.updates_stats)

    def stepped(self, roles: tuple[str, ...], phase: str) -> None:
        for role in roles:
            self.versions[role] += 1
            self.stepped_in[role] = phase

    def track_stats(self, role: str, on: bool) -> None:
        """Let ``role``'s norm layers update their running statistics, or not (they use
        batch statistics either way in train mode)."""
        if self._tracking[role] != on:
            for m in self._norms[role]:
                m.track_running_stats = on
            self._tracking[role] = on

    def restore(self) -> None:
        for role in self.plain:
            self.track_stats(role, True)


class _Guard(torch.autograd.Function):
    """Identity on a network's output that checks, when gradient flows back through it,
    that the network has not stepped since the output was made."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, check: Callable[[], None]) -> torch.Tensor:  # noqa: ANN401
        ctx.check = check
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        ctx.check()
        return grad, None


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it (tensors, tuples, NamedTuples, lists,
    dicts and dataclasses of them); anything else is returned unchanged."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        items = [map_tensors(x, fn) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [map_tensors(x, fn) for x in obj]
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def _detach(obj: Any) -> Any:
    return map_tensors(obj, torch.Tensor.detach)


class _Net:
    """A network as a phase calls it: records who made what, decides whether its BatchNorm
    running statistics update, and guards its outputs against stale reuse."""

    __slots__ = ("_role", "_ctx")

    def __init__(self, role: str, ctx: Context) -> None:
        self._role, self._ctx = role, ctx

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx, role = self._ctx, self._role
        ledger = ctx._ledger
        for frame in ctx._frames:
            frame.add(role)
        shared = bool(ctx._frames)  # making a ctx.once result: the network's training forward
        ledger.track_stats(role, role in ledger.stats or (shared and role in ledger.iteration))
        try:
            out = ledger.wrapped[role](*args, **kwargs)
        except (TypeError, ValueError, RuntimeError, IndexError) as e:
            if isinstance(e, (PartError, StaleResult)):
                raise
            module = ledger.plain[role]
            shown = ", ".join([describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()])
            raise PartError(
                f"phase {ctx.phase or '?'!r} called role {role!r} ({type(module).__name__}) as {role}({shown}), "
                f"which failed: {type(e).__name__}: {e}. Does the part's forward take what this schedule passes "
                f"(see `gancore parts --kind schedule --details`)?"
            ) from e
        version, made_in, step = ledger.versions[role], ledger.phase, ctx.step

        def check() -> None:
            if ledger.versions[role] != version:
                raise StaleResult(
                    f"phase {ledger.phase!r} backpropagates through an output of role {role!r} made in phase "
                    f"{made_in!r} of step {step}, but {role} has stepped since (in phase {ledger.stepped_in[role]!r}): "
                    f"the gradient would be computed with its old weights. Make the result with ctx.once(key, fn), "
                    f"which recomputes it after a step, instead of keeping it across phases"
                )

        return map_tensors(out, lambda t: _Guard.apply(t, check) if t.requires_grad else t)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx._ledger.plain[self._role], name)

    def __repr__(self) -> str:
        return f"<network {self._role!r} as phase {self._ctx.phase!r} calls it>"


class Nets:
    """The networks as a phase sees them: ``ctx.nets.G0(x)``, ``ctx.nets["G0"](x)``.

    Always call networks through this view (it is what keeps the contract above);
    ``plain(role)`` is the module itself, for reading its config or attributes.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getitem__(self, role: str) -> _Net:
        if role not in self._ctx._ledger.plain:
            raise KeyError(f"no network in role {role!r}; roles: {sorted(self._ctx._ledger.plain)}")
        return _Net(role, self._ctx)

    def __getattr__(self, role: str) -> _Net:
        if role.startswith("_"):
            raise AttributeError(role)
        try:
            return self[role]
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def __contains__(self, role: object) -> bool:
        return role in self._ctx._ledger.plain

    def roles(self) -> list[str]:
        return list(self._ctx._ledger.plain)

    def plain(self, role: str) -> nn.Module:
        """The role's own module (for reading its config), never a compiled wrapper."""
        return self._ctx._ledger.plain[role]


# ---------------------------------------------------------------------------------------
# the context


class _Frame(set):
    """The roles called while one shared result is being made."""


@dataclass
class _Shared:
    fn: Callable[[], Any]
    result: Any  # None once a network it used has stepped (graph released)
    first: Any  # detached numbers of the first computation this iteration
    versions: dict[str, int]
    made_in: str


class Context(MutableMapping):
    """The tensors of one (micro-)batch, shared by the phases of one iteration.

    Mapping access is what loss terms read: ``ctx[key] = t`` stores a tensor for the
    running phase (cleared when the phase ends); reading a key finds the phase's own
    tensors first, then the iteration's shared results (:meth:`once`).

    Attributes: ``step``; ``batch`` (stream name → ``{"image": …, labels…}``); ``nets``
    (:class:`Nets`); ``info`` (:class:`~gancore.parts.DataInfo`); ``phase`` (the running
    phase's name); ``state`` (a dict that persists across iterations and is saved in
    checkpoints: numbers a ``Phase.when`` condition reads).
    """

    def __init__(self, *, step: int, batch: dict[str, dict[str, torch.Tensor]], info: DataInfo | None = None,
                 ledger: Ledger | None = None, state: dict[str, Any] | None = None) -> None:
        self.step = step
        self.batch = batch
        self.info = info or DataInfo()
        self.state = {} if state is None else state
        self.phase = ""
        self._ledger = ledger if ledger is not None else Ledger({})
        self._local: dict[str, Any] = {}
        self._shared: dict[str, _Shared] = {}
        self._frames: list[_Frame] = []
        self.nets = Nets(self)

    # -- shared forward results ---------------------------------------------------------
    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, computed the first time any phase asks and shared, with its graph, by
        every later phase of the iteration; computed again if a network it used has
        stepped since."""
        entry = self._shared.get(key)
        if entry is not None and entry.result is not None and not self._stale(entry):
            for frame in self._frames:  # an enclosing shared result depends on this one's networks
                frame.update(entry.versions)
            return entry.result
        frame = _Frame()
        self._frames.append(frame)
        try:
            result = fn()
        finally:
            self._frames.pop()
        versions = {role: self._ledger.versions[role] for role in frame}
        first = entry.first if entry is not None else _detach(result)
        self._shared[key] = _Shared(fn, result, first, versions, self.phase)
        return result

    def value(self, key: str, fn: Callable[[], Any], *, pre_step: bool = False) -> Any:
        """The numbers of the shared result ``key`` (see :meth:`once`), without a graph.

        With ``pre_step=True``: the numbers as first computed in this iteration, even if
        the networks that made them have stepped since — what a simultaneous update of
        several networks from one forward pass uses (CAAE's official code).
        """
        entry = self._shared.get(key)
        if pre_step and entry is not None:
            return entry.first
        return _detach(self.once(key, fn))

    def _stale(self, entry: _Shared) -> bool:
        return any(self._ledger.versions[r] != v for r, v in entry.versions.items())

    def release(self, roles: tuple[str, ...]) -> None:
        """Drop the graphs of shared results that ``roles`` (which just stepped) made."""
        for entry in self._shared.values():
            if entry.result is not None and any(r in entry.versions for r in roles):
                entry.result = None

    def end_phase(self) -> None:
        self._local.clear()
        self.phase = ""

    # -- mapping: what loss terms read ----------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in self._local:
            return self._local[key]
        entry = self._shared.get(key)
        if entry is None:
            raise KeyError(key)
        return self.once(key, entry.fn)

    def __setitem__(self, key: str, value: Any) -> None:
        self._local[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._local:
            del self._local[key]
        else:
            del self._shared[key]

    def __contains__(self, key: object) -> bool:
        return key in self._local or key in self._shared

    def __iter__(self) -> Iterator[str]:
        yield from self._local
        yield from (k for k in self._shared if k not in self._local)

    def __len__(self) -> int:
        return len(self._local.keys() | self._shared.keys())

    def __repr__(self) -> str:
        return f"Context(step={self.step}, phase={self.phase!r}, keys={sorted(self)})"


class Schedule:
    """Base of every schedule.  Subclasses set ``roles`` and implement ``phases``."""

    Config: ClassVar[type[Config]] = Config
    kind: ClassVar[str] = "schedule"
    #: role name → kind of part it takes (one of :data:`ROLE_KINDS`).
    roles: ClassVar[dict[str, str]] = {}
    #: role name → how the schedule calls it, for part authors (``gancore parts --details``):
    #: e.g. ``"G(z [B, z_dim], label [B] | None) -> image [B, C, R, R]"``.
    calls: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = make_config(type(self), config, overrides)

    def required_labels(self) -> tuple[str, ...]:
        """Labels the data source must provide (beyond ``image``)."""
        return ()

    def streams(self) -> dict[str, Stream]:
        """The batches drawn each iteration; by default one unfiltered ``batch``."""
        return {"batch": Stream()}

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def optimized_roles(self) -> list[str]:
        """Roles that get an optimizer: every role some phase trains."""
        out: list[str] = []
        for p in self.phases():
            out += [r for r in p.trains if r not in out]
        return out

    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], batch: dict[str, dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Rows of the sample grid: ``[(label, images [N, C, H, W] in [-1, 1]), ...]``."""
        return []

    def describe(self) -> dict[str, Any]:
        """What the schedule does, as data (its roles and how it calls them, streams, phases,
        the tensors each phase provides and its default loss terms): ``gancore parts
        --kind schedule --details NAME`` prints it, docs/schedules.md is generated from it."""
        def term(t: LossTerm) -> dict[str, Any]:
            c = t.config
            extra = {k: v for k, v in c.model_dump(mode="json").items()
                     if k not in ("weight", "start", "ramp", "inputs", "name")}
            return {"name": t.name, "class": type(t).__name__, "reads": t.sources, "weight": c.weight,
                    "start": c.start, "ramp": c.ramp, "options": extra}

        def stream(st: Stream) -> dict[str, Any]:
            return {"where": dict(st.where), "batch_size": st.batch_size, "group_by": st.group_by,
                    "group_size": st.group_size, "min_group": st.min_group, "labeled": list(st.labeled),
                    "unlabeled": list(st.unlabeled)}

        return {
            "roles": {r: {"kind": k, "call": self.calls.get(r, "")} for r, k in self.roles.items()},
            "streams": {n: stream(st) for n, st in self.streams().items()},
            "labels": list(self.required_labels()),
            "phases": [{"name": p.name, "trains": list(p.trains), "every": p.every, "conditional": p.when is not None,
                        "provides": list(p.provides), "losses": [term(t) for t in p.losses],
                        "extra_losses": p.accepts_extra_losses, "updates_stats": list(p.updates_stats)}
                       for p in self.phases()],
        }
