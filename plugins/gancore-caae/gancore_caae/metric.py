"""``caae.age``: how well a trained CAAE changes age, measured against ground truth.

On held-out ``synthfaces`` every face's true look at another age is known: the source
re-renders the same identity with only its age changed (``source.factors`` /
``source.render``).  For each held-out face x (true group t) and each target group g:

- ``age_mse``: MSE between G(E(x), g) and the true render at g's middle age, over g ≠ t;
  ``age_mse_baseline`` is the same for the do-nothing answer x itself.  ``_far`` variants
  keep only targets at least 3 groups away, where aging changes the face most.
  ``age_mse_reconstruction_baseline`` answers with the model's own reconstruction
  G(E(x), t) instead: it separates what the age label adds from the autoencoder's blur.
- ``age_change_cos``: cosine between the model's change G(E(x), g) − G(E(x), t) and the
  true change render(g) − render(t); 0 means the age label does nothing useful, 1 a
  perfect direction (independent of how blurry the reconstruction is).
- ``recon_mse`` / ``recon_psnr``: G(E(x), t) against x.
- latent prior: per-dimension mean and std of E(x) (uniform on (−1, 1): 0 and 0.577) and
  the Kolmogorov–Smirnov distance of each dimension to U(−1, 1).
- figures under ``RUN/eval/``: ``caae_age_strips.png`` (rows: input + model at the 10
  groups, then the true renders) and ``caae_interp.png`` (z interpolated between pairs).

A source without counterfactual renders (e.g. real UTKFace) gets the reconstruction,
prior and interpolation numbers only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from pydantic import Field

from gancore.metrics import Metric, per_sample_mean, psnr
from gancore.parts import Config

from .labels import MID_AGES

__all__ = ["AgeMetric", "ks_uniform", "prior_stats"]


def ks_uniform(z: torch.Tensor) -> torch.Tensor:
    """Kolmogorov–Smirnov distance of each column of ``z`` [N, D] to U(−1, 1): ``[D]``."""
    n = z.shape[0]
    s, _ = z.sort(dim=0)  # [N, D]
    cdf = ((s + 1) / 2).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=z.dtype, device=z.device)[:, None]
    return torch.maximum(i / n - cdf, cdf - (i - 1) / n).amax(0)


def prior_stats(z: torch.Tensor) -> dict[str, float]:
    """How close codes ``z`` [N, D] are to U(−1, 1)^D, as flat numbers."""
    mean, std, ks = z.mean(0), z.std(0, correction=0), ks_uniform(z)
    return {
        "z_mean_abs": float(mean.abs().mean()),
        "z_mean_abs_max": float(mean.abs().max()),
        "z_std_mean": float(std.mean()),
        "z_std_min": float(std.min()),
        "z_std_max": float(std.max()),
        "z_std_target": 1 / math.sqrt(3),
        "z_ks_mean": float(ks.mean()),
        "z_ks_max": float(ks.max()),
    }


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE ``[B]`` of images in [-1, 1]."""
    return per_sample_mean((a - b).square())


