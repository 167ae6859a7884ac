"""``drgan.recognition``: the DR-GAN paper's evaluation, on held-out identities, against
ground truth that no real dataset has.

``gancore eval RUN`` (protocol ``multipie``: the run's own test split — synthfaces'
``multipie`` profile, or a real Multi-PIE root) measures:

- **rank-1 identification per pose** (the paper's Multi-PIE table): gallery = one frontal,
  frontal-light, neutral image per test identity; probes = every other neutral image of
  the test identities at every pose the data has (out to ±90°); cosine similarity of
  f(x) = G_enc(x).  Next to two baselines that need no training: raw pixels (centred) and
  the features of an untrained G_enc (same architecture, the paper's initialisation).
  ``rank1_avg60`` is the mean over the poses within ±60° (each pose weighted equally, as
  the paper's average).
- **multi-image curve**: for n = 1..6, random sets of n probe images (within ±60°) of each
  test identity, fused with G_enc's confidences ω (f = Σω f / Σω; an encoder without ω
  gives the plain mean), against the single-image gallery: rank-1, and verification
  (genuine: the set vs its own identity's gallery image; impostor: vs every other) as ROC
  AUC and EER.  Multi-image runs also report the plain mean, to show what ω adds.
- **pose control**: a pose classifier — a small CNN trained here on the run's *training*
  renders and their pose labels, held apart from D — judges G(f(x), c, z = 0) for held-out
  faces x at every requested pose c: the share it recognises as c, per requested pose.
  ``pose_classifier_accuracy`` is its accuracy on real held-out renders (it must be high
  for the number to mean anything).
- **rotation and frontalization error** (synthetic data: exact counterfactual renders; real
  Multi-PIE: the image of the same subject, session, recording and illumination at that
  camera): MSE between G(f(x), c) and the true image at pose c, next to the do-nothing
  baseline (the input itself) and the mean-face baseline (the mean training image at pose
  c).  Frontalization is c = frontal; ``identity_kept`` is the share of rotations whose
  nearest true render (MSE) among the same scene with 10 identities (own + 9 others, same
  pose, light, expression, background) is their own (synthetic data only; chance 0.1).
- **sharpness** (CVPR Fig. 4: an L2-trained G renders blurred faces, DR-GAN's adversarial
  one sharp ones — a contrast that pixel errors, which reward blur, cannot show): the mean
  absolute difference between neighbouring pixels of G's rotations over that of the true
  images at the same pose (1 = as much fine detail as the truth), per pose and averaged;
  ``sharpness_baseline`` is the mean face's ratio (what averaging gives).
- figures under ``RUN/eval/``: ``drgan_rotations.png`` (pairs of rows: the input and its
  rotation to every pose, then the true renders beneath), and for multi-image runs
  ``drgan_fused.png`` (n inputs, then their fused identity at every pose).
- a same/different threshold for ``gancore verify`` (best accuracy on genuine and impostor
  pairs of held-out identities), stored as ``RUN/drgan_verify.json``.

``gancore eval RUN --protocol cfp --root CFP_ROOT``: CFP's 10-fold Frontal–Frontal and
Frontal–Profile verification (accuracy at the threshold best on the other nine folds,
EER, AUC; mean ± std over the folds), on any folder in CFP's layout with its
``Protocol/`` files (``gancore data export synthfaces --format cfp`` writes one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from gancore.data.base import DataError
from gancore.metrics import Metric, per_sample_mean, psnr
from gancore.parts import Config

from . import protocol
from .fusion import fuse
from .poses import frontal_pose, pose_yaws, standard_yaws
from .schedule import to_channels

__all__ = ["RecognitionMetric", "MetricError", "verification_threshold", "VERIFY_FILE", "encode", "detail"]

SCHEDULE = "drgan.schedule"
#: where the verification threshold is stored in a run folder.
VERIFY_FILE = "drgan_verify.json"


class MetricError(DataError):
    """The run or the data cannot be evaluated this way; the message says why (the CLI
    prints it and exits with status 2, as for other data errors)."""


class RecognitionConfig(Config):
    protocol: Literal["multipie", "cfp"] = Field("multipie", description="'multipie': the run's test split; 'cfp': CFP 10-fold verification under root")
    root: str | None = Field(None, description="protocol 'cfp': a folder in CFP's layout with Protocol/")
    expressions: Literal["neutral", "all"] = Field("neutral", description="probe expressions (the paper: neutral)")
    gallery_light: int | None = Field(None, description="gallery illumination (default: synthfaces 10, nearest the camera; Multi-PIE 7)")
    max_probes: int = Field(8000, ge=10, description="probes kept (a fixed random subset when there are more)")
    batch: int = Field(256, ge=1, description="images per forward pass")
    multi_max: int = Field(6, ge=1, description="largest n of the multi-image curve")
    multi_sets: int = Field(10, ge=1, description="random sets per identity and n")
    multi_yaw: float = Field(60.0, ge=0, description="multi-image sets are drawn from probes within +-this yaw")
    pose_faces: int = Field(96, ge=1, description="held-out faces rotated to every pose (pose control, rotation error)")
    identity_faces: int = Field(32, ge=0, description="of those, faces whose rotations get the 10-identity check")
    mean_faces: int = Field(64, ge=1, description="training images per pose averaged into the mean-face baseline")
    classifier_steps: int = Field(300, ge=1, description="Adam steps of the held-apart pose classifier")
    classifier_batch: int = Field(64, ge=2)
    figure_faces: int = Field(4, ge=0, description="faces in drgan_rotations.png")
    test_identities: int | None = Field(
        None, ge=2, description="synthfaces: held-out identities rendered for the test (gallery size); None: the run's test split"
    )
    seed: int = Field(0)


def encode(enc: nn.Module, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) ``[N, F]`` and ω ``[N]`` of images in [-1, 1] (converted to the encoder's channels)."""
    fs, ws = [], []
    dev = next(enc.parameters()).device
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            e = enc(to_channels(images[i : i + batch].to(dev), enc.in_channels))
            fs.append(e.f.float().cpu())
            ws.append(e.omega.float().cpu())
    return torch.cat(fs), torch.cat(ws)


