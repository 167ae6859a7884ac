"""Recipes: TOML files that say everything about a training run, validated before
anything runs.

Validation has two stages and reports *every* problem, one line each, as
``file: dotted.key: what is wrong``:

1. structure — the sections and their keys (pydantic, unknown keys are errors);
2. meaning — against the loaded plugins: each ``use`` names a registered part of the
   right kind, each part's own keys fit its Config, the schedule's roles are all filled,
   the data source provides every label the schedule needs, and every loss term reads
   only tensors its phase provides.

``--set key=value`` overrides are applied before validation; values are read as TOML
(``--set train.steps=200``, ``--set optim.betas=[0.5,0.99]``, ``--set data.attribute=Smiling``).
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .registry import Registry, RegistryError

__all__ = ["Recipe", "RecipeError", "Problem", "Resolved", "load_recipe", "parse_recipe", "resolve",
           "apply_overrides", "recipe_schema"]


# ---------------------------------------------------------------------------------------
# errors


@dataclass
class Problem:
    key: str
    message: str


class RecipeError(ValueError):
    """Everything wrong with a recipe, one problem per line."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(f"{self.source}: {p.key + ': ' if p.key else ''}{p.message}" for p in self.problems)


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _pydantic_problems(err: ValidationError, prefix: str, model: type[BaseModel] | None = None) -> list[Problem]:
    out = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        key = prefix
        for x in e["loc"]:
            key += f"[{x}]" if isinstance(x, int) else (f".{x}" if key else str(x))
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            known = _known_keys(model, e["loc"][:-1]) if model else []
            close = difflib.get_close_matches(loc[-1], known, n=2, cutoff=0.6)
            if close:
                msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
            elif known:
                msg += f"; expected one of: {', '.join(known)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a table"
            msg = f"{e['msg'][0].lower() + e['msg'][1:]} (got {shown})"
        out.append(Problem(key, msg))
    return out


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``."""
    cur: Any = model
    skip_key = False
    for part in loc:
        if skip_key:  # the key of a dict[str, Model] field (e.g. a role under optim.per_part)
            skip_key = False
            continue
        if isinstance(part, int) or cur is None:
            continue
        f = getattr(cur, "model_fields", {}).get(part)
        if f is None:
            return []
        ann = f.annotation
        cur = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cur is None:  # dict[str, Model] / list[Model]
            args = getattr(ann, "__args__", ())
            cur = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
            skip_key = getattr(ann, "__origin__", None) is dict
    return _field_names(cur) if cur else []


# ---------------------------------------------------------------------------------------
# structure


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A table with ``use`` plus the part's own keys (checked in stage 2)."""

    model_config = ConfigDict(extra="allow")


class RecipeMeta(_Strict):
    name: str = Field(..., min_length=1, description="run name; the default output dir is runs/<name>")
    plugins: list[str] = Field(default_factory=list, description="plugins the recipe needs")
    description: str = ""


class DataSection(_Open):
    source: str = Field("synthfaces", description="registered data source; its Config takes the other keys")


class PartRef(_Open):
    use: str = Field(..., description="registered part name")


class LossRef(_Open):
    use: str = Field(..., description="registered loss term")
    phase: str | list[str] | None = Field(None, description="phase(s) the term applies to")


class OptimOverride(_Strict):
    lr: float | None = Field(None, gt=0)
    betas: tuple[float, float] | None = None
    weight_decay: float | None = Field(None, ge=0)


class OptimSection(_Strict):
    lr: float = Field(2e-4, gt=0, description="Adam learning rate")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas")
    weight_decay: float = Field(0.0, ge=0)
    per_part: dict[str, OptimOverride] = Field(default_factory=dict, description="overrides by role")
    implementation: Literal["auto", "loop", "foreach", "fused"] = Field(
        "auto", description="Adam's kernels: torch's choice, a per-tensor loop, foreach (multi-tensor) or fused")


