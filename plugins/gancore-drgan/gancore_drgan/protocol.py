"""Face-recognition protocols on identity features: rank-1 identification, verification
(ROC AUC, EER, accuracy at a threshold) and CFP's 10-fold protocol.

Pure functions of feature tensors and labels, so that each can be checked on a tiny
hand-made gallery whose answer is known.  Similarity is the cosine of the features
(the DR-GAN paper's choice for f(x)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "cosine_matrix",
    "rank1",
    "auc",
    "eer",
    "best_threshold",
    "accuracy_at",
    "FoldResult",
    "ten_fold",
    "mean_std",
]


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of ``a`` [P, F] with every row of ``b`` [G, F]: ``[P, G]``."""
    return F.normalize(a.float(), dim=1, eps=1e-8) @ F.normalize(b.float(), dim=1, eps=1e-8).T


def rank1(gallery: torch.Tensor, gallery_ids: torch.Tensor, probes: torch.Tensor, probe_ids: torch.Tensor) -> torch.Tensor:
    """Whether each probe's most similar gallery entry has the probe's identity: ``[P]`` bool.

    Ties go to the first gallery entry (``argmax``).  A probe whose identity is not in the
    gallery is always wrong.
    """
    if gallery.shape[0] != gallery_ids.shape[0] or probes.shape[0] != probe_ids.shape[0]:
        raise ValueError("rank1: features and identities must have the same number of rows")
    if gallery.shape[0] == 0:
        raise ValueError("rank1: the gallery is empty")
    best = cosine_matrix(probes, gallery).argmax(1)  # [P]
    return gallery_ids[best] == probe_ids


def _check(scores: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s, y = scores.double().reshape(-1), same.bool().reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores {tuple(s.shape)} and labels {tuple(y.shape)} differ in size")
    if not bool(y.any()) or bool(y.all()):
        raise ValueError("verification needs both genuine (same) and impostor (different) pairs")
    return s, y


def auc(scores: torch.Tensor, same: torch.Tensor) -> float:
    """Area under the ROC curve: the chance that a genuine pair scores above an impostor pair
    (ties count half; Mann–Whitney U).

    Counted by sorting, O(N log N): for each genuine score, the impostors strictly below it
    plus half of those equal to it (no [genuine × impostor] table, which a 100-identity
    gallery would make tens of GB).
    """
    s, y = _check(scores, same)
    pos, neg = s[y], torch.sort(s[~y]).values
    below = torch.searchsorted(neg, pos, right=False).double()  # impostors < each genuine score
    at_or_below = torch.searchsorted(neg, pos, right=True).double()  # impostors <= it
    return float((below + 0.5 * (at_or_below - below)).sum() / (pos.numel() * neg.numel()))


def _rates(s: torch.Tensor, y: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """False accept and false reject rates when "same" means ``score >= threshold``
    (by binary search in the sorted scores: O((N + T) log N), no [T × N] table)."""
    pos, neg = torch.sort(s[y]).values, torch.sort(s[~y]).values
    t = thresholds.to(s.dtype)
    far = (neg.numel() - torch.searchsorted(neg, t, right=False)).double() / neg.numel()  # impostors >= t
    frr = torch.searchsorted(pos, t, right=False).double() / pos.numel()  # genuine < t
    return far, frr


def _candidates(s: torch.Tensor) -> torch.Tensor:
    """Thresholds that realise every distinct decision: each score, and one above the largest."""
    u = torch.unique(s)
    return torch.cat([u, u[-1:] + 1.0])


def eer(scores: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """Equal error rate and its threshold: where false accepts and false rejects meet.

    Over the thresholds that change a decision, the one whose |FAR − FRR| is smallest; the EER
    is the mean of the two rates there (exact when they cross at a data point).
    """
    s, y = _check(scores, same)
    t = _candidates(s)
    far, frr = _rates(s, y, t)
    i = int((far - frr).abs().argmin())
    return float((far[i] + frr[i]) / 2), float(t[i])


def accuracy_at(scores: torch.Tensor, same: torch.Tensor, threshold: float) -> float:
    """Share of pairs decided right when "same" means ``score >= threshold``."""
    s, y = scores.double().reshape(-1), same.bool().reshape(-1)
    return float(((s >= threshold) == y).double().mean())


def best_threshold(scores: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """The threshold with the highest accuracy on these pairs, and that accuracy.

    Candidates are midpoints between consecutive distinct scores (and one beyond each end),
    so the threshold generalises to scores between the ones seen.
    """
    s, y = _check(scores, same)
    u = torch.unique(s)
    mids = torch.cat([u[:1] - 1.0, (u[1:] + u[:-1]) / 2, u[-1:] + 1.0])
    far, frr = _rates(s, y, mids)
    n_pos, n_neg = float(y.sum()), float((~y).sum())
    acc = 1.0 - (far * n_neg + frr * n_pos) / (n_pos + n_neg)
    i = int(acc.argmax())
    return float(mids[i]), float(acc[i])


@dataclass
class FoldResult:
    accuracy: float
    eer: float
    auc: float
    threshold: float


def ten_fold(scores: Sequence[torch.Tensor], same: Sequence[torch.Tensor]) -> list[FoldResult]:
    """CFP's (and LFW's) protocol: for each fold k, the accuracy on fold k at the threshold
    that is best on the other folds; EER and AUC on fold k alone."""
    if len(scores) != len(same) or len(scores) < 2:
        raise ValueError("ten_fold needs at least two folds, with scores and labels for each")
    out = []
    for k in range(len(scores)):
        rest_s = torch.cat([torch.as_tensor(s).reshape(-1) for i, s in enumerate(scores) if i != k])
        rest_y = torch.cat([torch.as_tensor(y).reshape(-1) for i, y in enumerate(same) if i != k])
        t, _ = best_threshold(rest_s, rest_y)
        e, _ = eer(scores[k], same[k])
        out.append(FoldResult(accuracy=accuracy_at(scores[k], same[k], t), eer=e, auc=auc(scores[k], same[k]), threshold=t))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (N − 1, MATLAB's ``std``, which the CFP evaluation
    code uses), as papers report "mean ± std" over folds."""
    v = [float(x) for x in values]
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
