"""Human-readable descriptions of registered parts: what ``gancore parts --details NAME``
prints, and what docs/schedules.md is generated from (``python -m gancore.describe``)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["part_details", "schedule_page"]


def _fields(config_cls: type, code: Any = str) -> list[str]:
    out = []
    for name, f in config_cls.model_fields.items():
        default = f.default if f.default_factory is None else f.default_factory()
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        out.append(f"{code(name)} ({ann}, default {code(repr(default))}): {f.description or ''}".rstrip(": "))
    return out


def _weight(t: dict[str, Any]) -> str:
    w = f"weight {t['weight']:g}"
    if t["start"] or t["ramp"]:
        w += f", from step {t['start']}" + (f" rising over {t['ramp']} steps" if t["ramp"] else "")
    return w


def _stream(s: dict[str, Any]) -> str:
    parts = [f"{k} = {v}" for k, v in s["where"].items()]
    parts += [f"{k} present" for k in s["labeled"]] + [f"{k} missing" for k in s["unlabeled"]]
    text = ", ".join(parts) or "every sample"
    if s["group_by"]:
        text += (f"; groups of up to {s['group_size']} sharing {s['group_by']}"
                 + (f" (at least {s['min_group']})" if s["min_group"] > 1 else "") + ", batch counts groups")
    size = s["batch_size"] or "train.batch_size"
    return f"{text}; batch {size} (train.stream_batch_size overrides)"


def schedule_lines(name: str, spec: Any, markdown: bool = False) -> list[str]:
    """The description of schedule ``name`` (a registry spec), as lines of text or Markdown."""
    cls = spec.load()
    d = cls().describe()
    code = (lambda x: f"`{x}`") if markdown else (lambda x: str(x))
    bullet = "- " if markdown else "  "
    doc = (cls.__doc__ or "").strip().splitlines()
    out = [f"## `{name}`" if markdown else f"schedule {name}  (plugin {spec.plugin})"]
    if markdown:
        out.append(f"\nPlugin `{spec.plugin}`. {doc[0] if doc else ''}\n")
    elif doc:
        out.append(f"  {doc[0]}")
    out.append("**Roles** (what a recipe's `[parts.ROLE]` fills, and how the schedule calls it):" if markdown
               else "roles (how the schedule calls each):")
    for role, r in d["roles"].items():
        call = f": {code(r['call'])}" if r["call"] else ": (the schedule does not document its calls)"
        out.append(f"{bullet}{code(role)} ({r['kind']}){call}")
    out.append("**Streams** (one batch each per iteration):" if markdown else "streams:")
    for sname, s in d["streams"].items():
        out.append(f"{bullet}{code(sname)}: {_stream(s)}")
    if d["labels"]:
        out.append(f"{'**Labels the data must provide:**' if markdown else 'labels the data must provide:'} "
                   + ", ".join(code(x) for x in d["labels"]))
    out.append("**Phases**, in order; each term's value is logged as `PHASE/NAME`, weighted:" if markdown
               else "phases, in order (terms logged as PHASE/NAME, weighted):")
    for p in d["phases"]:
        when = f", every {p['every']} iterations" if p["every"] > 1 else ""
        when += ", when a condition on the schedule's state holds" if p["conditional"] else ""
        extra = f"; takes {code('[[losses]]')} without a {code('phase')} key" if p["extra_losses"] else ""
        out.append(f"{bullet}{code(p['name'])}: trains {', '.join(code(r) for r in p['trains'])}{when}{extra}")
        sub = "  - " if markdown else "      "
        out.append(f"{sub}provides: {', '.join(code(x) for x in p['provides']) or '(nothing)'}")
        for t in p["losses"]:
            reads = ", ".join(f"{k} ← {code(v)}" for k, v in t["reads"].items())
            opts = ", ".join(f"{k} {v}" for k, v in t["options"].items())
            out.append(f"{sub}term {code(t['name'])}: {t['class']}({reads}{'; ' + opts if opts else ''}), "
                       f"{_weight(t)}")
    fields = _fields(cls.Config, code)
    if fields:
        out.append("**`[schedule]` keys:**" if markdown else "[schedule] keys:")
        out += [f"{bullet}{f}" for f in fields]
    if markdown:  # a blank line before each bold heading, so lists end there
        out = [y for x in out for y in (["", x] if x.startswith("**") else [x])]
    return out


def part_details(spec: Any) -> str:
    """``gancore parts --details NAME``: a schedule's full description; for any other part its
    summary and recipe keys."""
    if spec.kind == "schedule":
        return "\n".join(schedule_lines(spec.name, spec))
    cls = spec.load()
    doc = (cls.__doc__ or "").strip()
    lines = [f"{spec.kind} {spec.name}  (plugin {spec.plugin})"] + [f"  {x}" for x in doc.splitlines()]
    fields = _fields(cls.Config)
    if fields:
        lines.append("keys:")
        lines += [f"  {f}" for f in fields]
    return "\n".join(lines)


def schedule_page(registry: Any) -> str:
    """docs/schedules.md: every registered schedule, generated."""
    head = ["# Schedules", "",
            "Every schedule of gancore and its installed plugins: the roles it needs and how it calls each "
            "network (what a part's `forward` must accept), its streams, its phases with the tensors each "
            "provides and its default loss terms, and its `[schedule]` keys. Generated by "
            "`python -m gancore.describe > docs/schedules.md` (a test checks it is current); "
            "`gancore parts --kind schedule --details NAME` prints the same.", "",
            "A recipe's `[[losses]]` entry matches a default term by `name` when it gives one, else by its "
            "`use` (the term's class): a match changes that term (keys merge into the default's), and a `use` "
            "of another class under a default's name replaces it (reading what it read unless `inputs` says "
            "otherwise). An entry that matches nothing adds a term to the phases that take extra terms, or to "
            "those its `phase` key names. Logged values are weighted (weight × term).", ""]
    body: list[str] = []
    for spec in registry.list("schedule"):
        body += schedule_lines(spec.name, spec, markdown=True) + [""]
    return "\n".join(head + body).rstrip() + "\n"


if __name__ == "__main__":
    from .plugins import get_host

    sys.stdout.write(schedule_page(get_host().registry))