class TrainSection(_Strict):
    steps: int = Field(1000, ge=1, description="iterations (each runs every phase once)")
    batch_size: int = Field(16, ge=1, description="per process, per stream (a grouped stream counts groups)")
    stream_batch_size: dict[str, int] = Field(
        default_factory=dict, description="batch size of particular streams, by stream name: {untagged = 64}"
    )
    seed: int = 0
    precision: Literal["no", "fp16", "bf16", "auto"] = Field(
        "no", description="'no' (fp32), 'bf16' or 'fp16' autocast; 'auto': bf16 where the device computes it "
        "natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU with bf16), else fp32"
    )
    grad_accum: int = Field(1, ge=1, description="micro-batches per step (batch_size must divide evenly)")
    log_every: int = Field(10, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(False, description="torch.compile each network (eager fallback on failure)")
    channels_last: bool = False
    nan_check: bool = Field(True, description="stop on a NaN/Inf loss, naming the term and step")
    init_from: str | None = Field(None, description="checkpoint dir whose weights start this run (fine-tuning)")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: torch's choice)")
    ema: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving average of the weights "
                              "with this decay per step (e.g. 0.998); samples, eval and the verbs then use it")
    ema_roles: list[str] = Field(default_factory=list, description="the roles averaged (default: every trained role)")


class OutputSection(_Strict):
    dir: str | None = Field(None, description="run folder (default runs/<recipe.name>)")
    sample_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    keep_last: int = Field(3, ge=1, description="checkpoints kept")
    num_samples: int = Field(8, ge=1, description="held-out images in each sample grid")
    tensorboard: bool = False


class Recipe(_Strict):
    recipe: RecipeMeta
    data: DataSection = Field(default_factory=DataSection)
    parts: dict[str, PartRef] = Field(default_factory=dict)
    schedule: PartRef
    losses: list[LossRef] = Field(default_factory=list)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)

    def extras(self, table: BaseModel, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: v for k, v in (table.model_extra or {}).items() if k not in skip}

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir or f"runs/{self.recipe.name}")


def recipe_schema() -> dict[str, Any]:
    """JSON Schema of the recipe structure (part tables accept their part's keys)."""
    return Recipe.model_json_schema()