def _light_label(labels: dict[str, torch.Tensor]) -> str | None:
    return "light" if "light" in labels else ("illumination" if "illumination" in labels else None)


def _default_light(source: Any) -> int:
    if type(source).__name__ == "SynthFaces":
        from gancore_synth.synthfaces import LIGHT_DIRS

        return int(LIGHT_DIRS[:, 2].argmax())  # the light nearest the camera axis
    return 7  # Multi-PIE's frontal flash


def _synthetic(source: Any) -> bool:
    return hasattr(source, "factors") and hasattr(source, "render")


def _test_source(run: Any, identities: int | None = None) -> Any:
    """The run's test split; for synthfaces' multipie profile the complete grid of the test
    identities at every pose (so that every gallery image exists), with ``identities`` held-out
    identities instead of the split's own number when given."""
    cfg = run.resolved.data_config
    if run.resolved.data_spec.name == "synthfaces" and getattr(cfg, "profile", None) == "multipie":
        from gancore_synth.synthfaces import N_EXPRESSIONS, N_LIGHTS, N_POSES

        update: dict[str, Any] = {"split": "test"}
        if "poses" in type(cfg).model_fields:
            update["poses"] = "all"
        if identities is not None:
            update["test_identities"] = identities
        source = run.resolved.data_spec.build(cfg.model_copy(update=update))
        update["size"] = source.n_ids_test * N_POSES * N_LIGHTS * N_EXPRESSIONS
        return run.resolved.data_spec.build(cfg.model_copy(update=update))
    if identities is not None:
        raise MetricError(f"drgan.recognition.test_identities = {identities} renders more held-out identities, which only "
                          f"synthfaces' multipie profile can; this run's data is {run.resolved.data_spec.name!r}")
    return run.data("test")


