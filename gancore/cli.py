"""The ``gancore`` command line.

    gancore run RECIPE [--set key=value ...] [--resume]
    gancore validate RECIPE [--set ...]        gancore schema
    gancore eval RUN_DIR [--json]               gancore plugins [--json]
    gancore parts [--kind K] [--json]           gancore new-plugin NAME --dir PATH
    gancore data export|preview ...             + verbs added by plugins (edit, age, ...)

Exit codes: 0 success, 1 training failed, 2 bad input (the message says which).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from pydantic import ValidationError

__all__ = ["main", "build_parser"]


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", type=Path, help="recipe TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, value read as TOML (repeatable): --set train.steps=200")


def build_parser(host: Any) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="gancore", description="Train and apply face-editing GANs from recipes.")
    parser.add_argument("--version", action="version", version=f"gancore {__version__}")
    parser.add_argument("--disable", action="append", default=[], metavar="PLUGIN",
                        help="do not load this plugin (repeatable; also GANCORE_DISABLE_PLUGINS=a,b)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train from a recipe")
    _recipe_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a run folder that holds checkpoints (deletes its checkpoints, samples, logs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a recipe, print it fully resolved, and try one training step")
    _recipe_args(p)
    p.add_argument("--no-dry-run", action="store_true",
                   help="check the recipe only; skip the one-step dry run on 2 samples (CPU, seconds)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of recipes")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("eval", help="evaluate a trained run: a table; writes RUN/eval.json and RUN/eval.md")
    p.add_argument("run", type=Path)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print the raw results as JSON instead of the table")
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="run the metrics that offer this evaluation protocol (e.g. 'cfp'); writes RUN/eval-NAME.json")
    p.add_argument("--root", type=Path, default=None, metavar="PATH", help="the data folder the protocol reads (e.g. a CFP root)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric's option (repeatable), e.g. residual.edit.num_faces=64; `gancore parts --kind metric` lists the keys")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="for a run trained with train.ema: its averaged weights (default) or the trained ones "
                        "(then writes RUN/eval-raw.json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plugins", help="list installed plugins and what they registered")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("parts", help="list registered parts with their owner and config schema")
    p.add_argument("--details", metavar="NAME",
                   help="describe one part: a schedule's roles and calls, streams, phases, tensors and default terms")
    from .registry import KINDS

    p.add_argument("--kind", choices=list(KINDS))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_parts)

    p = sub.add_parser("new-plugin", help="scaffold a working plugin package")
    p.add_argument("name", help="plugin name (lowercase letters, digits, _), e.g. 'stargan'")
    p.add_argument("--dir", type=Path, default=Path("."), help="folder to create gancore-NAME/ in")
    p.set_defaults(func=cmd_new_plugin)

    for cmd in list(host.commands.values()):
        p = sub.add_parser(cmd.name, help=f"{cmd.help} [plugin {cmd.plugin}]")
        try:
            cmd.configure(p)
        except Exception as e:  # one broken plugin verb must not take the whole CLI down
            print(f"gancore: plugin {cmd.plugin!r}: command {cmd.name!r} is unavailable: {type(e).__name__}: {e}",
                  file=sys.stderr)
            p.set_defaults(func=lambda args, _e=e, _c=cmd: _fail(f"gancore {_c.name}: unavailable: {_e}"))
            continue
        p.set_defaults(func=lambda args, _run=cmd.run: _run(args))
    return parser


def _fail(msg: str, code: int = 2) -> int:
    print(msg, file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import train
    from .recipe import load_recipe

    from .engine import RunExists

    resolved = load_recipe(args.recipe, args.overrides)
    if args.resume and args.overwrite:
        return _fail("gancore run: --resume and --overwrite exclude each other")
    try:
        run_dir = train(resolved, resume=args.resume, overwrite=args.overwrite,
                        progress=False if args.no_progress else None)
    except RunExists as e:
        return _fail(f"gancore run: {e.render('--resume', '--overwrite')}")
    print(f"done: {run_dir}  (samples in {run_dir / 'samples'}, checkpoints in {run_dir / 'checkpoints'})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .recipe import load_recipe

    resolved = load_recipe(args.recipe, args.overrides)
    print(json.dumps(resolved.as_dict(), indent=2))
    if args.no_dry_run:
        return 0
    from .engine import dry_run

    # a short-lived process: render synthetic test images eagerly rather than compile the renderer
    os.environ.setdefault("GANCORE_RENDER_COMPILE", "0")
    seconds = dry_run(resolved)
    print(f"dry run: one training step of every phase on 2 samples per stream (CPU): ok ({seconds:.1f} s)",
          file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .recipe import recipe_schema

    print(json.dumps(recipe_schema(), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import gancore

    from .metrics import format_report
    from .recipe import _pydantic_problems
    from .runs import load_run

    protocol = getattr(args, "protocol", None)
    root = getattr(args, "root", None)
    if root is not None and protocol is None:
        return _fail("gancore eval: --root names the data of a protocol; give --protocol NAME as well")
    specs = gancore.registry().list("metric")
    options = _metric_options(getattr(args, "options", []), [s.name for s in specs])
    if isinstance(options, str):
        return _fail(f"gancore eval: {options}")
    run = load_run(args.run, args.checkpoint, ema=getattr(args, "weights", "ema") != "raw")
    results: dict[str, Any] = {"run": str(run.dir), "step": run.step, "schedule": run.schedule_name}
    if run.averaged:
        results["weights"] = f"train.ema averages of {', '.join(run.averaged)}"
        print(f"note: evaluating the averaged weights (train.ema) of {', '.join(run.averaged)}; "
              f"--weights raw evaluates the trained ones", file=sys.stderr)
    if options:
        results["options"] = {name: dict(values) for name, values in options.items()}
    applied, offered = [], set()
    for spec in specs:
        metric = spec.build()
        if not metric.applies_to(run.schedule_name):
            continue
        config = dict(options.get(spec.name, {}))
        if protocol is not None:  # a metric's own protocol: its Config takes `protocol` (and `root`)
            offered |= set(metric.protocols)
            if protocol not in metric.protocols:
                continue
            config.update({"protocol": protocol, **({"root": str(root)} if root is not None else {})})
        if config:
            try:
                metric = spec.build(config)
            except ValidationError as e:  # the recipe's wording: unknown keys get close names or the known ones
                problems = "; ".join(f"{p.key}: {p.message}" for p in _pydantic_problems(e, spec.name, spec.config_cls))
                return _fail(f"gancore eval: options of metric {spec.name!r}: {problems}")
        applied.append(spec.name)
        results[spec.name] = metric.compute(run)
    if not applied:
        if protocol is not None:
            have = ", ".join(sorted(offered)) or "none"
            return _fail(f"gancore eval: no installed metric of schedule {run.schedule_name!r} offers protocol "
                         f"{protocol!r} (offered: {have})")
        return _fail(f"no installed metric evaluates runs of schedule {run.schedule_name!r}")
    stem = (f"eval-{protocol}" if protocol is not None else "eval") + ("-raw" if run.averages_skipped else "")
    out_json, out_md = run.dir / f"{stem}.json", run.dir / f"{stem}.md"
    _write_atomic(out_json, json.dumps(results, indent=2) + "\n")
    _write_atomic(out_md, format_report(results, markdown=True, base=run.dir))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_report(results), end="")
    print(f"wrote {out_json} and {out_md}", file=sys.stderr)
    return 0


def _metric_options(items: list[str], names: list[str]) -> dict[str, dict[str, Any]] | str:
    """``METRIC.KEY=VALUE`` items → {metric: {key: value}}, or the message naming a bad one.

    METRIC is a registered metric name (they hold dots: the longest that matches is taken); the
    VALUE is read as in a recipe's ``--set`` (TOML, else a plain string); the metric's own
    Config checks the keys and values when it is built."""
    from .recipe import _parse_value

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, text = item.partition("=")
        owner = max((n for n in names if target.startswith(n + ".")), key=len, default=None)
        if not eq or owner is None or not target[len(owner) + 1 :]:
            have = ", ".join(sorted(names)) or "none installed"
            return f"--set {item!r}: expected METRIC.KEY=VALUE with METRIC one of the metrics ({have})"
        out.setdefault(owner, {})[target[len(owner) + 1 :]] = _parse_value(text)
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_host

    host = get_host()
    rows = [s.as_dict() for s in host.statuses.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        where = f"{r['distribution'] or '?'} {r['version'] or ''}".strip()
        print(f"{r['name']}  [{r['state']}]  {where}")
        if r["error"]:
            print(f"    error: {r['error']}")
        for kind, names in sorted(r["parts"].items()):
            print(f"    {kind}: {', '.join(names)}")
        if r["commands"]:
            print(f"    commands: {', '.join(r['commands'])}")
        for b in r["benchmarks"]:
            settings = ", ".join(f"{k} {v}" for k, v in b.items() if k != "name")
            print(f"    benchmark: {b['name']} ({settings})")
    return 0


_ROLE = re.compile(r":[\w.-]+(?::[\w.-]+)?:`([^`]*)`")     # :class:`Foo`, :py:func:`~a.b`
_LITERAL = re.compile(r"``(.+?)``")                           # ``logits``
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}(?=\S)(.+?)(?<=\S)\*{1,2}(?![\w*])")   # *x*, **x**
_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")       # `x`


def _role_text(m: re.Match) -> str:
    text = m.group(1)
    named = re.fullmatch(r"(.*?)\s*<[^>]*>", text)  # `title <target>` shows the title
    if named:
        return named.group(1)
    return text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text


def plain_text(text: str) -> str:
    """A docstring line without its reST markup, for a terminal: double-backquoted literals,
    roles (``:class:`~a.B``` shows ``B``), interpreted text and emphasis become plain words."""
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    return re.sub(r"::$", ":", text)


def cmd_parts(args: argparse.Namespace) -> int:
    from .plugins import get_host

    host = get_host()
    if args.details:
        from .describe import part_details

        spec = host.registry.get(args.details, args.kind)
        print(part_details(spec))
        return 0
    rows = []
    for spec in host.registry.list(args.kind):
        try:
            schema = spec.config_cls.model_json_schema()
            summary = plain_text(spec.summary())
        except Exception as e:  # a lazily named part whose module is broken: report, keep listing
            schema, summary = None, f"(cannot load: {e})"
        rows.append({"name": spec.name, "kind": spec.kind, "plugin": spec.plugin, "summary": summary,
                     "config": schema})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        keys = ", ".join((r["config"] or {}).get("properties", {}))
        print(f"{r['name']:28s} {r['kind']:13s} {r['plugin']:10s} {r['summary']}")
        if keys:
            print(f"{'':28s} keys: {keys}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import ScaffoldError, scaffold

    try:
        path = scaffold(args.name, args.dir)
    except ScaffoldError as e:
        return _fail(f"gancore new-plugin: {e}")
    print(f"created {path}\nnext: pip install -e {path} && pytest {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``gancore`` command; returns its exit code.

    When stdout is closed early by its reader (``gancore parts | head -3``), the command
    ends quietly, as Unix tools do, with exit code 141 (128 + SIGPIPE): no traceback and no
    "Exception ignored ... BrokenPipeError" line at interpreter exit.
    """
    try:
        try:
            code = _main(argv)
        except SystemExit:  # argparse after --help/--version or a usage error
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141