# ---------------------------------------------------------------------------------------
# overrides


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[Problem]:
    """Apply ``key.path=value`` overrides in place; returns problems with malformed ones."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem("--set", f"{item!r} is not KEY=VALUE (e.g. train.steps=200)"))
            continue
        cur: Any = data
        parts = re.sub(r"\[(\d+)\]", r".\1", key).split(".")  # losses[0].weight == losses.0.weight
        try:
            for i, p in enumerate(parts[:-1]):
                if isinstance(cur, list):
                    cur = cur[int(p)]
                else:
                    nxt = cur.setdefault(p, {})
                    if not isinstance(nxt, (dict, list)):
                        raise TypeError(f"{'.'.join(parts[: i + 1])} is a value, not a table")
                    cur = nxt
            last = parts[-1]
            if isinstance(cur, list):
                cur[int(last)] = _parse_value(value.strip())
            else:
                cur[last] = _parse_value(value.strip())
        except (ValueError, IndexError, TypeError) as e:
            problems.append(Problem("--set", f"cannot set {key!r}: {e}"))
    return problems


# ---------------------------------------------------------------------------------------
# loading


def _prune(data: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """A copy of ``data`` without the keys that ``problems`` name."""
    out = json.loads(json.dumps(data))
    for p in problems:
        if not p.key or p.message.startswith("required"):
            continue
        parts = p.key.replace("[", ".").replace("]", "").split(".")
        cur: Any = out
        for part in parts[:-1]:
            cur = cur[int(part)] if isinstance(cur, list) and part.isdigit() else (cur.get(part) if isinstance(cur, dict) else None)
            if cur is None:
                break
        else:
            last = parts[-1]
            if isinstance(cur, dict):
                cur.pop(last, None)
    return out


def parse_recipe(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Stage 1: the structure only."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(source, _pydantic_problems(e, "", Recipe)) from None


def load_recipe(path: str | Path | dict[str, Any], overrides: list[str] | None = None,
                registry: Registry | None = None) -> Resolved:
    """Read, override and fully validate a recipe; raises :class:`RecipeError`."""
    if isinstance(path, dict):
        data, source = json.loads(json.dumps(path)), "<recipe>"
    else:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise RecipeError(source, [Problem("", "no such recipe file" if not p.exists() else "not a file")])
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(source, [Problem("", f"invalid TOML: {e}")]) from None
        except UnicodeDecodeError:
            raise RecipeError(source, [Problem("", "not a UTF-8 text file")]) from None
    problems = apply_overrides(data, overrides or [])
    if problems:
        raise RecipeError(source, problems)
    try:
        recipe = parse_recipe(data, source)
    except RecipeError as first:
        # Report stage-2 problems too where possible: drop the offending keys and retry.
        pruned = _prune(data, first.problems)
        try:
            recipe = parse_recipe(pruned, source)
        except RecipeError:
            raise first from None
        if registry is None:
            from .plugins import get_host

            registry = get_host().registry
        try:
            resolve(recipe, registry, source)
        except RecipeError as second:
            raise RecipeError(source, first.problems + second.problems) from None
        raise first from None
    if registry is None:
        from .plugins import get_host

        registry = get_host().registry
    return resolve(recipe, registry, source)


# ---------------------------------------------------------------------------------------
# meaning


@dataclass
class Resolved:
    """A recipe validated against the registry, with every part's typed Config."""

    recipe: Recipe
    source: str
    data_spec: Any
    data_config: Any
    schedule_spec: Any
    schedule: Any  # the Schedule instance
    parts: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # role -> (spec, config)
    phase_losses: dict[str, list[Any]] = field(default_factory=dict)  # phase -> LossTerm list

    # convenient pass-throughs
    @property
    def train(self) -> TrainSection:
        return self.recipe.train

    @property
    def output(self) -> OutputSection:
        return self.recipe.output

    @property
    def optim(self) -> OptimSection:
        return self.recipe.optim

    @property
    def name(self) -> str:
        return self.recipe.recipe.name

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    def add_loss(self, loss: Any, phases: str | list[str] | None = None) -> None:
        """Add a LossTerm or a LossSum (``a + 0.1 * b``) from Python to ``phases``
        (default: the phases that take extra terms), checking what each term reads."""
        from .losses import LossSum

        terms = list(loss.terms) if isinstance(loss, LossSum) else [loss]
        names = [phases] if isinstance(phases, str) else phases
        if names is None:
            names = [p.name for p in self.schedule.phases() if p.accepts_extra_losses]
        provides = {p.name: set(p.provides) for p in self.schedule.phases()}
        for phase in names:
            if phase not in provides:
                raise ValueError(f"no phase {phase!r}; phases: {', '.join(provides)}")
            for term in terms:
                problem = _reads_problem(term, term.name, phase, provides[phase])
                if problem:
                    raise ValueError(problem)
                if any(t.name == term.name for t in self.phase_losses[phase]):
                    raise ValueError(f"phase {phase!r} already has a term named {term.name!r}; pass name=...")
        for phase in names:
            self.phase_losses[phase].extend(terms)

    def as_dict(self) -> dict[str, Any]:
        """The fully resolved recipe: every default filled in, as plain data."""
        r = self.recipe
        out = r.model_dump(mode="json", exclude={"data", "parts", "schedule", "losses"})
        out["data"] = {"source": r.data.source, **self.data_config.model_dump(mode="json")}
        out["parts"] = {role: {"use": spec.name, **cfg.model_dump(mode="json")} for role, (spec, cfg) in self.parts.items()}
        out["schedule"] = {"use": self.schedule_spec.name, **self.schedule.config.model_dump(mode="json")}
        out["losses"] = [ref.model_dump(mode="json") for ref in r.losses]
        out["output"]["dir"] = str(self.run_dir)
        return out


def _reads_problem(term: Any, name: str, phase: str, provides: set[str]) -> str | None:
    """What is wrong if ``term`` reads a tensor ``phase`` does not provide, else None."""
    missing = [src for src in term.sources.values() if src not in provides]
    if not missing:
        return None
    return (f"loss {name!r} reads {missing[0]!r}, which phase {phase!r} does not provide "
            f"(it provides: {', '.join(sorted(provides)) or 'nothing'}); rename with inputs = {{...}} or pick "
            f"another phase")


def _reads_ok(term: Any, name: str, phase: str, provides: set[str], key: str, problems: list[Problem]) -> bool:
    """Whether ``term`` reads only tensors ``phase`` provides; records the problem if not."""
    problem = _reads_problem(term, name, phase, provides)
    if problem:
        problems.append(Problem(key, problem))
    return problem is None


def _validate_config(cls: type, values: dict[str, Any], prefix: str, problems: list[Problem]) -> Any:
    try:
        return cls.Config(**values)
    except ValidationError as e:
        problems.extend(_pydantic_problems(e, prefix, cls.Config))
    except (TypeError, ValueError) as e:
        problems.append(Problem(prefix, str(e)))
    return None


def _get(registry: Registry, name: str, kind: str, key: str, problems: list[Problem]) -> Any:
    try:
        spec = registry.get(name, kind)
        spec.load()
        return spec
    except RegistryError as e:
        problems.append(Problem(key, str(e)))
        return None