def detail(x: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean absolute difference between horizontally and vertically neighbouring pixels
    (half each): how much fine detail, edges and texture an image has; blur lowers it."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return (dx + dy) / 2


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean squared error [B]; over the pixels of ``mask`` ([B, 1, R, R]) when given."""
    sq = (a.float() - b.float()).square()
    if mask is None:
        return per_sample_mean(sq)
    return (sq * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * a.shape[1]).clamp_min(1)


def head_mask(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head ([B, 1, R, R], 0/1) from synthfaces' part masks: every part but background and body."""
    return (sum(m for name, m in masks.items() if name not in ("background", "body")) > 0.5).float()[:, None]


class PoseClassifier(nn.Module):
    """A small CNN that tells the pose of a face: 4 stride-2 convs + global pool + FC."""

    def __init__(self, channels: int, poses: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for k in range(4):
            cout = width * 2 ** min(k, 2)
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, poses)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


def train_pose_classifier(source: Any, poses: int, channels: int, steps: int, batch: int, seed: int) -> PoseClassifier:
    """Train the held-apart pose classifier on ``source``'s images and pose labels."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        clf = PoseClassifier(channels, poses)
        opt = torch.optim.Adam(clf.parameters(), lr=2e-3)
        pose = source.labels()["pose"].long()
        usable = torch.nonzero((pose >= 0) & (pose < poses)).flatten()
        clf.train()
        for _ in range(steps):
            idx = usable[torch.randint(len(usable), (batch,), generator=gen)].tolist()
            b = source.load(idx)
            x = to_channels(b["image"], channels)
            loss = F.cross_entropy(clf(x), b["pose"].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return clf.eval()


def _sets(pool: torch.Tensor, n: int, count: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``count`` random sets of ``n`` distinct entries of ``pool`` (indices)."""
    return [pool[torch.randperm(len(pool), generator=gen)[:n]] for _ in range(count)]


def verification_pairs(f: torch.Tensor, ids: torch.Tensor, pairs: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores and same-identity flags of ``pairs`` genuine and ``pairs`` impostor random pairs."""
    n = len(ids)
    order = torch.argsort(ids)
    first, second, same = [], [], []
    uniq, counts = torch.unique(ids, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    for _ in range(pairs):  # genuine: two images of one identity
        k = int(torch.randint(len(uniq), (1,), generator=gen))
        if counts[k] < 2:
            continue
        a, b = torch.randperm(int(counts[k]), generator=gen)[:2] + starts[k]
        first.append(int(order[a])); second.append(int(order[b])); same.append(True)
    while len(same) < 2 * max(1, sum(same)):  # impostor: two identities
        a, b = torch.randint(n, (2,), generator=gen).tolist()
        if ids[a] != ids[b]:
            first.append(a); second.append(b); same.append(False)
    fa, fb = F.normalize(f[first], dim=1), F.normalize(f[second], dim=1)
    return (fa * fb).sum(1), torch.tensor(same)


def threshold_from_features(f: torch.Tensor, ids: torch.Tensor, pairs: int, gen: torch.Generator) -> dict[str, Any]:
    """The best-accuracy cosine threshold on random genuine and impostor pairs of features ``f``."""
    scores, same = verification_pairs(f, ids, pairs, gen)
    t, acc = protocol.best_threshold(scores, same)
    e, _ = protocol.eer(scores, same)
    return {"threshold": t, "accuracy": acc, "eer": e, "pairs": int(same.numel()),
            "identities": int(ids.unique().numel()), "chosen_on": "test split (held-out identities)"}


def verification_threshold(run: Any, images: int = 1000, pairs: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The same/different threshold of ``gancore verify``, chosen on held-out identities: the
    cosine with the best accuracy on random genuine and impostor pairs of the test split."""
    source = _test_source(run)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(source), generator=gen)[: min(len(source), images)]
    f, _ = encode(run.nets["G_enc"], source.load(idx.tolist())["image"])
    return {**threshold_from_features(f, source.labels()["identity"][idx], pairs, gen), "step": run.step}


def write_verify_file(run: Any, result: dict[str, Any]) -> Path:
    path = Path(run.dir) / VERIFY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return path


class RecognitionMetric(Metric):
    """Rank-1 per pose, multi-image curve, pose control, rotation/frontalization error; CFP protocol."""

    schedules = (SCHEDULE,)
    protocols = ("multipie", "cfp")
    Config = RecognitionConfig

    @torch.no_grad()
    def compute(self, run: Any) -> dict[str, Any]:
        if self.config.protocol == "cfp":
            return self._cfp(run)
        return self._multipie(run)

    # -- the Multi-PIE protocol -------------------------------------------------------------
    def _multipie(self, run: Any) -> dict[str, Any]:
        c = self.config
        enc, dec = run.nets["G_enc"], run.nets["G_dec"]
        train_src = run.data("train")
        train_labels = train_src.labels()
        poses = dec.poses
        model_yaws = pose_yaws(train_labels, poses) or standard_yaws(poses)
        source = _test_source(run, c.test_identities)
        labels = source.labels()
        if "yaw" not in labels and "pose" not in labels:
            raise MetricError("the test data has neither 'yaw' nor 'pose' labels: per-pose rank-1 needs one")
        yaw = labels["yaw"].float() if "yaw" in labels else labels["pose"].float()
        ident = labels["identity"].long()
        light_key = _light_label(labels)
        gallery_light = c.gallery_light if c.gallery_light is not None else _default_light(source)
        keep = torch.ones(len(source), dtype=torch.bool)
        if c.expressions == "neutral" and "expression" in labels:
            keep &= labels["expression"] == 0
        is_gal = keep & (yaw.abs() < 1e-3)
        if light_key is not None:
            is_gal &= labels[light_key] == gallery_light
        gallery, seen = [], set()
        for i in torch.nonzero(is_gal).flatten().tolist():  # the first such image per identity
            if int(ident[i]) not in seen:
                seen.add(int(ident[i]))
                gallery.append(i)
        if len(gallery) < 2:
            raise MetricError(f"the test split has frontal, light-{gallery_light}, neutral images of {len(gallery)} "
                              "identities; rank-1 needs at least 2")
        gal_ids = set(seen)
        probe_mask = keep.clone()
        probe_mask[gallery] = False
        probe_mask &= torch.tensor([int(i) in gal_ids for i in ident.tolist()])
        probes = torch.nonzero(probe_mask).flatten()
        gen = torch.Generator().manual_seed(c.seed)
        if len(probes) > c.max_probes:
            probes = probes[torch.randperm(len(probes), generator=gen)[: c.max_probes]].sort().values
        gallery_t = torch.tensor(gallery)
        every = torch.cat([gallery_t, probes])
        images = torch.cat([source.load(every[i : i + c.batch].tolist())["image"] for i in range(0, len(every), c.batch)])
        g_img, p_img = images[: len(gallery)], images[len(gallery) :]
        f, omega = encode(enc, images, c.batch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            untrained = type(enc)(enc.config, info=enc.info).to(next(enc.parameters()).device).eval()
        f0, _ = encode(untrained, images, c.batch)
        pix = to_channels(images, enc.in_channels).flatten(1)
        pix = pix - pix.mean(0)
        g_ids, p_ids, p_yaw = ident[gallery_t], ident[probes], yaw[probes]
        yaws = sorted({round(float(v), 3) for v in p_yaw.tolist()})
        out: dict[str, Any] = {
            "protocol": "multipie", "step": run.step, "gallery_identities": len(gallery), "probes": len(probes),
            "gallery_light": gallery_light if light_key else None, "expressions": c.expressions,
            "yaws": yaws, "train_identities": int(run.info.label_classes.get("identity", 0)),
        }
        # model: f(x); baseline: raw pixels; also the untrained network (the naming rule of gancore.metrics)
        for name, feats in (("", f), ("_baseline", pix), ("_untrained", f0)):
            ok = protocol.rank1(feats[: len(gallery)], g_ids, feats[len(gallery) :], p_ids).float()
            per = [float(ok[(p_yaw - y).abs() < 1e-3].mean()) for y in yaws]
            within = [v for y, v in zip(yaws, per) if abs(y) <= 60 + 1e-3]
            out[f"rank1_avg60{name}"] = round(sum(within) / len(within), 4) if within else None
            out[f"rank1_all{name}"] = round(float(ok.mean()), 4)
            out[f"rank1{name}_by_yaw"] = [round(v, 4) for v in per]
        out["rank1_beats_pixels"] = bool(out["rank1_avg60"] > out["rank1_avg60_baseline"])
        out.update(self._multi_curve(f, omega, p_ids, p_yaw, f[: len(gallery)], g_ids, gen,
                                     with_mean=bool(getattr(enc.config, "confidence", False))))
        out.update(self._rotations(run, source, train_src, model_yaws, probes, p_img, gen))
        thr = {**threshold_from_features(f, ident[every], 2000, gen), "step": run.step}  # the probes' features
        out["verify_threshold"] = round(thr["threshold"], 4)
        out["verify_accuracy_heldout"] = round(thr["accuracy"], 4)
        if not getattr(run, "averages_skipped", False):  # `gancore verify` uses the averaged weights: keep theirs
            write_verify_file(run, thr)
            out["verify_threshold_file"] = str(Path(run.dir) / VERIFY_FILE)
        return out

    def _multi_curve(self, f: torch.Tensor, omega: torch.Tensor, p_ids: torch.Tensor, p_yaw: torch.Tensor,
                     gallery: torch.Tensor, g_ids: torch.Tensor, gen: torch.Generator, with_mean: bool) -> dict[str, Any]:
        """Rank-1, verification AUC and EER against the gallery for sets of n = 1..multi_max fused probes."""
        c = self.config
        pf, pw = f[len(g_ids) :], omega[len(g_ids) :]
        pool = {int(i): torch.nonzero((p_ids == i) & (p_yaw.abs() <= c.multi_yaw + 1e-3)).flatten() for i in g_ids.tolist()}
        curve: dict[str, list[float]] = {"n": [], "rank1": [], "auc": [], "eer": []}
        if with_mean:
            curve.update({"rank1_mean": [], "auc_mean": []})
        for n in range(1, c.multi_max + 1):
            rows, ids = [], []
            for i, idx in pool.items():
                if len(idx) < n:
                    continue
                for s in _sets(idx, n, c.multi_sets, gen):
                    rows.append(s)
                    ids.append(i)
            if not rows:
                break
            members = torch.cat(rows)
            group = torch.arange(len(rows)).repeat_interleave(n)
            fused = fuse(pf[members], pw[members], group, len(rows))
            plain = fuse(pf[members], torch.ones_like(pw[members]), group, len(rows))
            set_ids = torch.tensor(ids)
            curve["n"].append(n)
            for suffix, feats in (("", fused), ("_mean", plain)):
                if suffix and not with_mean:
                    continue
                ok = protocol.rank1(gallery, g_ids, feats, set_ids).float().mean()
                scores = protocol.cosine_matrix(feats, gallery)  # [S, G]
                same = set_ids[:, None] == g_ids[None, :]
                curve["rank1" + suffix].append(round(float(ok), 4))
                curve["auc" + suffix].append(round(protocol.auc(scores, same), 4))
                if not suffix:
                    curve["eer"].append(round(protocol.eer(scores, same)[0], 4))
        r = curve["rank1"]
        out: dict[str, Any] = {"multi_n": curve.pop("n")}
        out.update({f"multi_{k}_by_n": v for k, v in curve.items()})
        out["multi_beats_single"] = bool(len(r) > 1 and all(v > r[0] for v in r[1:]))
        return out

    # -- pose control and rotation error ----------------------------------------------------------
    def _truth(self, source: Any, labels: dict[str, torch.Tensor], idx: list[int], yaw: float,
               model_channels: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """True images of samples ``idx`` at ``yaw`` and, for synthetic data, the head's mask
        ``[B, 1, R, R]`` (every part but background and body): counterfactual renders, or the
        real image of the same subject/session/recording/illumination at that camera (None if
        any is missing)."""
        if _synthetic(source):
            f = source.factors(idx)
            f["yaw"] = torch.full_like(f["yaw"].float(), yaw)
            image, masks = source.render(f, masks=True)
            return to_channels(image, model_channels), head_mask(masks)
        keys = [k for k in ("identity", "session", "recording", "illumination", "expression") if k in labels]
        if "yaw" not in labels:
            return None
        found = []
        for i in idx:
            m = (labels["yaw"] - yaw).abs() < 1e-3
            for k in keys:
                m &= labels[k] == labels[k][i]
            hit = torch.nonzero(m).flatten()
            if len(hit) == 0:
                return None
            found.append(int(hit[0]))
        return to_channels(source.load(found)["image"], model_channels), None

    def _rotations(self, run: Any, source: Any, train_src: Any, model_yaws: list[float] | None, probes: torch.Tensor,
                   p_img: torch.Tensor, gen: torch.Generator) -> dict[str, Any]:
        c = self.config
        enc, dec = run.nets["G_enc"], run.nets["G_dec"]
        dev = next(dec.parameters()).device
        poses, ch = dec.poses, dec.channels
        labels = source.labels()
        pick = torch.randperm(len(probes), generator=gen)[: min(c.pose_faces, len(probes))]
        idx = probes[pick].tolist()
        x = to_channels(p_img[pick], enc.in_channels)
        f, _ = encode(enc, x, c.batch)
        rot = torch.stack([dec(f.to(dev), torch.full((len(idx),), p, device=dev)).float().cpu() for p in range(poses)])  # [P, B, C, R, R]
        clf = train_pose_classifier(train_src, poses, ch, c.classifier_steps, c.classifier_batch, c.seed)
        # the classifier on real held-out renders at their own pose class (when the pose labels agree)
        out: dict[str, Any] = {}
        test_pose = labels["pose"][probes[pick]].long() if "pose" in labels else None
        if model_yaws is not None and "yaw" in labels:
            test_yaw = labels["yaw"][probes[pick]].float()
            cls = torch.tensor([min(range(poses), key=lambda p: abs(model_yaws[p] - float(y))) for y in test_yaw])
            ok = torch.tensor([abs(model_yaws[int(k)] - float(y)) < 1e-3 for k, y in zip(cls, test_yaw)])
            if bool(ok.any()):
                out["pose_classifier_accuracy"] = round(float((clf(x[ok]).argmax(1) == cls[ok]).float().mean()), 4)
        elif test_pose is not None:
            out["pose_classifier_accuracy"] = round(float((clf(x).argmax(1) == test_pose).float().mean()), 4)
        acc = [float((clf(rot[p]).argmax(1) == p).float().mean()) for p in range(poses)]
        out["pose_control"] = round(sum(acc) / poses, 4)
        out["pose_control_baseline"] = round(1 / poses, 4)  # chance
        out["pose_control_by_pose"] = [round(v, 4) for v in acc]
        out["pose_yaws"] = model_yaws
        # rotation error against the truth, over the inputs not already at the target pose (where
        # doing nothing is exact); baseline: do nothing (the input itself); also the mean face.
        # "_face": inside the true head's mask (synthetic data), where DR-GAN's identity lives: its
        # f(x) is meant to drop background, clothes and light, which the whole-image error counts.
        mean_face = self._mean_faces(train_src, poses, ch, c.mean_faces)
        in_yaw = labels["yaw"][probes[pick]].float() if "yaw" in labels else None
        answers = {"": None, "_baseline": x, "_mean_face": None}
        err: dict[str, list[float | None]] = {f"{r}{k}": [] for r in ("", "_face") for k in answers}
        truths = []
        for p in range(poses):
            got = self._truth(source, labels, idx, model_yaws[p], ch) if model_yaws is not None else None
            truths.append(got[0] if got is not None else None)
            moved = (in_yaw - model_yaws[p]).abs() > 1e-3 if (in_yaw is not None and got is not None) else None
            for key in err:
                if got is None or moved is None or not bool(moved.any()) or (key.startswith("_face") and got[1] is None):
                    err[key].append(None)
                    continue
                t, mask = got[0][moved], got[1][moved] if got[1] is not None else None
                kind = key.removeprefix("_face")
                ans = {"": rot[p], "_baseline": x, "_mean_face": mean_face[p].expand_as(got[0])}[kind][moved]
                e = masked_mse(ans, t, mask if key.startswith("_face") else None)
                err[key].append(round(float(e.mean()), 5))
        # sharpness: G's fine detail over the truth's at each pose (all inputs, moved or not)
        truth_detail = [None if t is None else detail(t).mean().clamp_min(1e-8) for t in truths]
        sharp = [None if d is None else round(float(detail(rot[p]).mean() / d), 4) for p, d in enumerate(truth_detail)]
        known = [q for q, d in enumerate(truth_detail) if d is not None]
        if known:
            out["sharpness"] = round(sum(sharp[q] for q in known) / len(known), 4)
            out["sharpness_baseline"] = round(sum(  # the mean face: what blur towards the average gives
                float(detail(mean_face[q : q + 1]).mean() / truth_detail[q]) for q in known) / len(known), 4)
            out["sharpness_by_pose"] = sharp
        front = frontal_pose(model_yaws, poses)
        for region in ("", "_face"):
            if err[region][front] is None:
                continue
            for kind in answers:
                out[f"frontal_mse{region}{kind}"] = err[f"{region}{kind}"][front]
            out[f"frontal_psnr{region}"] = round(psnr(out[f"frontal_mse{region}"]), 3)
            out[f"frontal_psnr{region}_baseline"] = round(psnr(out[f"frontal_mse{region}_baseline"]), 3)
            out[f"frontal{region}_beats_baselines"] = bool(
                out[f"frontal_mse{region}"] < min(out[f"frontal_mse{region}_baseline"], out[f"frontal_mse{region}_mean_face"]))
            valid = [q for q in range(poses) if err[region][q] is not None]
            for kind in answers:
                out[f"rotation_mse{region}{kind}"] = round(sum(err[f"{region}{kind}"][q] for q in valid) / len(valid), 5)
            for kind in answers:
                out[f"rotation_mse{region}{kind}_by_pose"] = err[f"{region}{kind}"]
        if _synthetic(source) and model_yaws is not None and c.identity_faces > 0:
            out.update(self._identity_kept(source, idx[: c.identity_faces], rot[:, : c.identity_faces], model_yaws, ch, gen))
        out.update(self._figures(run, x, rot, truths))
        return out

    @staticmethod
    def _mean_faces(source: Any, poses: int, channels: int, per_pose: int = 64) -> torch.Tensor:
        """Mean training image at each pose class: ``[P, C, R, R]``."""
        pose = source.labels()["pose"].long()
        out = []
        for p in range(poses):
            idx = torch.nonzero(pose == p).flatten()[:per_pose].tolist()
            out.append(to_channels(source.load(idx)["image"], channels).mean(0))
        return torch.stack(out)

    @staticmethod
    def _identity_kept(source: Any, idx: list[int], rot: torch.Tensor, yaws: list[float], channels: int,
                       gen: torch.Generator, others: int = 9) -> dict[str, Any]:
        """Share of rotations nearest (MSE) to their own identity's true render among ``others + 1`` identities."""
        from gancore_synth.synthfaces import IDENTITY_FACTORS

        f = source.factors(idx)
        ids = f["identity"].long()
        pool = torch.unique(source.labels()["identity"].long())
        wins = torch.zeros(len(yaws))
        for j, i in enumerate(idx):
            cands = pool[pool != ids[j]]
            cands = torch.cat([ids[j : j + 1], cands[torch.randperm(len(cands), generator=gen)[:others]]])
            # one sample of each candidate identity, to take its identity factors from
            lab = source.labels()["identity"].long()
            donors = [int(torch.nonzero(lab == k).flatten()[0]) for k in cands.tolist()]
            donor_f = source.factors(donors)
            scene = {k: v[j : j + 1].expand(len(cands) * len(yaws)).clone() for k, v in f.items()}
            for k in IDENTITY_FACTORS:
                scene[k] = donor_f[k].repeat(len(yaws))
            scene["yaw"] = torch.tensor(yaws).repeat_interleave(len(cands))
            truth = to_channels(source.render(scene), channels).view(len(yaws), len(cands), *rot.shape[2:])
            d = (truth - rot[:, j : j + 1]).square().flatten(2).mean(2)  # [P, K]
            wins += (d.argmin(1) == 0).float()
        per = (wins / len(idx)).tolist()
        return {"identity_kept": round(sum(per) / len(per), 4), "identity_kept_baseline": round(1 / (others + 1), 4),
                "identity_kept_by_pose": [round(v, 4) for v in per]}

    def _figures(self, run: Any, x: torch.Tensor, rot: torch.Tensor, truths: list[torch.Tensor | None]) -> dict[str, Any]:
        from gancore.engine import save_grid

        k = min(self.config.figure_faces, x.shape[0])
        if k == 0:
            return {}
        rows = []
        blank = -torch.ones_like(x[:1])
        for i in range(k):
            rows.append((f"model {i}", torch.cat([x[i : i + 1], rot[:, i]])))
            if all(t is not None for t in truths):
                rows.append((f"truth {i}", torch.cat([blank, torch.stack([t[i] for t in truths])])))  # type: ignore[index]
        path = Path(run.dir) / "eval" / "drgan_rotations.png"
        save_grid(rows, path)
        out = {"rotations_png": str(path)}
        enc, dec = run.nets["G_enc"], run.nets["G_dec"]
        if getattr(enc.config, "confidence", False):
            n = min(self.config.multi_max, x.shape[0])
            f, w = encode(enc, x[:n], self.config.batch)
            fused = fuse(f, w, torch.zeros(n, dtype=torch.long), 1)
            dev = next(dec.parameters()).device
            rotations = dec(fused.to(dev).expand(dec.poses, -1), torch.arange(dec.poses, device=dev)).float().cpu()
            path2 = Path(run.dir) / "eval" / "drgan_fused.png"
            save_grid([("inputs", x[:n]), ("fused", rotations)], path2)
            out["fused_png"] = str(path2)
        return out

    # -- CFP ---------------------------------------------------------------------------------------
    def _cfp(self, run: Any) -> dict[str, Any]:
        c = self.config
        if not c.root:
            raise MetricError("protocol 'cfp' needs the CFP folder: gancore eval RUN --protocol cfp --root PATH")
        from gancore.data.readers import CFP

        source = CFP(root=c.root, resolution=run.info.resolution, split="all")
        if source.protocol is None:
            raise MetricError(f"{c.root} has no Protocol/ folder (Pair_list_F.txt, Pair_list_P.txt, Split/FF, Split/FP)")
        enc = run.nets["G_enc"]
        out: dict[str, Any] = {"protocol": "cfp", "root": str(c.root), "step": run.step}
        cache: dict[int, torch.Tensor] = {}
        for setting in ("FF", "FP"):
            folds = len(source.protocol.folds.get(setting, []))
            if folds < 2:
                out[setting] = None
                continue
            scores, same = [], []
            for k in range(folds):
                pairs, flags = source.pairs(setting, k)
                need = sorted({int(i) for i in pairs.flatten().tolist()} - set(cache))
                for s in range(0, len(need), c.batch):
                    chunk = need[s : s + c.batch]
                    fc, _ = encode(enc, source.load(chunk)["image"], c.batch)
                    cache.update({i: fc[j] for j, i in enumerate(chunk)})
                if len(pairs) == 0:
                    raise MetricError(f"CFP fold {k + 1} of {setting} has no pair whose images are under {c.root}")
                fa = torch.stack([cache[int(i)] for i in pairs[:, 0]])
                fb = torch.stack([cache[int(i)] for i in pairs[:, 1]])
                scores.append(F.cosine_similarity(fa, fb, dim=1))
                same.append(flags.bool())
            res = protocol.ten_fold(scores, same)
            stats = {}
            for key in ("accuracy", "eer", "auc"):
                m, s = protocol.mean_std([getattr(r, key) for r in res])
                stats[key] = round(m, 4)
                stats[f"{key}_std"] = round(s, 4)
            stats["folds"] = folds
            stats["pairs"] = int(sum(len(s) for s in scores))
            out[setting] = stats
        return out
