"""synthchairs: grid of views, determinism, labels, masks, splits (tiny, CPU)."""

from __future__ import annotations

import pytest
import torch

from gancore_synth.synthchairs import CHAIR_PARTS, N_VIEWS, SynthChairs

torch.set_num_threads(1)
R = 32


def test_grid_labels_and_shapes() -> None:
    s = SynthChairs(resolution=R, identities=5)
    assert len(s) == 5 * N_VIEWS * 2
    lab = s.labels()
    assert set(lab["view"].tolist()) == set(range(31)) and set(lab["elevation"].tolist()) == {0, 1}
    assert (torch.bincount(lab["identity"]) == 62).all()
    out = s.load([0, 40])
    assert out["image"].shape == (2, 3, R, R) and out["image"].min() >= -1 and out["image"].max() <= 1
    assert out["identity"].dtype == torch.long and out["view"].tolist() == [0, 9]


def test_determinism_and_views_differ() -> None:
    a = SynthChairs(resolution=R, identities=5).load([3, 4])["image"]
    b = SynthChairs(resolution=R, identities=5).load([3, 4])["image"]
    assert torch.equal(a, b)
    assert (a[0] - a[1]).abs().mean() > 0.005


def test_splits_disjoint_and_masks() -> None:
    tr, te = SynthChairs(resolution=R, identities=10), SynthChairs(resolution=R, identities=10, split="test")
    assert not set(tr.labels()["identity"].tolist()) & set(te.labels()["identity"].tolist())
    img, masks = tr.render(tr.factors([0, 100]), masks=True)
    assert set(masks) == set(CHAIR_PARTS)
    total = sum(masks.values())
    assert torch.allclose(total, torch.ones_like(total)) and masks["seat"].sum() > 0


@pytest.mark.parametrize("aa", ["full", "adaptive"])
def test_counterfactual_view_keeps_identity(aa: str) -> None:
    s = SynthChairs(resolution=R, identities=5, size=20, aa=aa)
    f = s.factors([0])
    g = dict(f, view=torch.tensor([10]))
    a, b = s.render(f), s.render(g)
    assert not torch.equal(a, b)
    f2 = dict(f, light=(f["light"] + 1) % 4)
    _, ma = s.render(f, masks=True)
    c = s.render(f2)
    changed = (a - c).abs().amax(1) > 0
    assert not (changed & (ma["background"] == 1)).any()


def test_adaptive_aa_determinism() -> None:
    a = SynthChairs(resolution=R, identities=5, aa="adaptive").load([3, 4])["image"]
    b = SynthChairs(resolution=R, identities=5, aa="adaptive").load([4, 3])["image"].flip(0)
    assert torch.equal(a, b)
