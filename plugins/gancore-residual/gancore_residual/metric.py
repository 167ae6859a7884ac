"""``residual.edit``: how well a ResGAN run adds and removes its attribute, measured on
held-out synthfaces against the *true* counterfactual render.

For each held-out face (the run's test split, half without and half with the attribute):

1. its scene factors are rendered again with only the attribute flipped — the true
   counterfactual ``c`` — together with the attribute's ground-truth part mask ``m``
   (the union of the part's masks in both renders: glasses drawn in either);
2. the run edits it: ``x̃ = G0(x)`` for faces without the attribute, ``x̃ = G1(x)`` with it;
3. numbers, each next to the do-nothing baseline ``x̃ = x``:

   - ``l1_in_mask`` / ``psnr_in_mask``: mean |x̃ − c| (on the [-1, 1] scale) and PSNR
     (on the [0, 1] scale) over the mask's pixels — did the edit draw the right thing where
     it belongs;
   - ``psnr_out_mask``: PSNR of x̃ against c outside the mask — is everything else kept
     (capped at 60 dB; the baseline's is that high only if the renders agree exactly there);
   - ``residual_in_mask``: Σ|r| inside the mask / Σ|r| — is the residual local (compare
     with ``mask_area``, the share a uniform residual would get);
   - ``success_oracle``: share of edits that an oracle attribute classifier judges to have
     the target value.  The oracle is a small CNN trained inside the metric, for
     ``oracle_steps`` Adam steps, on the run's *training* split labels; ``oracle_accuracy``
     is its accuracy on the untouched held-out faces and ``oracle_accuracy_counterfactual``
     on their true counterfactuals (both should be near 1 for the oracle to be trusted);
   - ``success_nearest``: share of outputs closer (L2, whole image) to the counterfactual
     than to the input — an oracle-free check.

Reported overall and per direction (``add.*`` from G0, ``remove.*`` from G1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from gancore.metrics import Metric, per_sample_mean, psnr
from gancore.parts import Config

__all__ = ["EditMetric", "MetricError"]

class MetricError(ValueError):
    """The run cannot be evaluated by this metric; the message says why."""


class EditConfig(Config):
    num_faces: int = Field(256, ge=2, description="held-out faces evaluated (half without, half with the attribute)")
    batch_size: int = Field(64, ge=1, description="faces per forward pass")
    oracle_steps: int = Field(300, ge=0, description="training steps of the CNN oracle (0: no CNN oracle)")
    oracle_batch: int = Field(64, ge=2, description="oracle training batch")
    oracle_pool: int = Field(2048, ge=16, description="training-split images the oracle learns from")
    seed: int = Field(0, description="seed of the face selection and the oracle")


class Oracle(nn.Module):
    """A small attribute classifier: 4 stride-2 convs (16 → 128 ch), global average pool, 2 logits."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for out in (16, 32, 64, 128):
            layers += [nn.Conv2d(c, out, 3, 2, 1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))  # [B, 2]


def _nanmean(t: torch.Tensor) -> float:
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else float("nan")