class AgeMetric(Metric):
    """Age transfer vs true renders, reconstruction, latent prior, interpolation grids."""

    schedules = ("caae.aae",)

    class Config(Config):
        samples: int = Field(256, ge=2, description="held-out faces evaluated")
        batch: int = Field(32, ge=1, description="faces per forward pass")
        far: int = Field(3, ge=1, description="a target group counts as far when at least this many groups from the true one")
        strips: int = Field(6, ge=0, description="faces in the age-strip figure")
        interp_pairs: int = Field(4, ge=0, description="face pairs in the interpolation figure")
        interp_steps: int = Field(8, ge=2, description="columns of each interpolation")

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _truth(source: Any, idx: list[int], groups: int) -> torch.Tensor | None:
        """True renders of faces ``idx`` at every group's middle age: ``[K, B, 3, R, R]``,
        or None when the source cannot render counterfactuals."""
        if not (hasattr(source, "factors") and hasattr(source, "render")):
            return None
        factors = source.factors(idx)
        out = []
        for g in range(groups):
            f = dict(factors)
            f["age"] = torch.full_like(torch.as_tensor(factors["age"], dtype=torch.float32), MID_AGES[g])
            if MID_AGES[g] < 18:  # the data gives beards and moustaches to adults only
                for key in ("beard", "moustache"):
                    if key in f:
                        f[key] = torch.zeros_like(f[key])
            out.append(source.render(f))  # [B, 3, R, R]
        return torch.stack(out)

    # -- the metric ---------------------------------------------------------------------------
    @torch.no_grad()
    def compute(self, run: Any) -> dict[str, Any]:
        c = self.config
        E, G = run.nets["E"], run.nets["G"]
        use_gender = bool(run.schedule.config.gender)
        K = G.age_groups
        source = run.data("test")
        n = min(c.samples, len(source))
        gen = torch.Generator().manual_seed(0)
        order = torch.randperm(len(source), generator=gen)[:n].tolist()

        zs, recon_err = [], []
        err, base, still, cos = [], [], [], []  # per (face, group) rows: [B, K]
        true_groups = []
        strips: list[torch.Tensor] = []
        truths_fig: list[torch.Tensor] = []
        has_truth = True
        for start in range(0, n, c.batch):
            idx = order[start : start + c.batch]
            b = source.load(idx)
            x, t = b["image"], b["age_group"].long()
            gender = b["gender"].long() if use_gender else None
            z = E(x)  # [B, Z] — encoded once
            outs = torch.stack([G(z, torch.full_like(t, g), gender) for g in range(K)])  # [K, B, 3, R, R]
            rec = outs[t, torch.arange(len(t))]  # at the true group
            zs.append(z)
            true_groups.append(t)
            recon_err.append(_mse(rec, x))
            truth = self._truth(source, idx, K) if has_truth else None
            if truth is None:
                has_truth = False
            else:
                err.append(torch.stack([_mse(outs[g], truth[g]) for g in range(K)], 1))  # [B, K]
                base.append(torch.stack([_mse(x, truth[g]) for g in range(K)], 1))
                still.append(torch.stack([_mse(rec, truth[g]) for g in range(K)], 1))
                model_d = (outs - rec[None]).flatten(2)  # [K, B, P]
                true_d = (truth - truth[t, torch.arange(len(t))][None]).flatten(2)
                cos.append(torch.nn.functional.cosine_similarity(model_d, true_d, dim=2, eps=1e-8).T)  # [B, K]
            if len(strips) < c.strips:
                take = min(c.strips - len(strips), len(x))
                for i in range(take):
                    strips.append(torch.cat([x[i : i + 1], outs[:, i]]))  # [1+K, 3, R, R]
                    if truth is not None:
                        truths_fig.append(torch.cat([x[i : i + 1], truth[:, i]]))

        z = torch.cat(zs)
        t = torch.cat(true_groups)
        recon = torch.cat(recon_err)
        out: dict[str, Any] = {
            "samples": n,
            "step": run.step,
            "recon_mse": float(recon.mean()),
            "recon_psnr": psnr(float(recon.mean())),
            **prior_stats(z),
        }
        if has_truth and err:
            e, b0, b1, cs = torch.cat(err), torch.cat(base), torch.cat(still), torch.cat(cos)  # [N, K]
            gap = (torch.arange(K)[None] - t[:, None]).abs()  # [N, K]
            other, far = gap > 0, gap >= c.far
            out.update({
                "age_mse": float(e[other].mean()),
                "age_mse_baseline": float(b0[other].mean()),
                "age_mse_far": float(e[far].mean()) if far.any() else None,
                "age_mse_far_baseline": float(b0[far].mean()) if far.any() else None,
                "age_mse_reconstruction_baseline": float(b1[other].mean()),
                "age_mse_far_reconstruction_baseline": float(b1[far].mean()) if far.any() else None,
                "age_psnr": psnr(float(e[other].mean())),
                "age_psnr_baseline": psnr(float(b0[other].mean())),
                "age_change_cos": float(cs[other].mean()),
                "age_change_cos_far": float(cs[far].mean()) if far.any() else None,
                "age_mse_by_group": [round(float(e[:, g].mean()), 5) for g in range(K)],
                "age_mse_baseline_by_group": [round(float(b0[:, g].mean()), 5) for g in range(K)],
            })
            out["age_beats_baseline"] = out["age_mse"] < out["age_mse_baseline"]
        else:
            out["age_note"] = "the data source renders no counterfactuals; age transfer was not measured"
        out.update(self._figures(run, source, order, strips, truths_fig, use_gender))
        return out

    def _figures(self, run: Any, source: Any, order: list[int], strips: list[torch.Tensor],
                 truths: list[torch.Tensor], use_gender: bool) -> dict[str, Any]:
        """Write the age strips and interpolation grids under ``RUN/eval/``; returns their paths."""
        from gancore.grid import save_grid

        c = self.config
        E, G = run.nets["E"], run.nets["G"]
        folder = run.dir / "eval"
        paths: dict[str, Any] = {}
        if strips:
            rows = []
            for i, s in enumerate(strips):
                rows.append((f"model {i}", s))
                if i < len(truths):
                    rows.append((f"truth {i}", truths[i]))
            path = folder / "caae_age_strips.png"
            save_grid(rows, path)
            paths["age_strips_png"] = str(path)
        pairs = min(c.interp_pairs, len(order) // 2)
        if pairs:
            idx = order[: 2 * pairs]
            b = source.load(idx)
            x, t = b["image"], b["age_group"].long()
            gender = b["gender"].long() if use_gender else None
            z = E(x)
            z1, z2 = z[0::2], z[1::2]  # [P, Z]
            w = torch.linspace(0, 1, c.interp_steps)  # [S]
            zi = z1[:, None] * (1 - w[None, :, None]) + z2[:, None] * w[None, :, None]  # [P, S, Z]
            t1 = t[0::2].repeat_interleave(c.interp_steps)  # decode at the first face's age group
            g1 = gender[0::2].repeat_interleave(c.interp_steps) if gender is not None else None
            imgs = G(rearrange(zi, "p s z -> (p s) z"), t1, g1)
            imgs = rearrange(imgs, "(p s) c h w -> p s c h w", p=pairs)
            rows = [(f"pair {p}", torch.cat([x[2 * p : 2 * p + 1], imgs[p], x[2 * p + 1 : 2 * p + 2]])) for p in range(pairs)]
            path = folder / "caae_interp.png"
            save_grid(rows, path)
            paths["interp_png"] = str(path)
        return paths
