"""``tdgan.rerender``: TD-GAN's re-rendering measured against the true images (the paper's protocol).

For every held-out identity (a test-split chair model or face, never seen in training; the
schedule's ``where`` applies, e.g. one elevation) one input image is drawn (a seeded random
view of it).  For each swept tag T (default: every tag but identity; chairs: ``view``,
faces: ``pose``, ``light``, ``expression``) the input is re-rendered at every value v of T,
G(R(x) with block T := g(v)), and compared with the true image of the same identity at v
(:func:`gancore_tdgan.tagdata.images_with_tag`: a counterfactual render that changes only T,
or the dataset's own image).  MSE is per pixel on the [-1, 1] scale.

Two baselines that need no TD-GAN:

- ``copy``: the input itself, answered for every v.
- ``nn``: the nearest training image to the input (pixel MSE) among training images with
  the input's value of T, shown at v: the dataset's image of that training identity at v
  (the same chair model at the target view).  It uses every training image with its
  true labels, whatever fraction of tags the model was trained with.

Keys per tag T (``eval.json``): ``T.mse_vs_nn`` / ``T.mse_vs_nn_baseline`` and
``T.mse_vs_copy`` / ``T.mse_vs_copy_baseline``: TD-GAN's MSE over all values (the paper's "all
31 views", the input's own value included) beside each baseline's; ``T.mse_new_vs_*``: the
same over the other values only; ``T.mse_over_nn``; per value ``T.mse_by_value``,
``T.copy_by_value``, ``T.nn_by_value`` and, for a tag that goes round the circle (chairs'
azimuth), per offset from the input's value ``T.*_by_offset``; ``T.values_worse_than_copy``.
Figures under ``RUN/eval/``: ``tdgan_<tag>.png``, rows of (input, re-renders at every 30° or
at spread values) above the true images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import Field

from gancore.metrics import Metric
from gancore.parts import Config

from .schedule import rerender, spread
from .tagdata import LabelIndex, images_with_tag, nearest_degrees, tag_degrees

__all__ = ["RerenderMetric", "pick_inputs", "nearest", "sweep_scores", "mse_per_sample", "flatten"]


def mse_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean squared difference per image."""
    return (a.float() - b.float()).square().flatten(1).mean(1)


def pick_inputs(labels: dict[str, torch.Tensor], keep: torch.Tensor, limit: int = 0, seed: int = 0) -> list[int]:
    """One seeded random sample per identity among ``keep`` (sorted by identity; at most ``limit`` identities if > 0)."""
    ids = labels["identity"]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in sorted(ids[keep].unique().tolist()):
        pool = (keep & (ids == i)).nonzero().flatten()
        out.append(int(pool[torch.randint(len(pool), (1,), generator=g)]))
        if limit and len(out) >= limit:
            break
    return out


