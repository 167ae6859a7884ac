"""How low can frontalization error go on synthfaces' multipie profile? (no training)

``drgan.recognition`` scores a frontalization against the true frontal render of the same
identity *and light*; DR-GAN's f(x) is meant to drop the light.  This prints, on held-out
neutral faces not already frontal (as the metric picks them), the MSE of

- doing nothing (the input itself: the metric's baseline),
- a light-agnostic oracle: the mean over all 20 lights of the true frontal render of the
  same face (the best any renderer that knows everything but the light can do, in MSE),
- a nuisance-agnostic oracle: the same mean over every light and clothes colour, and over
  every backdrop colour where the source draws it per image (``backdrop = "random"``; the
  multipie profile's default is one studio backdrop).  These are drawn per image, so they are
  nuisances exactly like the light: DR-GAN's f(x) is trained to carry identity, and no term
  asks it to keep them.  This is the best a renderer that knows the identity (and the pose
  and expression) but nothing drawn per image can do, in MSE,
- the same face rendered frontal at the canonical (camera-axis) light,

whole image and inside the head's mask, and per input yaw.

    python plugins/gancore-drgan/tools/frontalization_bounds.py [--resolution 48] [--faces 400] [--backdrop random]
"""

from __future__ import annotations

import argparse

import torch
from gancore_drgan.metric import _default_light, head_mask, masked_mse
from gancore_synth.synthfaces import BACKGROUNDS, CLOTHES, N_EXPRESSIONS, N_LIGHTS, N_POSES, SynthFaces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=48)
    ap.add_argument("--identities", type=int, default=100, help="training identities (the test split follows them)")
    ap.add_argument("--faces", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backdrop", choices=["studio", "random"], default=None,
                    help="synthfaces' backdrop (default: the profile's, one studio colour)")
    args = ap.parse_args()
    cfg = dict(profile="multipie", resolution=args.resolution, poses="all", identities=args.identities, split="test",
               backdrop=args.backdrop)
    probe = SynthFaces(**cfg, size=N_POSES)
    src = SynthFaces(**cfg, size=probe.n_ids_test * N_POSES * N_LIGHTS * N_EXPRESSIONS)  # the complete test grid
    lab = src.labels()
    pool = torch.nonzero((lab["expression"] == 0) & (lab["yaw"].abs() > 1e-3)).flatten()
    gen = torch.Generator().manual_seed(args.seed)
    pick = pool[torch.randperm(len(pool), generator=gen)[: args.faces]]
    f = src.factors(pick)
    x = src.render(f)
    front = {**f, "yaw": torch.zeros_like(f["yaw"].float())}
    truth, masks = src.render(front, masks=True)
    head = head_mask(masks)
    oracle = sum(src.render({**front, "light": torch.full_like(f["light"], k)}) for k in range(N_LIGHTS)) / N_LIGHTS
    # every (light, clothes) pair once; a per-image backdrop, which touches only its own pixels,
    # cycles through its colours evenly (15 times each over the 120 renders)
    n_cl = len(CLOTHES)
    n_bg = len(BACKGROUNDS) if src.backdrop() == "random" else 1
    combos = [(k, c, (k * n_cl + c) % n_bg) for k in range(N_LIGHTS) for c in range(n_cl)]
    blind = sum(
        src.render({**front, "light": torch.full_like(f["light"], k), "clothes": torch.full_like(f["clothes"], c),
                    "background": torch.full_like(f["background"], b)})
        for k, c, b in combos
    ) / len(combos)
    canon = src.render({**front, "light": torch.full_like(f["light"], _default_light(src))})
    answers = {"do nothing (the input)": x, "light-agnostic oracle": oracle, "nuisance-agnostic oracle": blind,
               "canonical light": canon}
    print(f"{len(pick)} held-out neutral faces at {args.resolution} px, not frontal; MSE on [-1, 1] images")
    print(f"{'':26s} {'whole':>7s} {'face':>7s}")
    for name, a in answers.items():
        print(f"{name:26s} {float(masked_mse(a, truth).mean()):7.4f} {float(masked_mse(a, truth, head).mean()):7.4f}")
    print("by input yaw (whole image): do nothing / light-agnostic oracle / nuisance-agnostic oracle")
    for y in sorted(set(f["yaw"].tolist())):
        s = f["yaw"] == y
        row = " / ".join(f"{float(masked_mse(a[s], truth[s]).mean()):.4f}" for a in (x, oracle, blind))
        print(f"  {y:+5.0f}: {row}")


if __name__ == "__main__":
    main()