def resolve(recipe: Recipe, registry: Registry, source: str = "<recipe>") -> Resolved:
    """Stage 2: check the recipe against the registry; raises RecipeError with every problem."""
    from .plugins import get_host

    problems: list[Problem] = []
    # -- required plugins ------------------------------------------------------------------
    host = get_host() if registry is get_host().registry else None
    for i, plugin in enumerate(recipe.recipe.plugins):
        owners = {s.plugin for s in registry}
        if plugin in owners:
            continue
        status = host.statuses.get(plugin) if host else None
        if status and status.state == "failed":
            why = f"plugin {plugin!r} failed to load: {status.error}"
        elif status and status.state in ("disabled", "skipped"):
            why = f"plugin {plugin!r} is installed but {status.state} (see GANCORE_LOAD_PLUGINS / --disable)"
        else:
            from .registry import distribution_of

            dist = distribution_of(plugin)
            why = f"plugin {plugin!r} is not installed; pip install {dist}"
        problems.append(Problem(f"recipe.plugins[{i}]", why))

    # -- data ------------------------------------------------------------------------------
    data_spec = _get(registry, recipe.data.source, "data", "data.source", problems)
    data_config = None
    if data_spec:
        data_config = _validate_config(data_spec.load(), recipe.extras(recipe.data, ("source",)), "data", problems)

    # -- schedule --------------------------------------------------------------------------
    sched_spec = _get(registry, recipe.schedule.use, "schedule", "schedule.use", problems)
    schedule = None
    if sched_spec:
        cfg = _validate_config(sched_spec.load(), recipe.extras(recipe.schedule, ("use",)), "schedule", problems)
        if cfg is not None:
            try:
                schedule = sched_spec.build(cfg)
            except (ValueError, TypeError) as e:
                problems.append(Problem("schedule", str(e)))

    # -- parts -----------------------------------------------------------------------------
    parts: dict[str, tuple[Any, Any]] = {}
    roles = schedule.roles if schedule else {}
    for role, ref in recipe.parts.items():
        key = f"parts.{role}"
        if schedule and role not in roles:
            problems.append(Problem(key, f"schedule {sched_spec.name!r} has no role {role!r}; its roles are "
                                         f"{', '.join(f'{r} ({k})' for r, k in roles.items())}"))
            continue
        spec = _get(registry, ref.use, roles.get(role), f"{key}.use", problems)
        if spec:
            cfg = _validate_config(spec.load(), recipe.extras(ref, ("use",)), key, problems)
            if cfg is not None:
                parts[role] = (spec, cfg)
    for role, kind in roles.items():
        if role not in recipe.parts:
            problems.append(Problem("parts", f"schedule {sched_spec.name!r} needs a {kind} in role {role!r}: "
                                             f"add a [parts.{role}] table with `use = ...`"))

    # -- labels ----------------------------------------------------------------------------
    if schedule and data_spec and data_config is not None:
        have = set(data_spec.load().provided_labels(data_config))
        needed = list(schedule.required_labels())
        for stream in schedule.streams().values():
            needed += stream.labels_needed()
        for label in dict.fromkeys(needed):
            if label not in have:
                hint = "; set data.attribute to the binary label to edit" if label == "attribute" else ""
                problems.append(Problem("data.source", f"schedule {sched_spec.name!r} needs label {label!r}, which data "
                                                       f"source {data_spec.name!r} does not provide (it provides: "
                                                       f"{', '.join(sorted(have)) or 'none'}){hint}"))
        for i, label in enumerate(getattr(data_config, "partial_labels", [])):
            if label not in have:
                problems.append(Problem(f"data.partial_labels[{i}]", f"label {label!r} is not provided by data source "
                                                                     f"{data_spec.name!r} (it provides: "
                                                                     f"{', '.join(sorted(have)) or 'none'})"))

    # -- losses ----------------------------------------------------------------------------
    phase_losses: dict[str, list[Any]] = {}
    if schedule:
        try:
            phases = schedule.phases()
        except (ValueError, TypeError) as e:
            problems.append(Problem("schedule", str(e)))
            phases = []
        phase_losses = {p.name: list(p.losses) for p in phases}
        provides = {p.name: set(p.provides) for p in phases}
        extra_default = [p.name for p in phases if p.accepts_extra_losses]
        for i, ref in enumerate(recipe.losses):
            key = f"losses[{i}]"
            spec = _get(registry, ref.use, "loss", f"{key}.use", problems)
            if not spec:
                continue
            cls = spec.load()
            given = recipe.extras(ref, ("use", "phase"))
            want_name = given.get("name")
            targets = [ref.phase] if isinstance(ref.phase, str) else ref.phase
            if targets is not None:
                bad = [t for t in targets if t not in phase_losses]
                if bad:
                    problems.append(Problem(f"{key}.phase", f"no phase {bad[0]!r}; phases: {', '.join(phase_losses)}"))
                    continue
            else:  # default: where a term of this class already is, else the extra-loss phases
                targets = [p for p, ts in phase_losses.items()
                           if any(type(t) is cls and (want_name is None or t.name == want_name) for t in ts)]
                targets = targets or extra_default
                if not targets:
                    problems.append(Problem(key, "the schedule takes no extra loss terms without a `phase` key"))
                    continue
            for phase in targets:
                terms = phase_losses[phase]
                matches = [j for j, t in enumerate(terms)
                           if ((t.name == want_name) if want_name else (type(t) is cls))]
                if len(matches) > 1:
                    names = ", ".join(terms[j].name for j in matches)
                    problems.append(Problem(key, f"phase {phase!r} has several {spec.name!r} terms ({names}); "
                                                 f"add `name = ...` to pick one, or a new name to add a term"))
                    continue
                if matches:  # override the schedule's default term
                    j = matches[0]
                    old = terms[j]
                    if type(old) is cls:  # same term: the recipe's keys change the default's
                        merged = {**old.config.model_dump(exclude_defaults=True), **given}
                    else:  # another term under the default's name replaces it, reading what it read
                        merged = dict(given)
                        carried = {r: src for r, src in old.config.inputs.items() if r in cls.reads}
                        if "inputs" not in given and carried:
                            merged["inputs"] = carried
                        merged.setdefault("name", old.name)
                    new = _validate_config(cls, merged, key, problems)
                    if new is None:
                        continue
                    try:
                        term = cls(new)
                    except (ValueError, TypeError) as e:
                        problems.append(Problem(key, str(e)))
                        continue
                    term.default_name = old.default_name if type(old) is cls else spec.name
                    if _reads_ok(term, term.name, phase, provides[phase], key, problems):
                        terms[j] = term
                    continue
                cfg = _validate_config(cls, given, key, problems)
                if cfg is None:
                    continue
                try:
                    term = spec.build(cfg)
                except (ValueError, TypeError) as e:
                    problems.append(Problem(key, str(e)))
                    continue
                if not _reads_ok(term, spec.name, phase, provides[phase], key, problems):
                    continue
                if any(t.name == term.name for t in terms):
                    problems.append(Problem(key, f"phase {phase!r} already has a term named {term.name!r}; set `name`"))
                    continue
                terms.append(term)
        roles_optimized = schedule.optimized_roles()
        for role in recipe.optim.per_part:
            if role not in roles_optimized:
                problems.append(Problem(f"optim.per_part.{role}", f"no trained role {role!r}; trained roles: "
                                                                  f"{', '.join(roles_optimized)}"))
        for role in recipe.train.ema_roles:
            if role not in roles_optimized:
                problems.append(Problem("train.ema_roles", f"no trained role {role!r} to average; trained roles: "
                                                           f"{', '.join(roles_optimized)}"))
        if recipe.train.ema_roles and recipe.train.ema is None:
            problems.append(Problem("train.ema_roles", "set train.ema (the decay, e.g. 0.998) as well"))

    t = recipe.train
    if schedule:
        streams = schedule.streams()
        for name, size in t.stream_batch_size.items():
            if name not in streams:
                problems.append(Problem(f"train.stream_batch_size.{name}", f"schedule {sched_spec.name!r} draws no "
                                                                           f"stream {name!r}; its streams: "
                                                                           f"{', '.join(streams)}"))
            elif size < 1:
                problems.append(Problem(f"train.stream_batch_size.{name}", f"must be at least 1 (got {size})"))
        for name, stream in streams.items():
            size = t.stream_batch_size.get(name) or stream.batch_size or t.batch_size
            if size % t.grad_accum:
                where = (f"train.stream_batch_size.{name}" if name in t.stream_batch_size
                         else "train.batch_size" if not stream.batch_size else f"stream {name!r}'s batch size")
                problems.append(Problem("train.grad_accum", f"{t.grad_accum} does not divide the batch size of stream "
                                                            f"{name!r} ({where} = {size})"))
    if problems:
        raise RecipeError(source, problems)
    return Resolved(recipe=recipe, source=source, data_spec=data_spec, data_config=data_config,
                    schedule_spec=sched_spec, schedule=schedule, parts=parts, phase_losses=phase_losses)
