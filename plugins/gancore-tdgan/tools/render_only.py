"""How fast can TD-GAN's g and G learn to render the training images from their tags alone?

A diagnosis outside the engine: g and G of a TD-GAN recipe, trained by f2 = ‖G(g(C)) − x‖²
alone (no R, no D, no f1 or f3), with Adam at the recipe's betas and a learning rate of your
choice.  Every ``--every`` steps it prints f2 (reduced as the recipe's schedule says) and the
*colour* error on a fixed set of training images: the squared error of each pixel's colour
minus its grey level (``x - mean over RGB``), which ignores shape and brightness and is 0 for
grey.  Its baseline is a grey render (colour error of predicting no colour at all).

On the chairs CPU recipe, the renders come out in one brownish grey long before their
shapes are right; this shows whether (and after how many steps) G can learn each chair's
colours from its identity tag at a given learning rate.

    python plugins/gancore-tdgan/tools/render_only.py recipes/tdgan-chairs-cpu.toml --steps 4000 --lr 1e-3 \\
        [--set data.cache='"runs/.cache"'] [--out render_only.png]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from gancore.data.base import BatchPlan
from gancore.engine import _source, build_nets
from gancore.recipe import load_recipe

from gancore_tdgan.losses import squared_norm


def colour_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error of the colours (each pixel minus its grey level) of ``a`` and ``b``."""
    return float(((a - a.mean(1, keepdim=True)) - (b - b.mean(1, keepdim=True))).square().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, as gancore run")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: the recipe's optim.lr)")
    ap.add_argument("--batch", type=int, default=None, help="default: the recipe's train.batch_size")
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="PNG: the fixed training images above their renders at the end")
    args = ap.parse_args()
    resolved = load_recipe(args.recipe, args.set)
    torch.manual_seed(resolved.train.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    sched = resolved.schedule
    tags = list(sched.config.tags)
    src = _source(resolved)
    # the samples the engine draws for the schedule's tagged stream (its `where`, every tag present)
    tagged = {"tagged": sched.streams()["tagged"]}
    pool = BatchPlan(src.labels(), tagged, resolved.train.batch_size, resolved.train.seed, len(src)).pools["tagged"]
    nets = build_nets(resolved, src.info())
    g, G = nets["g"].train(), nets["G"].train()
    lr = args.lr or resolved.optim.lr
    opt = torch.optim.Adam([*g.parameters(), *G.parameters()], lr=lr, betas=resolved.optim.betas)
    gen = torch.Generator().manual_seed(1)
    fixed = src.load(pool[torch.randperm(len(pool), generator=gen)[:64]].tolist())
    batch = args.batch or resolved.train.batch_size

    def render(b: dict[str, torch.Tensor]) -> torch.Tensor:
        return G(g({t: b[t].long() for t in tags}))

    print(f"g and G on f2 alone: {len(pool)} training images, batch {batch}, Adam lr {lr:g} betas {resolved.optim.betas}")
    print(f"colour error of a grey render (baseline): {colour_error(fixed['image'], fixed['image'].mean(1, keepdim=True)):.4f}")
    began = time.perf_counter()
    for step in range(1, args.steps + 1):
        b = src.load(pool[torch.randint(len(pool), (batch,), generator=gen)].tolist())
        loss = squared_norm(render(b), b["image"], sched.config.reduction)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            g.eval(), G.eval()
            with torch.no_grad():
                out = render(fixed)
            g.train(), G.train()
            print(f"step {step:6d}  f2 {loss.item():8.1f}  colour error {colour_error(out, fixed['image']):.4f}  "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)
    if args.out:
        torchvision.utils.save_image(torch.cat([fixed["image"][:8], out[:8]]) * 0.5 + 0.5, args.out, nrow=8)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
