"""``gancore data``: export datasets to their real on-disk layouts, preview sources."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_data(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_cmd", metavar="{export,preview}", required=True)
    ex = sub.add_parser("export", help="write samples of a source in a real dataset's layout")
    ex.add_argument("source", help="data source, e.g. synthfaces or synthchairs")
    ex.add_argument("--format", required=True, help="celeba | utkface | multipie | folder | chairs3d")
    ex.add_argument("--n", type=int, default=100, help="number of samples")
    ex.add_argument("--resolution", type=int, default=64)
    ex.add_argument("--profile", default=None, help="source profile (synthfaces: celeba|utkface|multipie|free)")
    ex.add_argument("--split", default="train")
    ex.add_argument("--out", required=True, type=Path)
    ex.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    pv = sub.add_parser("preview", help="a PNG grid of samples and factor sweeps")
    pv.add_argument("source")
    pv.add_argument("--profile", default=None)
    pv.add_argument("--resolution", type=int, default=64)
    pv.add_argument("--out", required=True, type=Path)


def _build(args: argparse.Namespace):  # noqa: ANN202
    import gancore

    options = {"resolution": args.resolution}
    if args.profile:
        options["profile"] = args.profile
    if getattr(args, "split", None):
        options["split"] = args.split
    spec = gancore.registry().get(args.source, "data")
    return spec.build(options)


def run_data(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        source = _build(args)
    except ValidationError as e:
        for err in e.errors():
            print(f"gancore data: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return 2
    if args.data_cmd == "export":
        from .export import export

        result = export(source, args.format, args.n, args.out, args.resolution, overwrite=args.overwrite)
        print(result.summary())
        return 0
    from .preview import preview_grid

    preview_grid(source, args.out)
    print(f"wrote {args.out}")
    return 0
