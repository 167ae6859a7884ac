"""Tests of gancore-tdgan that need no engine: network shapes and parameter counts, each loss
term against a hand-computed value, the re-render/evaluation protocol and the nearest-neighbour
baseline on tiny hand-made data, tag parsing of ``gancore rerender``.  CPU, a few seconds."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from gancore.parts import Config, DataInfo
from gancore_tdgan.cli import RerenderError, object_tensor, parse_tag_values
from gancore_tdgan.losses import TagAdversarial, TagConsistency, TagRendering, UntaggedReconstruction
from gancore_tdgan.metric import RerenderMetric, nearest, pick_inputs, sweep_scores
from gancore_tdgan.model import TagMapping, TDGANDiscriminator, TDGANDisentangler, TDGANGenerator
from gancore_tdgan.schedule import TDGANSchedule, spread
from gancore_tdgan.tagdata import LabelIndex, images_with_tag, nearest_degrees, set_tag, tag_degrees

CHAIRS = {"identity": 500, "view": 31}
FACES = {"identity": 100, "pose": 13, "light": 20, "expression": 4}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# networks


def test_parameter_counts_at_128px_match_the_sketch() -> None:
    info = DataInfo(resolution=128, label_classes=CHAIRS)
    # trunk (3x3 convs without bias before BN): 9*cin*cout, BN 2*cout, channels 64..512
    convs = 9 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 256 * 2 + 256 * 512 + 512 * 512)
    bns = 2 * (64 + 128 + 256 + 256 + 256 + 512 + 512)
    assert convs == 5_088_960 and bns == 3_968
    # R: FC 8*8*512 = 32,768 -> 5120; heads 5120 -> 1024 (identity), 5120 -> 512 (view)
    r = convs + bns + (32_768 * 5_120 + 5_120) + (5_120 * 1_024 + 1_024) + (5_120 * 512 + 512)
    assert n_params(TDGANDisentangler(info=info)) == r == 180_736_064
    # g: identity 500 -> 1024 -> 1024, view 31 -> 512 -> 512
    g = (500 * 1024 + 1024) + (1024 * 1024 + 1024) + (31 * 512 + 512) + (512 * 512 + 512)
    assert n_params(TagMapping(info=info)) == g == 1_841_664
    # G: FC 1536 -> 16,384, BN 1024, deconvs 4x4 1024-512-256-128-64 (no bias, BN), 64 -> 3 (+bias)
    gen = (1536 * 16_384 + 16_384) + 2 * 1024 + 16 * (1024 * 512 + 512 * 256 + 256 * 128 + 128 * 64) \
        + 2 * (512 + 256 + 128 + 64) + (16 * 64 * 3 + 3)
    assert n_params(TDGANGenerator(info=info)) == gen == 36_330_371
    # D: the trunk, FC 32,768 -> 2560, FC 2560 -> 1
    d = convs + bns + (32_768 * 2_560 + 2_560) + (2_560 + 1)
    assert n_params(TDGANDiscriminator(info=info)) == d == 88_984_129


@pytest.mark.parametrize("res", [64, 128])
def test_shapes_of_every_network(res: int) -> None:
    torch.manual_seed(0)
    info = DataInfo(resolution=res, label_classes=FACES)
    tags = {"identity": 32, "pose": 16, "light": 8, "expression": 4}
    R = TDGANDisentangler(info=info, tags=tags, width=4, fc=64)
    g = TagMapping(info=info, tags=tags, hidden=16)
    G = TDGANGenerator(info=info, tags=tags, width=4)
    D = TDGANDiscriminator(info=info, width=4, fc=32)
    assert R.trunk.side == res // 16  # 8x8 at 128 px, 4x4 at 64 px
    x = torch.rand(3, 3, res, res) * 2 - 1
    rep = R(x)
    assert list(rep) == list(tags) and all(rep[t].shape == (3, n) for t, n in tags.items())
    assert all(v.abs().max() < 1 for v in rep.values())  # tanh heads
    c = {"identity": torch.tensor([0, 5, 99]), "pose": torch.tensor([0, 6, 12]), "light": torch.tensor([0, 1, 19]),
         "expression": torch.tensor([0, 2, 3])}
    gc = g(c)
    assert list(gc) == list(tags) and all(gc[t].shape == (3, n) for t, n in tags.items())
    y = G(gc)
    assert y.shape == (3, 3, res, res) and y.abs().max() <= 1
    assert torch.equal(G(rep), G(torch.cat([rep[t] for t in tags], 1)))  # dict or concatenation
    out = D(y, features=True)
    assert out.logits.shape == (3,) and out.features[0].shape == (3, 32, res // 16, res // 16)
    # the number of deconvs follows the resolution: FC map 4x4 -> res
    deconvs = [m for m in G.ups if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == int(math.log2(res // 4)) and deconvs[0].in_channels == 4 << (len(deconvs) - 1)


def test_tag_mapping_equals_a_one_hot_fc() -> None:
    torch.manual_seed(0)
    g = TagMapping(info=DataInfo(label_classes={"identity": 7, "view": 5}), tags={"identity": 6, "view": 3})
    v = torch.tensor([0, 4, 6, 2])
    onehot = nn.functional.one_hot(v, 7).float()
    want = torch.tanh(g.second["identity"](torch.relu(g.first["identity"](onehot))))
    torch.testing.assert_close(g.embed("identity", v), want)


def test_network_errors_name_the_problem() -> None:
    info = DataInfo(resolution=64, label_classes=CHAIRS)
    g = TagMapping(info=info, tags={"identity": 4, "view": 4})
    with pytest.raises(ValueError, match=r"missing tag \(-1\)"):
        g.embed("view", torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="out of range 0..30"):
        g.embed("view", torch.tensor([31]))
    with pytest.raises(ValueError, match="no tag 'light'"):
        g.embed("light", torch.tensor([0]))
    G = TDGANGenerator(info=info, tags={"identity": 4, "view": 4}, width=4)
    with pytest.raises(ValueError, match="missing view"):
        G({"identity": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match=r"block 'view' must be \[B, 4\]"):
        G({"identity": torch.zeros(1, 4), "view": torch.zeros(1, 5)})
    with pytest.raises(KeyError, match="'light'"):
        TagMapping(info=info, tags={"identity": 4, "light": 4})  # the data has no such label
    with pytest.raises(ValueError, match="resolution of 4"):
        TDGANGenerator(info=DataInfo(resolution=48, label_classes=CHAIRS))
    with pytest.raises(ValueError, match="not divisible"):
        TDGANDisentangler(info=DataInfo(resolution=40, label_classes=CHAIRS))
    with pytest.raises(Exception, match="at least one tag"):
        TDGANDisentangler(info=info, tags={})


# ---------------------------------------------------------------------------------------------
# loss terms, against values computed by hand


def test_f1_tag_consistency_by_hand() -> None:
    rx = {"identity": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "view": torch.tensor([[0.5], [1.0]])}
    gc = {"view": torch.tensor([[0.0], [0.0]]), "identity": torch.tensor([[0.0, 0.0], [0.0, -1.0]])}  # other key order
    # sample 0: 1 + 0 + 0.25 = 1.25; sample 1: 0 + 1 + 1 = 2 -> sum-reduction 1.625, per element 3.25 / 6
    assert TagConsistency()({"image_rep": rx, "tag_rep": gc}).item() == pytest.approx(1.625)
    assert TagConsistency(reduction="mean", weight=2.0)({"image_rep": rx, "tag_rep": gc}).item() == pytest.approx(2 * 3.25 / 6)
    with pytest.raises(ValueError, match="same tag blocks"):
        TagConsistency()({"image_rep": rx, "tag_rep": {"identity": gc["identity"]}})


def test_f2_and_f1u_squared_image_norms_by_hand() -> None:
    real = torch.zeros(2, 1, 2, 2)
    img = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    # ||.||^2 per image: 2 and 4 -> mean 3; per element: 6 / 8
    assert TagRendering()({"render": img, "real": real}).item() == pytest.approx(3.0)
    assert TagRendering(reduction="mean")({"render": img, "real": real}).item() == pytest.approx(0.75)
    assert UntaggedReconstruction(weight=0.5)({"recon": img, "real": real}).item() == pytest.approx(1.5)


def test_f3_adversarial_by_hand() -> None:
    r, f = torch.tensor([math.log(3.0)]), torch.tensor([0.0])
    # D's side: -[log D(x) + log(1 - D(G(R(x))))] with D(x) = 3/4, D(fake) = 1/2 -> log(4/3) + log 2
    d = TagAdversarial(player="discriminator")
    assert d({"real_logits": r, "fake_logits": f}).item() == pytest.approx(math.log(4 / 3) + math.log(2))
    assert d.sources == {"real_logits": "real_logits", "fake_logits": "fake_logits"}
    f3 = torch.tensor([math.log(3.0)])  # D(fake) = 3/4
    gen = TagAdversarial(player="generator", mode="minimax")
    assert gen.sources == {"fake_logits": "fake_logits"}  # never asks for D(x)
    assert gen({"fake_logits": f3}).item() == pytest.approx(math.log(1 / 4))  # log(1 - 3/4)
    assert TagAdversarial(player="generator")({"fake_logits": f3}).item() == pytest.approx(-math.log(3 / 4))
    assert TagAdversarial(player="generator", mode="hinge")({"fake_logits": f3}).item() == pytest.approx(-math.log(3))
    assert TagAdversarial(player="discriminator", mode="hinge")({"real_logits": torch.tensor([0.5]),
                                                               "fake_logits": torch.tensor([0.5])}).item() == pytest.approx(2.0)
    assert TagAdversarial(player="discriminator", mode="lsgan")({"real_logits": torch.tensor([0.5]),
                                                               "fake_logits": torch.tensor([0.5])}).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reads only fake_logits"):
        TagAdversarial(player="generator", inputs={"real_logits": "x"})


def test_schedule_phases_follow_the_paper() -> None:
    s = TDGANSchedule(lambda1=2.0, lambda2=3.0, lambda3=0.5, semi=True, lambda_u=7.0)
    phases = {p.name: p for p in s.phases()}
    assert [p.name for p in s.phases()] == ["g", "G", "R", "D"]
    assert {n: p.trains for n, p in phases.items()} == {"g": ("g",), "G": ("G",), "R": ("R",), "D": ("D",)}
    terms = {n: {(type(t).__name__, t.config.weight) for t in p.losses} for n, p in phases.items()}
    assert terms == {
        "g": {("TagConsistency", 2.0), ("TagRendering", 3.0)},
        "G": {("TagRendering", 3.0), ("TagAdversarial", 0.5), ("UntaggedReconstruction", 7.0)},
        "R": {("TagConsistency", 2.0), ("TagAdversarial", 0.5), ("UntaggedReconstruction", 7.0)},
        "D": {("TagAdversarial", 0.5)},
    }
    assert [t.config.player for t in phases["D"].losses] == ["discriminator"]
    for p in phases.values():  # every term reads only what its phase provides
        for t in p.losses:
            assert set(t.sources.values()) <= set(p.provides), (p.name, t.name)
    assert "f1u" not in {t.name for t in TDGANSchedule().phases()[1].losses}  # supervised: no f~1
    assert TDGANSchedule(lambda2=4.0).lambda_u == 4.0  # f~1 defaults to f2's weight (same pixel scale)
    apart = {p.name: p for p in TDGANSchedule(semi=True, lambda_u=7.0, lambda_u_R=0.01).phases()}
    assert [t.config.weight for t in apart["G"].losses if t.name == "f1u"] == [7.0]  # R's weight set apart
    assert [t.config.weight for t in apart["R"].losses if t.name == "f1u"] == [0.01]
    recon = {p.name: p for p in TDGANSchedule(lambda_recon=2.0, lambda_recon_R=0.05).phases()}
    weights = {n: [(t.config.weight, t.sources) for t in p.losses if t.name == "f1r"] for n, p in recon.items()}
    assert weights == {"g": [], "G": [(2.0, {"recon": "recon", "real": "real"})],
                       "R": [(0.05, {"recon": "recon", "real": "real"})], "D": []}  # tagged G(R(x)) vs x
    assert [t.config.weight for t in TDGANSchedule(lambda_recon=3.0).phases()[2].losses if t.name == "f1r"] == [3.0]
    assert not any(t.name == "f1r" for p in TDGANSchedule().phases() for t in p.losses)  # off by default
    assert TDGANSchedule().sweep_tag() == "view" and TDGANSchedule(tags=["identity", "pose", "light"]).sweep_tag() == "pose"
    assert s.required_labels() == ("identity", "view")
    with pytest.raises(Exception, match="distinct"):
        TDGANSchedule(tags=["view", "view"])


def test_spread_values() -> None:
    assert spread(31, 8) == [0, 4, 8, 12, 16, 19, 23, 27] and spread(4, 8) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# the evaluation protocol on hand-made data


class Squares:
    """Constant-colour 4x4 images whose value encodes the sample: 0.1·identity + 0.01·view."""

    def __init__(self, ids: list[int], views: int = 4) -> None:
        rows = [(i, v) for i in ids for v in range(views)]
        self.ids = torch.tensor([r[0] for r in rows])
        self.views = torch.tensor([r[1] for r in rows])
        self.loaded: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self) -> dict[str, torch.Tensor]:
        return {"identity": self.ids.clone(), "view": self.views.clone(), "azimuth": self.views.float() * 90.0}

    def value(self, ident: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return 0.1 * ident.float() + 0.01 * view.float()

    def load(self, idx: list[int]) -> dict[str, torch.Tensor]:
        self.loaded.append(list(idx))
        i = torch.tensor(idx, dtype=torch.long)
        img = self.value(self.ids[i], self.views[i])[:, None, None, None].expand(-1, 3, 4, 4).clone()
        return {"image": img, "identity": self.ids[i], "view": self.views[i]}


class PerfectNets:
    """R reads identity and view off the pixel value; g and G invert it exactly."""

    class R(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            p = x.mean((1, 2, 3))
            ident = torch.floor(p * 10 + 1e-4)
            return {"identity": 0.1 * ident[:, None], "view": (p - 0.1 * ident)[:, None]}

    class g(nn.Module):
        classes = {"identity": 3, "view": 4}

        def embed(self, tag: str, v: torch.Tensor) -> torch.Tensor:
            return (0.1 if tag == "identity" else 0.01) * v.float()[:, None]

    class G(nn.Module):
        def forward(self, rep: dict[str, torch.Tensor]) -> torch.Tensor:
            return (rep["identity"] + rep["view"])[:, :, None, None].expand(-1, 3, 4, 4)


def _fake_run(tmp_path: Path, nets: dict[str, nn.Module]) -> Any:
    train, test = Squares([0, 1, 2]), Squares([3, 4])

    class DataCfg(Config):
        split: str = "train"

    spec = SimpleNamespace(build=lambda cfg: train if cfg.split == "train" else test)
    return SimpleNamespace(
        schedule=TDGANSchedule(), nets=nets, step=7, dir=tmp_path,
        data=lambda split="test": test if split == "test" else train,
        resolved=SimpleNamespace(data_config=DataCfg(), data_spec=spec),
    )


def test_rerender_protocol_and_baselines_on_hand_made_data(tmp_path: Path) -> None:
    nets = {"R": PerfectNets.R(), "g": PerfectNets.g(), "G": PerfectNets.G()}
    run = _fake_run(tmp_path, nets)
    out = RerenderMetric(figure_objects=2, figure_step=90).compute(run)
    res = {k.removeprefix("view."): v for k, v in out.items() if k.startswith("view.")}
    assert res["mse_vs_nn"] == res["mse_vs_copy"] == res["mse_new_vs_nn"]  # the model's numbers beside each baseline
    res.update(mse=res["mse_vs_nn"], copy_mse=res["mse_vs_copy_baseline"], copy_mse_new=res["mse_new_vs_copy_baseline"],
               nn_mse=res["mse_vs_nn_baseline"])
    assert out["objects"] == 2 and out["tags"] == ["view"] and out["step"] == 7
    assert res["mse"] == pytest.approx(0.0, abs=1e-12) and res["pairs_without_truth"] == 0  # a perfect re-renderer
    inputs = pick_inputs(run.data().labels(), torch.ones(8, dtype=torch.bool))
    own = run.data().views[torch.tensor(inputs)]
    # copying the input: (0.01 * (v - own))^2 over every (chair, view), the own view included
    copy = torch.stack([(0.01 * (torch.arange(4) - o)).square() for o in own])  # [2, 4]
    assert res["copy_mse"] == pytest.approx(float(copy.mean()))
    assert res["copy_mse_new"] == pytest.approx(float(copy.sum() / 6))
    # the nearest training image at the input's view is chair 2 for both test chairs (3 and 4):
    # at view v it differs from the truth by 0.1 and 0.2 -> mean(0.01, 0.04) at every view
    assert res["nn_mse"] == pytest.approx(0.025) and res["nn_by_value"] == [pytest.approx(0.025)] * 4
    assert res["mse_over_nn"] == pytest.approx(0.0, abs=1e-9) and res["values_worse_than_copy"] == []
    assert res["degrees_by_value"] == [0.0, 90.0, 180.0, 270.0]
    assert res["mse_by_offset"][0] == pytest.approx(0.0, abs=1e-12) and res["copy_by_offset"][0] == 0.0
    assert Path(res["figure_png"]).is_file()


def test_a_model_that_ignores_the_view_tag_scores_like_copying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gancore_tdgan import metric

    run = _fake_run(tmp_path, {"R": PerfectNets.R(), "g": PerfectNets.g(), "G": PerfectNets.G()})
    monkeypatch.setattr(metric, "rerender", lambda nets, x, tags=None: x)  # every re-render = the input
    out = RerenderMetric(nn=False, figure_objects=0).compute(run)
    assert out["view.mse_vs_copy"] == pytest.approx(out["view.mse_vs_copy_baseline"]) and out["view.mse_vs_copy"] > 0
    assert "view.mse_vs_nn" not in out and "view.figure_png" not in out
    assert out["view.values_worse_than_copy"] == []  # equal is not worse


def test_nearest_and_scores() -> None:
    pool = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    assert nearest(torch.tensor([[0.9, 1.2], [4.0, 4.0], [-1.0, 0.0]]), pool, chunk=2).tolist() == [1, 2, 0]
    err = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 6.0]])
    s = sweep_scores(err, torch.tensor([0, 1]), torch.ones(2, 3, dtype=torch.bool), circular=True)
    assert s["all"] == pytest.approx(2.0) and s["new"] == pytest.approx(3.0) and s["by_value"] == [1.5, 0.5, 4.0]
    # offset (v - own) mod 3: row 0 has 0, 1, 2 at offsets 0, 1, 2; row 1 has 3 at offset 2, 0 at 0, 6 at 1
    assert s["by_offset"] == [0.0, pytest.approx(3.5), pytest.approx(2.5)]


def test_tag_data_helpers() -> None:
    labels = {"view": torch.tensor([0, 1, 2, 1, -1]), "azimuth": torch.tensor([0.0, 120.0, 240.0, 120.0, 7.0])}
    deg = tag_degrees(labels, "view")
    assert deg == {0: 0.0, 1: 120.0, 2: 240.0} and tag_degrees(labels, "light") is None
    assert nearest_degrees(deg, 350) == 0 and nearest_degrees(deg, 100) == 1 and nearest_degrees(deg, -130) == 2
    f = {"yaw": torch.tensor([10.0, 20.0]), "smile": torch.tensor([0, 1]), "mouth_open": torch.tensor([1, 0]),
         "light": torch.tensor([3, 4])}
    assert set_tag(f, "pose", 1, {1: -75.0})["yaw"].tolist() == [-75.0, -75.0]
    e = set_tag(f, "expression", 3)
    assert e["smile"].tolist() == [1, 1] and e["mouth_open"].tolist() == [1, 1]
    assert set_tag(f, "light", 7)["light"].tolist() == [7, 7] and set_tag(f, "identity", 1) is None
    assert set_tag(f, "colour", 1) is None
    src = Squares([0, 1])
    index = LabelIndex(src.labels(), ["identity", "view"])
    img, found = images_with_tag(src, src.labels(), index, [0, 5], "view", 3)
    assert found.tolist() == [True, True] and img[:, 0, 0, 0].tolist() == pytest.approx([0.03, 0.13])


# ---------------------------------------------------------------------------------------------
# gancore rerender: arguments


def test_tag_arguments_are_checked(tmp_path: Path) -> None:
    run = SimpleNamespace(nets={"g": SimpleNamespace(classes={"identity": 3, "view": 31, "light": 4})},
                          data=lambda split: SimpleNamespace(labels=lambda: {
                              "view": torch.arange(31), "azimuth": torch.arange(31) * (360 / 31)}))
    assert parse_tag_values(["view=12", "light=0"], run) == {"view": 12, "light": 0}
    assert parse_tag_values(["view=30deg"], run) == {"view": 3}  # 34.8° is the nearest view to 30°
    assert parse_tag_values(["view=-12°"], run) == {"view": 30}
    for spec, msg in [("colour=1", "unknown tag 'colour'; this run's tags are identity, view, light"),
                      ("view=31", r"tag 'view' takes a value 0..30, got 31"),
                      ("view=left", "tag 'view' takes a value 0..30 or an angle"),
                      ("view", "NAME=VALUE"), ("light=30deg", "no angles")]:
        with pytest.raises(RerenderError, match=msg):
            parse_tag_values([spec], run)
    with pytest.raises(RerenderError, match="given twice"):
        parse_tag_values(["view=1", "view=2"], run)


def test_objects_are_taken_whole(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    a = np.zeros((10, 20, 4), np.uint8)
    a[..., 0] = 255
    a[..., 3] = 255
    a[:, :5, 3] = 0  # transparent strip -> white
    Image.fromarray(a, "RGBA").save(tmp_path / "o.png")
    t = object_tensor(str(tmp_path / "o.png"), 8)
    assert t.shape == (1, 3, 8, 8)
    assert torch.allclose(t[0, :, 0, 4], torch.ones(3))  # padding above the 20x10 image is white
    assert t[0, 0, 4, 6] > 0.9 and t[0, 1, 4, 6] < -0.9  # red in the middle
    with pytest.raises(Exception, match="cannot read"):
        object_tensor(str(tmp_path / "missing.png"), 8)


def test_render_only_tool_measures_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """tools/render_only.py: the colour error by hand, and two steps on the chairs CPU recipe."""
    import importlib.util

    root = Path(__file__).resolve().parents[3]
    spec = importlib.util.spec_from_file_location("render_only", root / "plugins/gancore-tdgan/tools/render_only.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)  # type: ignore[union-attr]
    grey = torch.full((1, 3, 2, 2), 0.25)
    red = grey.clone()
    red[0, 0, 0, 0] = 1.0  # one pixel: RGB (1, .25, .25), grey level .5, colour (.5, -.25, -.25)
    assert tool.colour_error(grey, grey * -2) == 0.0  # any grey has no colour
    assert tool.colour_error(red, grey) == pytest.approx((0.25 + 0.0625 + 0.0625) / 12)
    out = tmp_path / "ro.png"
    monkeypatch.setattr("sys.argv", ["render_only", str(root / "recipes/tdgan-chairs-cpu.toml"), "--set", "data.identities=3",
                                     "--set", f"data.cache='{tmp_path / 'cache'}'", "--steps", "2", "--every", "1", "--batch", "2",
                                     "--out", str(out)])
    tool.main()
    printed = capsys.readouterr().out
    assert "93 training images" in printed and printed.count("colour error") == 3 and out.is_file()
