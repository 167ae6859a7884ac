"""Rendering speed of the built-in synthetic data (images/s), and of reading the on-disk cache.

    python benchmarks/synth_render.py [--threads 2] [--batch 256] [--repeats 3]

Prints images/s of SynthFaces (celeba profile) and SynthChairs at 64 and 128 px (2×2
supersampling), best of ``--repeats`` timed batches after one warm-up batch, and how
fast ``load`` reads a filled memory-mapped cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancore.data.synthchairs import SynthChairs  # noqa: E402
from gancore.data.synthfaces import SynthFaces  # noqa: E402


def rate(fn, n: int, repeats: int) -> float:
    """Best images/s of ``repeats`` calls of ``fn`` (each makes ``n`` images)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--supersample", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, device {args.device}, "
          f"supersample {args.supersample}")
    for cls in (SynthFaces, SynthChairs):
        for res in (64, 128):
            src = cls(resolution=res, device=args.device, supersample=args.supersample)
            idx = list(range(args.batch))
            f = src.factors(idx)
            r = rate(lambda: src.render(f), args.batch, args.repeats)
            print(f"{src.name:12s} {res:4d} px  render  {r:8.1f} images/s")
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