def _missing_verb(argv: list[str], host: Any) -> str | None:
    """The message for a verb that a plugin provides but that is not loaded, else None.

    argparse alone would say "invalid choice: 'rotate'"; this says which distribution to
    install (the verb's home is declared with ``GANCORE_COMMAND_HOMES``, see gancore.plugins).
    """
    from .registry import distribution_of

    words = [a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--disable")]
    if not words or words[0] in host.commands or words[0] not in host.command_homes:
        return None
    verb, plugin = words[0], host.command_homes[words[0]]
    status = host.statuses.get(plugin)
    if status is None:
        why = f"pip install {distribution_of(plugin)}"
    else:
        why = f"it is {status.state}" + (f": {status.error}" if status.error else "") + " (see `gancore plugins`)"
    return f"gancore {verb}: this command comes from the plugin {plugin!r}, which is not loaded; {why}"


def _silence_stdout() -> None:
    """Point stdout at the null device, so the interpreter's final flush of what is still
    buffered cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured)
        pass


def _main(argv: list[str] | None) -> int:
    from . import plugins
    from .checkpoint import CheckpointError
    from .data.base import DataError
    from .engine import TrainingError
    from .recipe import RecipeError
    from .registry import RegistryError
    from .losses import LossError
    from .runs import RunError
    from .schedule import PartError, StaleResult

    argv = list(sys.argv[1:] if argv is None else argv)
    # --disable must act before any plugin is imported, so read it before parsing.
    disabled = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--disable"]
    disabled += [a.split("=", 1)[1] for a in argv if a.startswith("--disable=")]
    if disabled:
        plugins.disable(*disabled)
    try:
        host = plugins.get_host()
    except RegistryError as e:
        return _fail(f"gancore: {e}")
    missing = _missing_verb(argv, host)
    if missing:
        return _fail(missing)
    parser = build_parser(host)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RecipeError as e:
        return _fail(str(e))
    except (RunError, RegistryError, DataError, CheckpointError, PartError, LossError, StaleResult) as e:
        return _fail(f"gancore {args.command}: {e}")
    except TrainingError as e:
        return _fail(f"gancore {args.command}: training stopped: {e}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted; the last checkpoint is kept (continue with --resume)", 130)
    except BrokenPipeError:
        raise  # stdout was closed by its reader: main() ends quietly
    except Exception as e:
        if os.environ.get("GANCORE_DEBUG"):
            traceback.print_exc()
        return _fail(f"gancore {args.command}: {type(e).__name__}: {e}\n(set GANCORE_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    raise SystemExit(main())