def nearest(x: torch.Tensor, pool: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """For each image of ``x [B, ...]`` the index of its nearest image in ``pool [N, ...]`` (pixel MSE)."""
    xf = x.flatten(1).float()
    best = torch.full((len(x),), float("inf"))
    arg = torch.zeros(len(x), dtype=torch.long)
    for s in range(0, len(pool), chunk):
        p = pool[s : s + chunk].flatten(1).float()
        d = torch.cdist(xf, p).square()  # [B, n]
        v, i = d.min(1)
        better = v < best
        best[better], arg[better] = v[better], i[better] + s
    return arg


def sweep_scores(err: torch.Tensor, own: torch.Tensor, found: torch.Tensor, circular: bool) -> dict[str, Any]:
    """Summaries of an error table ``err [N, K]`` (input n re-rendered at value k; ``own [N]`` its own value)."""
    n, k = err.shape
    other = torch.ones(n, k, dtype=torch.bool)
    other[torch.arange(n), own] = False

    def mean(mask: torch.Tensor) -> float | None:
        m = mask & found
        return float(err[m].mean()) if m.any() else None

    out: dict[str, Any] = {
        "all": mean(torch.ones_like(found)),
        "new": mean(other),
        "by_value": [None if not found[:, j].any() else round(float(err[found[:, j], j].mean()), 6) for j in range(k)],
    }
    if circular:
        off = (torch.arange(k)[None] - own[:, None]) % k  # [N, K]
        out["by_offset"] = [mean(off == j) for j in range(k)]
        out["by_offset"] = [None if v is None else round(v, 6) for v in out["by_offset"]]
    return out


def flatten(tag: str, res: dict[str, Any]) -> dict[str, Any]:
    """One tag's results as flat ``eval.json`` keys, each model number beside its baseline
    (gancore's naming rule: ``view.mse_vs_nn`` beside ``view.mse_vs_nn_baseline``)."""
    out: dict[str, Any] = {f"{tag}.values": res["values"]}
    for which in ("copy", "nn"):
        if f"{which}_mse" not in res:
            continue
        out[f"{tag}.mse_vs_{which}"], out[f"{tag}.mse_vs_{which}_baseline"] = res["mse"], res[f"{which}_mse"]
        out[f"{tag}.mse_new_vs_{which}"], out[f"{tag}.mse_new_vs_{which}_baseline"] = res["mse_new"], res[f"{which}_mse_new"]
    for key in ("mse_over_nn", "pairs_without_truth", "values_worse_than_copy", "degrees_by_value",
                "mse_by_value", "copy_by_value", "nn_by_value", "mse_by_offset", "copy_by_offset", "nn_by_offset"):
        if key in res:
            out[f"{tag}.{key}"] = res[key]
    return out


def _goes_round(degrees: dict[int, float] | None) -> bool:
    """Whether a tag's values go round the circle (evenly spaced azimuths: 31 views of 11.6°)."""
    if not degrees or len(degrees) < 3:
        return False
    span = max(degrees.values()) - min(degrees.values())
    return span * len(degrees) / (len(degrees) - 1) >= 350.0


class RerenderMetric(Metric):
    """Re-render every held-out identity at every value of each tag; MSE vs the true images,
    next to copying the input and the nearest training image."""

    schedules = ("tdgan.alternating",)

    class Config(Config):
        objects: int = Field(0, ge=0, description="held-out identities evaluated (0: every one)")
        tags: list[str] | None = Field(None, description="tags swept (default: every schedule tag but identity)")
        batch: int = Field(32, ge=1, description="inputs per forward pass")
        nn: bool = Field(True, description="compute the nearest-training-image baseline")
        truth: str = Field("render", pattern="^(render|lookup)$",
                           description="'render': counterfactual renders where the source can draw them; 'lookup': the split's own images")
        figure_objects: int = Field(4, ge=0, description="identities in each figure")
        figure_step: float = Field(30.0, gt=0, description="degrees between the figure's columns for view-like tags")
        figure_columns: int = Field(12, ge=1, description="columns of the figure for tags without angles")
        seed: int = Field(0, ge=0, description="seed of the input-view draw")

    # -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compute(self, run: Any) -> dict[str, Any]:
        c = self.config
        sched = run.schedule.config
        for net in run.nets.values():
            net.eval()
        tags = c.tags or [t for t in sched.tags if t != "identity"]
        bad = [t for t in tags if t not in sched.tags]
        if bad:
            raise ValueError(f"tdgan.rerender: tags {bad} are not tags of this run ({sched.tags})")
        test = run.data("test")
        tl = test.labels()
        keep = torch.ones(len(test), dtype=torch.bool)
        for k, v in sched.where.items():
            keep &= tl[k] == v
        for t in sched.tags:
            keep &= tl[t] >= 0
        inputs = pick_inputs(tl, keep, c.objects, c.seed)
        if not inputs:
            raise ValueError("tdgan.rerender: the test split has no sample with every tag (and the schedule's `where`)")
        keys = list(dict.fromkeys(["identity", *sched.tags, *sched.where]))
        test_index = LabelIndex(tl, keys)
        train = train_labels = train_index = None
        if c.nn:
            train = self._full_train(run)
            train_labels = train.labels()
            train_index = LabelIndex(train_labels, keys)
        model = lambda x, tag, v: rerender(run.nets, x, {tag: torch.full((len(x),), v, dtype=torch.long)})  # noqa: E731
        out: dict[str, Any] = {"objects": len(inputs), "step": run.step, "tags": tags}
        for tag in tags:
            res, fig = self._sweep(run, model, test, tl, test_index, inputs, tag, sched.where, train, train_labels, train_index)
            out.update(flatten(tag, res))
            if fig:
                out[f"{tag}.figure_png"] = fig
        return out

    @staticmethod
    def _full_train(run: Any) -> Any:
        """The training split with every label kept (the baseline knows every training image's tags)."""
        cfg = run.resolved.data_config
        update: dict[str, Any] = {"split": "train"}
        if "label_fraction" in type(cfg).model_fields:
            update["label_fraction"] = 1.0
        return run.resolved.data_spec.build(cfg.model_copy(update=update))

    # -------------------------------------------------------------------------------------------
    def _sweep(self, run: Any, model: Callable[[torch.Tensor, str, int], torch.Tensor], test: Any,
               tl: dict[str, torch.Tensor], test_index: LabelIndex, inputs: Sequence[int], tag: str,
               where: dict[str, int], train: Any, trl: dict[str, torch.Tensor] | None,
               train_index: LabelIndex | None) -> tuple[dict[str, Any], str | None]:
        c = self.config
        K = run.nets["g"].classes[tag]
        degrees = tag_degrees(tl, tag)
        circular = _goes_round(degrees)
        render_truth = c.truth == "render"
        nn_idx = self._nearest_training(test, tl, inputs, tag, where, train, trl) if train is not None else None
        n = len(inputs)
        err, copy, nn_err = (torch.zeros(n, K) for _ in range(3))
        found = torch.zeros(n, K, dtype=torch.bool)
        nn_found = torch.zeros(n, K, dtype=torch.bool)
        cols = self._figure_values(degrees, K)
        fig_rows: list[tuple[str, torch.Tensor]] = []
        for s in range(0, n, c.batch):
            idx = list(inputs[s : s + c.batch])
            x = test.load(idx)["image"]
            outs = {}
            for v in range(K):
                y = model(x, tag, v)
                truth, ok = images_with_tag(test, tl, test_index, idx, tag, v, degrees, render=render_truth)
                if truth is None:
                    continue
                rows = slice(s, s + len(idx))
                err[rows, v], copy[rows, v], found[rows, v] = mse_per_sample(y, truth), mse_per_sample(x, truth), ok
                if nn_idx is not None:
                    ans, ok_nn = self._nn_answer(train, trl, train_index, nn_idx[rows].tolist(), tag, v, degrees)
                    if ans is not None:
                        nn_err[rows, v], nn_found[rows, v] = mse_per_sample(ans, truth), ok & ok_nn
                if v in cols:
                    outs[v] = (y, truth)
            take = min(c.figure_objects - len(fig_rows) // 2, len(idx))
            for i in range(max(take, 0)):
                if all(v in outs for v in cols):
                    white = torch.ones_like(x[i : i + 1])
                    fig_rows.append((f"model {s + i}", torch.cat([x[i : i + 1]] + [outs[v][0][i : i + 1] for v in cols])))
                    fig_rows.append((f"truth {s + i}", torch.cat([white] + [outs[v][1][i : i + 1] for v in cols])))
        own = tl[tag][torch.tensor(list(inputs))].long()
        model_s, copy_s = sweep_scores(err, own, found, circular), sweep_scores(copy, own, found, circular)
        res: dict[str, Any] = {
            "values": K, "mse": model_s["all"], "mse_new": model_s["new"],
            "copy_mse": copy_s["all"], "copy_mse_new": copy_s["new"],
            "mse_by_value": model_s["by_value"], "copy_by_value": copy_s["by_value"],
            "pairs_without_truth": int((~found).sum()),
        }
        if circular:
            res["mse_by_offset"], res["copy_by_offset"] = model_s["by_offset"], copy_s["by_offset"]
        if nn_idx is not None:
            nn_s = sweep_scores(nn_err, own, nn_found, circular)
            res.update({"nn_mse": nn_s["all"], "nn_mse_new": nn_s["new"], "nn_by_value": nn_s["by_value"]})
            if circular:
                res["nn_by_offset"] = nn_s["by_offset"]
            if res["nn_mse"]:
                res["mse_over_nn"] = res["mse"] / res["nn_mse"]
        by, cb = res["mse_by_value"], res["copy_by_value"]
        res["values_worse_than_copy"] = [v for v in range(K) if by[v] is not None and cb[v] is not None and by[v] > cb[v]]
        if degrees:
            res["degrees_by_value"] = [round(degrees.get(v, float("nan")), 2) for v in range(K)]
        return res, self._write_figure(run, tag, fig_rows)

    def _figure_values(self, degrees: dict[int, float] | None, k: int) -> list[int]:
        c = self.config
        if degrees:
            angles = [min(degrees.values()) + i * c.figure_step for i in range(int(360 / c.figure_step))]
            vals = list(dict.fromkeys(nearest_degrees(degrees, a) for a in angles
                                      if a <= max(degrees.values()) + c.figure_step / 2))
            return vals
        return spread(k, c.figure_columns)

    @staticmethod
    def _nearest_training(test: Any, tl: dict[str, torch.Tensor], inputs: Sequence[int], tag: str, where: dict[str, int],
                          train: Any, trl: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per input, the index of the nearest training image with the input's value of ``tag``."""
        keep = torch.ones(len(trl["identity"]), dtype=torch.bool)
        for k, v in where.items():
            keep &= trl[k] == v
        inputs_t = torch.tensor(list(inputs))
        own = tl[tag][inputs_t]
        out = torch.zeros(len(inputs), dtype=torch.long)
        for u in own.unique().tolist():
            pool = (keep & (trl[tag] == u)).nonzero().flatten()
            which = (own == u).nonzero().flatten()
            if len(pool) == 0:
                raise ValueError(f"tdgan.rerender: no training image has {tag} = {u} for the nearest-neighbour baseline")
            x = test.load(inputs_t[which].tolist())["image"]
            pool_img = torch.cat([train.load(pool[i : i + 256].tolist())["image"] for i in range(0, len(pool), 256)])
            out[which] = pool[nearest(x, pool_img)]
        return out

    @staticmethod
    def _nn_answer(train: Any, trl: dict[str, torch.Tensor], index: LabelIndex | None, idx: list[int], tag: str, v: int,
                   degrees: dict[int, float] | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The nearest training images shown at ``v``: the split's own image, else a counterfactual render."""
        img, ok = images_with_tag(train, trl, index, idx, tag, v, degrees, render=False)
        if bool(ok.all()):
            return img, ok
        miss = (~ok).nonzero().flatten()
        more, ok2 = images_with_tag(train, trl, None, [idx[i] for i in miss.tolist()], tag, v, degrees, render=True)
        if more is None:
            return img, ok
        if img is None:
            img = torch.zeros(len(idx), *more.shape[1:])
        img[miss], ok[miss] = more, ok2
        return img, ok

    @staticmethod
    def _write_figure(run: Any, tag: str, rows: list[tuple[str, torch.Tensor]]) -> str | None:
        if not rows:
            return None
        from gancore.engine import save_grid

        path = run.dir / "eval" / f"tdgan_{tag}.png"
        save_grid(rows, path)
        return str(path)
