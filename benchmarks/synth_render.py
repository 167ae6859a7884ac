"""Rendering speed of the built-in synthetic data (images/s), and of reading the on-disk cache.

    python benchmarks/synth_render.py [--threads 1] [--batch 256] [--repeats 3] [--backend auto|compiled|eager]
                                      [--ab] [--aa-ab] [--no-cache]

Prints images/s of SynthFaces (celeba profile) and SynthChairs at 64 and 128 px (2×2
supersampling), best of ``--repeats`` timed batches after one warm-up batch, and how
fast ``load`` reads a filled memory-mapped cache.

``--ab`` also times the original renderer (``render_reference`` in gancore-synth's tests)
in the same process, interleaved with the current one batch by batch (old, new, old,
new, ...), so that both see the same machine load; it prints both rates and their ratio.
The first line says which backend rendered and how long its first use (torch.compile)
took.

``--aa-ab`` times ``aa="full"`` against ``aa="adaptive"`` (edge-adaptive anti-aliasing) the
same way, interleaved batch by batch in one process, and prints both rates and their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import torch
from gancore_synth import render as render_mod
from gancore_synth import synthchairs, synthfaces
from gancore_synth.synthchairs import SynthChairs
from gancore_synth.synthfaces import SynthFaces

#: the original renderer, kept with gancore-synth's tests (not part of the installed package)
REFERENCE = Path(__file__).resolve().parents[1] / "plugins" / "gancore-synth" / "tests" / "reference_render.py"


_REFERENCE_MODULE: list = []


def render_reference(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    if not _REFERENCE_MODULE:
        spec = importlib.util.spec_from_file_location("gancore_synth_reference_render", REFERENCE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _REFERENCE_MODULE.append(module)
    return _REFERENCE_MODULE[0].render_reference(*args, **kwargs)


def rate(fn, n: int, repeats: int) -> float:
    """Best images/s of ``repeats`` calls of ``fn`` (each makes ``n`` images)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def ab_rates(src, f, module, n: int, repeats: int) -> tuple[float, float]:
    """Best images/s of the reference and the current renderer, timed alternately.

    The reference runs wholly eager (its albedo hooks too), as the original code did.
    """
    current, backend = module.render, render_mod.render_backend()
    best = {"old": float("inf"), "new": float("inf")}
    runs = (("old", render_reference, "eager"), ("new", current, backend))
    try:
        for _ in range(repeats + 1):  # the first round warms up
            for name, fn, be in runs:
                module.render = fn
                render_mod.set_render_backend(be)
                t = time.perf_counter()
                src.render(f)
                if _:
                    best[name] = min(best[name], time.perf_counter() - t)
    finally:
        module.render = current
        render_mod.set_render_backend(backend)
    return n / best["old"], n / best["new"]


def aa_rates(cls, res: int, device: str, supersample: int, batch: int, repeats: int) -> tuple[float, float]:
    """Best images/s of ``aa="full"`` and ``aa="adaptive"``, timed alternately (full, adaptive, full, ...)."""
    srcs = {aa: cls(resolution=res, device=device, supersample=supersample, aa=aa) for aa in ("full", "adaptive")}
    f = srcs["full"].factors(list(range(batch)))
    best = {aa: float("inf") for aa in srcs}
    for i in range(repeats + 1):  # the first round warms up (and compiles)
        for aa, src in srcs.items():
            t = time.perf_counter()
            src.render(f)
            if i:
                best[aa] = min(best[aa], time.perf_counter() - t)
    return batch / best["full"], batch / best["adaptive"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--backend", choices=("auto", "compiled", "eager"), default="auto")
    ap.add_argument("--ab", action="store_true", help="also time the original renderer, interleaved")
    ap.add_argument("--aa-ab", action="store_true", help="time aa='full' against aa='adaptive', interleaved")
    ap.add_argument("--resolutions", default="64,128")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    if args.backend != "auto":
        render_mod.set_render_backend(args.backend)
    backend = render_mod.render_backend()
    first = time.perf_counter() - t
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, device {args.device}, "
          f"supersample {args.supersample}, backend {backend} (first use {first:.1f} s), load average {load:.1f}")
    for cls, module in ((SynthFaces, synthfaces), (SynthChairs, synthchairs)):
        for res in (int(r) for r in args.resolutions.split(",")):
            if args.aa_ab:
                full, adaptive = aa_rates(cls, res, args.device, args.supersample, args.batch, args.repeats)
                print(f"{cls.name:12s} {res:4d} px  aa=full {full:8.1f} images/s   aa=adaptive {adaptive:8.1f} images/s   "
                      f"x{adaptive / full:.2f}")
                continue
            src = cls(resolution=res, device=args.device, supersample=args.supersample)
            f = src.factors(list(range(args.batch)))
            if args.ab:
                old, new = ab_rates(src, f, module, args.batch, args.repeats)
                print(f"{src.name:12s} {res:4d} px  render  {new:8.1f} images/s   reference {old:8.1f} images/s   "
                      f"x{new / old:.2f}")
            else:
                r = rate(lambda: src.render(f), args.batch, args.repeats)
                print(f"{src.name:12s} {res:4d} px  render  {r:8.1f} images/s")
    if args.no_cache:
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = SynthFaces(resolution=64, size=args.batch * 4, cache=tmp, supersample=args.supersample)
        idx = list(range(len(src)))
        t = time.perf_counter()
        src.load(idx)
        fill = len(idx) / (time.perf_counter() - t)
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(idx), generator=g)
        r = rate(lambda: [src.load(perm[i : i + 64].tolist()) for i in range(0, len(idx), 64)], len(idx), args.repeats)
        print(f"synthfaces     64 px  cache fill {fill:8.1f} images/s, cached load (random batches of 64) {r:8.1f} images/s")


if __name__ == "__main__":
    main()