class EditMetric(Metric):
    """Edit error vs true synthfaces counterfactuals, preservation, residual locality, oracle success."""

    Config = EditConfig
    schedules = ("residual.dual",)

    # -- the oracle ---------------------------------------------------------------------
    def train_oracle(self, run: Any, attribute_label: str = "attribute") -> Oracle:
        """A CNN attribute classifier trained on (a pool of) the run's training split."""
        c = self.config
        src = run.data("train")
        labels = src.labels()[attribute_label]
        g = torch.Generator().manual_seed(c.seed + 1)
        # a balanced pool: half of each class (as far as each class has samples)
        pool = []
        for value in (0, 1):
            idx = (labels == value).nonzero().flatten()
            pool.append(idx[torch.randperm(len(idx), generator=g)[: c.oracle_pool // 2]])
        pool = torch.cat(pool)
        images, y = [], []
        for i in range(0, len(pool), 256):
            b = src.load(pool[i : i + 256].tolist())
            images.append(b["image"])
            y.append(b[attribute_label].long())
        images, y = torch.cat(images), torch.cat(y)
        torch.manual_seed(c.seed)
        oracle = Oracle()
        opt = torch.optim.Adam(oracle.parameters(), lr=2e-3)
        oracle.train()
        for _ in range(c.oracle_steps):
            k = torch.randint(0, len(images), (c.oracle_batch,), generator=g)
            x = images[k]
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=g) < 0.5, x, x.flip(-1))  # mirror augmentation
            loss = F.cross_entropy(oracle(x), y[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return oracle.eval().requires_grad_(False)

    # -- the metric ---------------------------------------------------------------------------
    @torch.no_grad()
    def compute(self, run: Any) -> dict[str, Any]:
        from .synth import counterfactuals, require_synthfaces

        c = self.config
        src = run.data("test")
        require_synthfaces(src)
        labels = src.labels()["attribute"]
        g = torch.Generator().manual_seed(c.seed)
        chosen = []
        for value in (0, 1):
            idx = (labels == value).nonzero().flatten()
            if len(idx) == 0:
                raise MetricError(f"the held-out split has no face with {src.config.attribute} = {value}")
            chosen.append(idx[torch.randperm(len(idx), generator=g)[: c.num_faces // 2]])
        with torch.enable_grad():
            oracle = self.train_oracle(run) if c.oracle_steps > 0 else None

        G0, G1 = run.nets["G0"].eval(), run.nets["G1"].eval()
        rows: dict[str, list[torch.Tensor]] = {}

        def add(key: str, v: torch.Tensor) -> None:
            rows.setdefault(key, []).append(v.float().cpu())

        for value, idx_all in zip((0, 1), chosen):
            for i in range(0, len(idx_all), c.batch_size):
                idx = idx_all[i : i + c.batch_size].tolist()
                G = G0 if value == 0 else G1
                made: dict[str, Any] = {}

                def edit(x: torch.Tensor) -> torch.Tensor:  # G(x), computed once and kept
                    made["y"] = G(x)
                    return made["y"].out.clamp(-1, 1)

                # x, cf [B, 3, H, W]; mask [B, 1, H, W] in {0, 1}
                x, cf, mask = counterfactuals(src, idx, choose=edit)
                y = made["y"] if "y" in made else G(x)
                out, r = y.out.clamp(-1, 1), y.residual
                d = "add" if value == 0 else "remove"
                inv = 1 - mask
                for name, img in (("model", out), ("baseline", x)):
                    add(f"{d}.{name}.l1_in_mask", per_sample_mean((img - cf).abs(), mask))
                    add(f"{d}.{name}.psnr_in_mask", psnr(per_sample_mean((img - cf).square(), mask)))
                    add(f"{d}.{name}.psnr_out_mask", psnr(per_sample_mean((img - cf).square(), inv)))
                add(f"{d}.model.residual_in_mask", (r.abs() * mask).flatten(1).sum(1) / r.abs().flatten(1).sum(1).clamp_min(1e-12))
                add(f"{d}.mask_area", mask.flatten(1).mean(1))
                to_cf = (out - cf).square().flatten(1).sum(1)
                to_x = (out - x).square().flatten(1).sum(1)
                add(f"{d}.model.success_nearest", (to_cf < to_x).float())
                if oracle is not None:
                    target = 1 - value
                    add(f"{d}.model.success_oracle", (oracle(out).argmax(1) == target).float())
                    add(f"{d}.baseline.success_oracle", (oracle(x).argmax(1) == target).float())
                    add(f"{d}.oracle_accuracy", (oracle(x).argmax(1) == value).float())
                    add(f"{d}.oracle_accuracy_counterfactual", (oracle(cf).argmax(1) == target).float())

        result: dict[str, Any] = {"faces": sum(len(i) for i in chosen), "attribute": src.config.attribute,
                                  "oracle": f"cnn, {c.oracle_steps} steps on {c.oracle_pool} training renders"
                                  if oracle is not None else "none"}
        cat = {k: torch.cat(v) for k, v in rows.items()}
        for k, v in sorted(cat.items()):
            result[k] = round(_nanmean(v), 4)
        for k in sorted({k.split(".", 1)[1] for k in cat}):  # overall: both directions pooled
            both = [cat[f"{d}.{k}"] for d in ("add", "remove") if f"{d}.{k}" in cat]
            result[k] = round(_nanmean(torch.cat(both)), 4)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
