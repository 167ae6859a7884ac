"""synthfaces: determinism, counterfactual locality, masks, labels, splits, profiles (tiny, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gancore.data.base import DataError
from gancore_synth.synthfaces import AGE_GROUP_EDGES, PARTS, SynthFaces, age_group

torch.set_num_threads(1)
R = 32


def src(**kw: object) -> SynthFaces:
    return SynthFaces(resolution=R, size=64, **kw)


def test_shapes_range_and_labels() -> None:
    s = src()
    out = s.load([0, 5, 7])
    img = out["image"]
    assert img.shape == (3, 3, R, R) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1 and img.std() > 0.1
    for name in SynthFaces.provides:
        assert name in out and out[name].shape == (3,), name
        assert out[name].dtype == (torch.float32 if name in ("age", "yaw", "pitch") else torch.long), name
    labels = s.labels()
    assert len(s) == 64 and all(v.shape == (64,) for v in labels.values())


def test_determinism_across_fresh_instances() -> None:
    a = src(seed=3).load([1, 9])["image"]
    b = src(seed=3).load([9, 1])["image"].flip(0)
    assert torch.equal(a, b)
    c = src(seed=4).load([1, 9])["image"]
    assert not torch.equal(a, c)


@pytest.mark.parametrize("aa", ["full", "adaptive"])
@pytest.mark.parametrize(
    ("factor", "value", "parts"),
    [("glasses", 2, ("glasses",)), ("beard", 1, ("beard",)), ("smile", 1, ("mouth",)), ("hair_color", 3, ("hair", "beard", "eyes"))],
)
def test_counterfactual_changes_only_its_part(factor: str, value: int, parts: tuple[str, ...], aa: str) -> None:
    s = src(aa=aa)
    f = s.factors([2, 3])
    f["glasses"] = torch.zeros_like(f["glasses"])
    f["beard"] = torch.zeros_like(f["beard"])
    f["smile"] = torch.zeros_like(f["smile"])
    g = {k: v.clone() for k, v in f.items()}
    g[factor] = torch.full_like(g[factor], value)
    (a, ma), (b, mb) = s.render(f, masks=True), s.render(g, masks=True)
    changed = (a - b).abs().amax(1) > 0
    assert changed.any(), "the factor must change the image"
    region = torch.zeros_like(changed)
    for p in parts:
        region |= (ma[p] > 0) | (mb[p] > 0)
    assert not (changed & ~region).any(), f"{factor} changed pixels outside the {parts} masks"


def test_masks_are_a_partition() -> None:
    img, masks = src().render(src().factors([0, 1]), masks=True)
    assert set(masks) == set(PARTS)
    total = sum(masks.values())
    assert torch.allclose(total, torch.ones_like(total))
    assert masks["face"].sum() > 0.1 * R * R and masks["background"].sum() > 0


def test_age_groups() -> None:
    ages = torch.tensor([0, 5.9, 6, 10.5, 11, 15, 16, 20.9, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71, 90])
    want = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9])
    assert torch.equal(age_group(ages), want)
    assert len(AGE_GROUP_EDGES) == 9
    lab = SynthFaces(profile="utkface", resolution=R, size=500).labels()
    assert torch.equal(lab["age_group"], age_group(lab["age"]))
    assert lab["age"].min() < 5 and lab["age"].max() > 80


def test_disjoint_identities_and_splits() -> None:
    tr = SynthFaces(resolution=R, size=300, identities=50)
    te = SynthFaces(resolution=R, size=300, identities=50, split="test")
    a, b = set(tr.labels()["identity"].tolist()), set(te.labels()["identity"].tolist())
    assert a and b and not a & b
    both = SynthFaces(resolution=R, size=300, identities=50, split="all")
    assert len(both) == len(tr) + 30
    assert torch.equal(both.labels()["identity"][:300], tr.labels()["identity"])
    # identity-level factors are shared by all samples of one identity
    lab = tr.labels()
    same = lab["identity"] == lab["identity"][0]
    assert same.sum() > 1 and (lab["skin"][same] == lab["skin"][0]).all()


def test_test_identities_sets_the_held_out_count_and_stays_disjoint() -> None:
    tr = SynthFaces(profile="multipie", resolution=R, identities=10, size=200)
    te = SynthFaces(profile="multipie", resolution=R, identities=10, test_identities=7, size=400, split="test")
    ids = set(te.labels()["identity"].tolist())
    assert ids == set(range(10, 17)) and not ids & set(tr.labels()["identity"].tolist())
    default = SynthFaces(profile="multipie", resolution=R, identities=10, size=400, split="test")
    assert set(default.labels()["identity"].tolist()) == {10, 11}  # a fifth of 10


def test_profiles_label_ranges() -> None:
    mp = SynthFaces(profile="multipie", resolution=R, identities=3, size=600).labels()
    assert set(mp["pose"].tolist()) == set(range(13))
    assert mp["light"].max() <= 19 and mp["expression"].max() == 3
    assert torch.equal(mp["yaw"], mp["pose"].float() * 15 - 90)
    ce = SynthFaces(profile="celeba", resolution=R, size=2000).labels()
    assert ce["yaw"].abs().max() <= 10
    for name in ("Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Male", "Bangs"):
        assert 0.3 <= ce[name].float().mean() <= 0.6, name
    fr = SynthFaces(profile="free", resolution=R, size=500).labels()
    assert fr["yaw"].min() < -80 and fr["yaw"].max() > 80


def test_multipie_has_one_studio_backdrop(tmp_path: object) -> None:
    """Multi-PIE is shot in one studio: one backdrop colour for every image of the profile (the
    other profiles, or backdrop = "random", draw it per image); clothes stay per image, so
    that they are no identity cue; the two never share a cache."""
    mp = SynthFaces(profile="multipie", resolution=R, identities=12, size=600)
    f = mp.factors(torch.arange(600))
    assert (f["background"] == 0).all() and mp.backdrop() == "studio"
    one_id = f["identity"] == f["identity"][0]
    assert f["clothes"][one_id].unique().numel() > 1  # not tied to the person
    old = SynthFaces(profile="multipie", resolution=R, identities=12, size=600, backdrop="random")
    assert old.factors(torch.arange(600))["background"].unique().numel() > 1
    ce = SynthFaces(profile="celeba", resolution=R, identities=5, size=400)
    assert ce.factors(torch.arange(400))["background"].unique().numel() > 1 and ce.backdrop() == "random"
    assert SynthFaces(profile="celeba", resolution=R, backdrop="studio").factors(torch.arange(50))["background"].eq(0).all()
    a = SynthFaces(profile="multipie", resolution=R, identities=3, size=8, cache=str(tmp_path))
    b = SynthFaces(profile="multipie", resolution=R, identities=3, size=8, cache=str(tmp_path), backdrop="random")
    assert not torch.equal(a.load([0, 1])["image"], b.load([0, 1])["image"])
    assert len(list(Path(str(tmp_path)).glob("*.u8"))) == 2
    # the cache is named by the images' backdrop, not by how the option was written
    same = SynthFaces(profile="multipie", resolution=R, identities=3, size=8, cache=str(tmp_path), backdrop="studio")
    assert torch.equal(same.load([0, 1])["image"], a.load([0, 1])["image"])
    SynthFaces(resolution=R, size=8, cache=str(tmp_path)).load([0])
    SynthFaces(resolution=R, size=8, cache=str(tmp_path), backdrop="random").load([0])
    assert len(list(Path(str(tmp_path)).glob("*.u8"))) == 3
    # per-image backdrops name no field: caches written before the option existed stay valid
    assert "backdrop" not in ce._cache_fields() and "backdrop" not in old._cache_fields()
    assert mp._cache_fields()["backdrop"] == "studio"


def test_multipie_pose_subsets() -> None:
    full = SynthFaces(profile="multipie", resolution=R, identities=3, size=400)
    nine = SynthFaces(profile="multipie", resolution=R, identities=3, size=400, poses="drgan9")
    lab = nine.labels()
    assert set(lab["pose"].tolist()) == set(range(9)) and nine.info().label_classes["pose"] == 9
    assert torch.equal(lab["yaw"], lab["pose"].float() * 15 - 60)  # -60..60, as DR-GAN's CVPR protocol
    three = SynthFaces(profile="multipie", resolution=R, identities=3, size=200, poses=[90, -90, 0]).labels()
    assert torch.equal(three["yaw"], three["pose"].float() * 90 - 90)  # pose indexes the kept yaws in order
    # the default keeps the grid (and the cache name) of before the key existed
    assert torch.equal(full.labels()["pose"], SynthFaces(profile="multipie", resolution=R, identities=3,
                                                         size=400, poses="all").labels()["pose"])
    # a counterfactual at a yaw the subset lacks has no pose label
    f = nine.factors([0])
    f["yaw"] = torch.tensor([90.0])
    assert nine._labels_of(f)["pose"].tolist() == [-1]
    with pytest.raises(ValueError, match="multipie"):
        SynthFaces(profile="celeba", poses="drgan9")
    with pytest.raises(ValueError, match="distinct yaws"):
        SynthFaces(profile="multipie", poses=[10])


def test_profile_silhouette_is_not_symmetric() -> None:
    s = src()
    f = s.factors([0, 0])
    f["yaw"] = torch.tensor([90.0, -90.0])
    img = s.render(f)
    # a profile is not its own mirror image (the nose points one way)
    assert (img[0] - img[0].flip(-1)).abs().mean() > 0.05
    # and +90 vs -90 look the other way: the silhouettes mirror each other
    fg0 = (img[0] - img[0, :, :1, :1]).abs().sum(0) > 0.1
    fg1 = (img[1] - img[1, :, :1, :1]).abs().sum(0) > 0.1
    assert (fg0 ^ fg1.flip(-1)).float().mean() < (fg0 ^ fg1).float().mean()


def test_attribute_alias_and_bad_arguments(tmp_path: object) -> None:
    s = src(attribute="Eyeglasses")
    assert torch.equal(s.labels()["attribute"], s.labels()["Eyeglasses"])
    with pytest.raises(DataError, match="not a label"):
        src(attribute="Wings").labels()
    with pytest.raises(DataError, match="out of range"):
        src().load([64])
    with pytest.raises(ValueError, match="profile"):
        SynthFaces(profile="imagenet")
    with pytest.raises(DataError, match="lack"):
        src().render({"age": torch.tensor([3.0])})


def test_cache_round_trip(tmp_path: object) -> None:
    s = src(cache=str(tmp_path))
    first = s.load([4, 2])["image"]
    again = src(cache=str(tmp_path)).load([2, 4])["image"]
    assert torch.equal(first.flip(0), again)
    direct = src().load([4, 2])["image"]
    assert (first - direct).abs().max() <= 1 / 127.5 + 1e-6


def test_adaptive_aa_determinism_and_cache(tmp_path: object) -> None:
    a = src(seed=3, aa="adaptive").load([1, 9])["image"]
    b = src(seed=3, aa="adaptive").load([9, 1])["image"].flip(0)
    assert torch.equal(a, b)
    full = src(seed=3).load([1, 9])["image"]
    assert not torch.equal(a, full) and (a - full).abs().mean() < 2 / 255
    # one cache directory, two modes: each reads back its own images
    ca = src(seed=3, aa="adaptive", cache=str(tmp_path)).load([1, 9])["image"]
    cf = src(seed=3, cache=str(tmp_path)).load([1, 9])["image"]
    assert (ca - a).abs().max() <= 1 / 127.5 + 1e-6 and (cf - full).abs().max() <= 1 / 127.5 + 1e-6
    assert len(list(tmp_path.iterdir())) == 4  # type: ignore[attr-defined]


def test_adaptive_aa_quality() -> None:
    """aa="adaptive" against aa="full" on 64 faces and 64 chairs at 64 px (see docs/data.md#speed)."""
    from gancore_synth.synthchairs import SynthChairs

    for make, idx in ((lambda **k: SynthFaces(resolution=64, size=64, **k), list(range(64))),
                      (lambda **k: SynthChairs(resolution=64, identities=5, **k), list(range(0, 64 * 4, 4)))):
        full, adaptive = make(), make(aa="adaptive")
        f = full.factors(idx)
        a, ma = full.render(f, masks=True)
        b, mb = adaptive.render(f, masks=True)
        d = (a - b).abs() * 127.5  # in 1/255 of the [0, 1] range
        assert d.mean() <= 0.5, d.mean()
        assert d.flatten().kthvalue(int(0.999 * d.numel())).values <= 8
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
