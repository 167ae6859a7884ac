"""Tests of the gancore-caae plugin: shapes, parameter counts, loss values, labels, the
schedule's forward reuse, a two-step CPU train, checkpoint round-trip and ``gancore age``.

Everything is tiny (16–32 px, narrow widths, 2 steps) so the file runs in seconds on CPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gancore.parts import DataInfo
from gancore.schedule import Context, Ledger
from gancore_caae.labels import AGE_GROUPS, GROUP_NAMES, MID_AGES, age_to_group, code_labels, group_of_age
from gancore_caae.model import CAAEDimg, CAAEDz, CAAEEncoder, CAAEGenerator
from gancore_caae.schedule import CAAESchedule

INFO128 = DataInfo(resolution=128, label_classes={"age_group": 10})


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# architecture at the paper's 128 px


def test_shapes_and_parameter_counts_at_128px() -> None:
    torch.manual_seed(0)
    E, G = CAAEEncoder(info=INFO128), CAAEGenerator(info=INFO128)
    Dz, Dimg = CAAEDz(info=INFO128), CAAEDimg(info=INFO128)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    age = torch.tensor([0, 9])
    z = E(x)
    assert z.shape == (2, 50) and z.abs().max() < 1  # tanh: z in (-1, 1)
    y = G(z, age)
    assert y.shape == (2, 3, 128, 128) and y.abs().max() <= 1
    assert Dz(z).logits.shape == (2,)
    out = Dimg(y, age, features=True)
    assert out.logits.shape == (2,)
    # the label is tiled over the 64x64 map of conv 16: 64x64x(16+10), then 32, 64, 128 at 32, 16, 8 px
    assert [tuple(f.shape[1:]) for f in out.features] == [(26, 64, 64), (32, 32, 32), (64, 16, 16), (128, 8, 8)]

    # Hand count (weights k*k*cin*cout + biases cout; FC in*out + out):
    # E: conv 3->64: 25*3*64+64 = 4,864; 64->128: 25*64*128+128 = 204,928; 128->256: 819,456;
    #    256->512: 3,277,312; FC 8*8*512=32,768 -> 50: 1,638,450.          total 5,945,010
    assert n_params(E) == 4_864 + 204_928 + 819_456 + 3_277_312 + 1_638_450 == 5_945_010
    # G: FC (50+10)->8*8*1024: 60*65,536+65,536 = 3,997,696; deconv 1024->512: 25*1024*512+512 = 13,107,712;
    #    512->256: 3,277,056; 256->128: 819,328; 128->64: 204,864; conv 64->3: 25*64*3+3 = 4,803.
    assert n_params(G) == 3_997_696 + 13_107_712 + 3_277_056 + 819_328 + 204_864 + 4_803 == 21_411_459
    # D_z: 50*64+64 = 3,264; 64*32+32 = 2,080; 32*16+16 = 528; 16+1 = 17 -> 5,889; BN adds 2*(64+32+16) = 224.
    assert n_params(Dz) == 5_889 and n_params(CAAEDz(norm="batch")) == 5_889 + 224
    # D_img: conv 3->16: 1,216; (16+10)->32: 25*26*32+32 = 20,832; 32->64: 51,264; 64->128: 204,928;
    #        FC 8*8*128=8,192 -> 1024: 8,389,632; 1024 -> 1: 1,025 -> 8,668,897; BN adds 2*(16+32+64+128) = 480.
    assert n_params(CAAEDimg(info=INFO128, norm="none")) == 1_216 + 20_832 + 51_264 + 204_928 + 8_389_632 + 1_025 == 8_668_897
    assert n_params(Dimg) == 8_668_897 + 480


def test_layers_adapt_to_resolution_and_five_layer_variant() -> None:
    # official code: 5 convs at 128 px -> 4x4x1024 before the FC
    e5 = CAAEEncoder(info=INFO128, layers=5)
    assert e5.convs[-2].out_channels == 1024 and e5.fc.in_features == 4 * 4 * 1024
    # at 32 px the default keeps the last map at 8x8 (two convs), and the width option scales channels
    info32 = DataInfo(resolution=32, label_classes={"age_group": 10})
    e = CAAEEncoder(info=info32, width=8)
    assert e.fc.in_features == 16 * 8 * 8 and e(torch.zeros(1, 3, 32, 32)).shape == (1, 50)
    g = CAAEGenerator(info=info32, width=8, label_coding="pm1", label_repeat=5, gender=True)
    assert g.fc.in_features == 50 + 10 * 5 + 2 * 25  # official: z + age x5 + gender x25 = 150
    assert g(torch.zeros(1, 50), torch.tensor([3]), torch.tensor([1])).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="gender"):
        g(torch.zeros(1, 50), torch.tensor([3]))
    with pytest.raises(ValueError, match="resolution"):
        CAAEEncoder(info=DataInfo(resolution=48))
    with pytest.raises(ValueError, match="age_groups"):
        CAAEGenerator(info=DataInfo(resolution=32, label_classes={"age_group": 12}))


# ---------------------------------------------------------------------------------------------
# labels


def test_age_groups_and_label_coding() -> None:
    assert GROUP_NAMES == ("0-5", "6-10", "11-15", "16-20", "21-30", "31-40", "41-50", "51-60", "61-70", "71+")
    ages = torch.tensor([0, 5, 5.9, 6, 10, 11, 16, 20, 21, 30, 31, 45, 60, 61, 70, 71, 116])
    assert age_to_group(ages).tolist() == [0, 0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 8, 9, 9]
    # every group's middle age falls in its own group
    assert [group_of_age(a) for a in MID_AGES] == list(range(10)) and len(AGE_GROUPS) == 10
    assert code_labels(torch.tensor([2]), 4).tolist() == [[0, 0, 1, 0]]
    # +-1 coding tiled twice (official code tiles age x5)
    assert code_labels(torch.tensor([2]), 4, "pm1", 2).tolist() == [[-1, -1, 1, -1, -1, -1, 1, -1]]
    with pytest.raises(ValueError, match="0..3"):
        code_labels(torch.tensor([4]), 4)


def test_dimg_tiles_the_label_over_the_feature_map() -> None:
    info = DataInfo(resolution=16, label_classes={"age_group": 10})
    d = CAAEDimg(info=info, width=4, layers=2, fc=8, label_coding="pm1")
    out = d(torch.zeros(2, 3, 16, 16), torch.tensor([1, 7]), features=True)
    tiled = out.features[0][:, 4:]  # [2, 10, 8, 8]: the channels after the conv's 4
    want = code_labels(torch.tensor([1, 7]), 10, "pm1")[:, :, None, None].expand(-1, -1, 8, 8)
    assert torch.equal(tiled, want)


# ---------------------------------------------------------------------------------------------
# losses and the schedule


def tiny_nets(res: int = 16) -> dict[str, torch.nn.Module]:
    info = DataInfo(resolution=res, label_classes={"age_group": 10})
    return {
        "E": CAAEEncoder(info=info, width=4, z_dim=6),
        "G": CAAEGenerator(info=info, width=4, z_dim=6),
        "Dz": CAAEDz(info=info, z_dim=6, hidden=(8, 4)),
        "Dimg": CAAEDimg(info=info, width=4, layers=2, fc=8),
    }


def test_loss_terms_match_hand_computed_values() -> None:
    sched = CAAESchedule(recon_weight=2.0, tv_weight=0.5, z_weight=1e-4, img_weight=1e-3)
    eg = {p.name: p for p in sched.phases()}["EG"]
    by_name = {t.name: t for t in eg.losses}
    ctx = {
        "real": torch.zeros(1, 1, 2, 2),
        "recon": torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]]),
        "ez_logits": torch.tensor([0.0, math.log(3.0)]),
        "g_logits": torch.tensor([0.0]),
    }
    # L2 mean: (0 + 1 + 4 + 16) / 4 = 5.25, weight 2
    assert by_name["recon"](ctx).item() == pytest.approx(2 * 5.25)
    # TV (squared): dy = (2, 3), dx = (1, 2) -> mean(dy^2) + mean(dx^2) = 6.5 + 2.5 = 9, weight 0.5
    assert by_name["tv"](ctx).item() == pytest.approx(0.5 * 9.0)
    # non-saturating towards "real": mean softplus(-l) = (ln 2 + ln(4/3)) / 2
    assert by_name["ez_adv"](ctx).item() == pytest.approx(1e-4 * (math.log(2) + math.log(4 / 3)) / 2)
    assert by_name["g_adv"](ctx).item() == pytest.approx(1e-3 * math.log(2))
    # D side: towards "fake" is softplus(l): l = ln 3 -> ln 4
    dz = {p.name: p for p in sched.phases()}["Dz"]
    fake = [t for t in dz.losses if t.name == "dz_fake"][0]
    assert fake({"dz_z_logits": torch.tensor([math.log(3.0)])}).item() == pytest.approx(math.log(4))
    # L1 variant (official code): mean |recon - real| = (0 + 1 + 2 + 4) / 4
    l1 = {t.name: t for t in CAAESchedule(recon="l1").phases()[0].losses}["recon"]
    assert l1(ctx).item() == pytest.approx(7 / 4)


def test_warmup_and_ramp_delay_only_the_adversarial_terms() -> None:
    eg = CAAESchedule(warmup=10, ramp=4, img_weight=1e-4).phases()[0]
    w = {t.name: t for t in eg.losses}
    assert w["recon"].weight_at(0) == 1.0 and w["g_adv"].weight_at(9) == 0.0
    assert w["g_adv"].weight_at(10) == pytest.approx(0.25e-4) and w["g_adv"].weight_at(13) == pytest.approx(1e-4)
    assert w["ez_adv"].weight_at(5) == 0.0


def test_prior_samples_are_uniform_on_minus_one_one() -> None:
    torch.manual_seed(0)
    nets = tiny_nets()
    sched = CAAESchedule()
    batch = {"batch": {"image": torch.zeros(4096, 3, 16, 16), "age_group": torch.zeros(4096, dtype=torch.long)}}
    ctx = Context(step=0, batch=batch, ledger=Ledger(nets))
    with torch.no_grad():
        for p in sched.phases()[:2]:  # EG makes z, Dz draws the prior
            p.run(ctx)
    prior = ctx["z_prior"]
    assert prior.shape == ctx["z"].shape
    assert -1 <= prior.min() < -0.99 and 0.99 < prior.max() <= 1
    assert prior.mean().item() == pytest.approx(0, abs=0.02) and prior.std().item() == pytest.approx(1 / math.sqrt(3), abs=0.01)
    from gancore_caae.metric import ks_uniform

    assert ks_uniform(prior).max() < 0.05 and ks_uniform(torch.zeros(100, 1)).item() == pytest.approx(0.5, abs=0.01)


def test_sample_rows() -> None:
    nets = tiny_nets()
    for n in nets.values():
        n.eval()
    rows = CAAESchedule(sample_faces=3).sample(nets, {"batch": {"image": torch.zeros(5, 3, 16, 16), "age_group": torch.arange(5)}})
    assert [r for r, _ in rows][:3] == ["input", "reconstruction", "age 0-5"] and len(rows) == 12
    assert all(t.shape == (3, 3, 16, 16) for _, t in rows)


# ---------------------------------------------------------------------------------------------
# the engine, checkpoints, eval and the CLI verb on a tiny run

TINY = {
    "recipe": {"name": "caae-tiny", "plugins": ["caae"]},
    "data": {"source": "synthfaces", "profile": "utkface", "resolution": 32, "size": 64},
    "parts": {
        "E": {"use": "caae.encoder", "width": 4, "z_dim": 8},
        "G": {"use": "caae.generator", "width": 4, "z_dim": 8},
        "Dz": {"use": "caae.dz", "z_dim": 8, "hidden": [8, 4]},
        "Dimg": {"use": "caae.dimg", "width": 4, "layers": 2, "fc": 16},
    },
    "schedule": {"use": "caae.aae", "warmup": 1, "ramp": 2},
}


@pytest.fixture(scope="module", autouse=True)
def eager_renders():
    """Tiny test renders are faster eagerly than through synthfaces' one-off torch.compile."""
    from gancore_synth.render import set_render_backend

    set_render_backend("eager")
    yield
    set_render_backend(None)  # let the next user decide again


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gancore.testing import smoke_train

    return smoke_train(TINY, tmp_path_factory.mktemp("caae"), steps=2,
                       overrides=["output.sample_every=2", "output.checkpoint_every=2"])


@pytest.mark.parametrize("order", ["simultaneous", "d_first"])
def test_each_phase_trains_only_its_networks_on_one_forward(order: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine: E+G, D_z and D_img each change exactly their own weights on every
    step, the discriminators' BatchNorm statistics move only in their own phases, and E and G
    run once per iteration."""
    from gancore.testing import trace_phases

    calls = {"E": 0, "G": 0}
    for role, cls in (("E", CAAEEncoder), ("G", CAAEGenerator)):
        forward = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, *a, _f=forward, _r=role, **k: (
            calls.__setitem__(_r, calls[_r] + 1), _f(self, *a, **k))[1])
    recipe = {**TINY, "schedule": {**TINY["schedule"], "order": order, "warmup": 0}}
    recipe["parts"] = {**TINY["parts"], "Dz": {**TINY["parts"]["Dz"], "norm": "batch"}}
    t = trace_phases(recipe, tmp_path, steps=3)
    t.check()
    assert [p for s, p in t.ran() if s == 0] == (["EG", "Dz", "Dimg"] if order == "simultaneous" else ["Dz", "Dimg", "EG"])
    # one encode and one decode per iteration (3), plus the final sample grid: one encode,
    # the reconstruction and one decode per age group
    assert calls == {"E": 3 + 1, "G": 3 + 1 + 10}
    for r in t.records:
        assert not {"Dz", "Dimg"} & r.stats - {r.phase}, (r.step, r.phase, r.stats)


def test_two_step_train_logs_every_term_and_writes_samples(tiny_run: Path) -> None:
    import json

    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    # the adversarial E/G terms are off during the 1-step warm-up, then ramp in
    assert "EG/g_adv" not in records[0] and records[1]["EG/g_adv"] > 0
    for key in ("EG/recon", "EG/tv", "Dz/dz_real", "Dz/dz_fake", "Dimg/dimg_real", "Dimg/dimg_fake"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert (tiny_run / "samples" / "step_000002.png").is_file()


def test_checkpoint_round_trip(tiny_run: Path) -> None:
    from gancore.testing import checkpoint_roundtrip

    run = checkpoint_roundtrip(tiny_run)
    assert run.step == 2 and run.schedule_name == "caae.aae"
    assert isinstance(run.nets["G"], CAAEGenerator) and isinstance(run.nets["Dimg"], CAAEDimg)
    x = run.data("test").load([0, 1])["image"]
    assert run.nets["G"](run.nets["E"](x), torch.tensor([0, 9])).shape == (2, 3, 32, 32)


def test_eval_metric_against_true_renders(tiny_run: Path) -> None:
    from gancore.runs import load_run
    from gancore_caae.metric import AgeMetric

    out = AgeMetric(samples=8, batch=4, strips=2, interp_pairs=1, interp_steps=3).compute(load_run(tiny_run))
    for key in ("age_mse", "age_mse_baseline", "recon_mse", "z_ks_mean", "age_change_cos"):
        assert math.isfinite(out[key]), key
    assert 0 <= out["z_ks_mean"] <= 1 and len(out["age_mse_by_group"]) == 10
    assert Path(out["age_strips_png"]).is_file() and Path(out["interp_png"]).is_file()


def _photo_with_face(path: Path, res: int = 96) -> tuple[int, int, int, int]:
    """A held-out synthfaces render pasted into a larger grey canvas; returns its box."""
    import numpy as np
    from gancore_synth.synthfaces import SynthFaces
    from PIL import Image

    face = SynthFaces(profile="utkface", resolution=res, size=4, split="test").load([0])["image"][0]
    arr = ((face.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    canvas = np.full((240, 320, 3), 120, np.uint8)
    canvas[60 : 60 + res, 100 : 100 + res] = arr
    Image.fromarray(canvas).save(path)
    return (100, 60, res, res)


def age_cli(*args: str) -> int:
    from gancore.cli import main

    return main(["age", *args])


def test_age_verb_on_a_synthetic_photo(tiny_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "photo.png"
    x, y, w, h = _photo_with_face(photo)
    box = f"{x},{y},{w},{h}"  # given by hand: a tiny untrained run must not depend on Haar's luck
    assert age_cli(str(photo), "--run", str(tiny_run), "--out", str(tmp_path / "strip.png"), "--box", box) == 0
    assert Image.open(tmp_path / "strip.png").size == (32 * 11, 32)  # input + 10 groups
    assert age_cli(str(photo), "--run", str(tiny_run), "--out", str(tmp_path / "s3.png"), "--box", box, "--groups", "0,4,9") == 0
    assert Image.open(tmp_path / "s3.png").size == (32 * 4, 32)
    assert age_cli(str(photo), "--run", str(tiny_run), "--out", str(tmp_path / "old.png"), "--box", box, "--age", "65") == 0
    old = Image.open(tmp_path / "old.png")
    assert old.size == (320, 240)


def _textured_photo(path: Path) -> tuple[int, int, int, int]:
    """A 320x240 photo whose face box holds fine detail (seeded noise on a smooth face-like
    ellipse, on a smooth background): what a real portrait's skin, hair and eyelashes give
    the Laplacian.  Returns the box, 128 px: 4x the tiny run's 32 px crops."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    img = np.stack([90 + 0.2 * xx, 100 + 0.2 * yy, 110 + 0.1 * (xx + yy) / 2], -1)
    x, y, s = 96, 56, 128
    inside = ((xx - (x + s / 2)) / (0.42 * s)) ** 2 + ((yy - (y + s / 2)) / (0.5 * s)) ** 2 < 1
    img[inside] = [190, 150, 130]
    img[y : y + s, x : x + s] += rng.normal(0, 18, (s, s, 1)).astype(np.float32)
    Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(path)
    return (x, y, s, s)


def _sharpness(path: Path, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian of the grey image inside ``box``: fine detail (high) vs blur (low)."""
    import cv2
    import numpy as np
    from PIL import Image

    x, y, w, h = box
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)[y : y + h, x : x + w]
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _fake_caae(resolution: int = 32) -> Any:
    """A stand-in for a trained CAAE run with a known, clearly visible age effect:
    E keeps the crop, G redraws it blurred (4x4 average, like a small model's output) and
    brightens it by 0.15 per 9 age groups.  So the face's own group is 0, "age 70" (group 8)
    brightens by 0.133 (17 grey levels) and G's output itself has none of the photo's detail."""
    from types import SimpleNamespace

    import torch.nn.functional as F
    from torch import nn

    class E(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    class G(nn.Module):
        age_groups = 10

        def forward(self, z: torch.Tensor, group: torch.Tensor, gender: Any = None) -> torch.Tensor:
            x = z.view(len(z), 3, resolution, resolution)
            blurred = F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="bilinear", align_corners=False)
            return (blurred + 0.15 * group.float().view(-1, 1, 1, 1) / 9).clamp(-1, 1)

    return SimpleNamespace(nets={"E": E(), "G": G()}, info=SimpleNamespace(resolution=resolution),
                           schedule=SimpleNamespace(config=SimpleNamespace(gender=False)))


def test_age_residual_paste_keeps_the_photo_detail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--paste residual adds only the model's change of age to the photo, so the photo's detail
    in the face box survives (Laplacian variance); --paste replace pastes the model's 32 px
    output, which is what blurred the whole face when residual was pasted that way."""
    import numpy as np
    from PIL import Image

    import gancore_caae.cli as age_module

    monkeypatch.setattr(age_module, "load_caae_run", lambda run_dir, checkpoint=None: _fake_caae())
    photo = tmp_path / "photo.png"
    box = _textured_photo(photo)
    arg = ",".join(map(str, box))
    before = _sharpness(photo, box)
    out = {}
    for paste in ("residual", "replace"):
        out[paste] = tmp_path / f"{paste}.png"
        assert age_cli(str(photo), "--run", "fake", "--out", str(out[paste]), "--box", arg,
                       "--age", "70", "--paste", paste) == 0
        assert f"aged the face at {arg} (manual) to 61-70 (age 70, paste {paste})" in capsys.readouterr().out
    kept, replaced = _sharpness(out["residual"], box) / before, _sharpness(out["replace"], box) / before
    assert kept > 0.9, f"residual paste kept {kept:.0%} of the face box's Laplacian variance ({before:.0f})"
    assert replaced < 0.1, replaced  # the measure does tell the blurred face from the sharp one
    x, y, w, h = box
    a, b = (np.asarray(Image.open(p), dtype=np.float64) for p in (photo, out["residual"]))
    change = (b - a)[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
    assert 14 < change.mean() < 20  # the age change itself (17 grey levels) was pasted
    assert (a[:, :40] == b[:, :40]).all()  # far outside the crop nothing moves


def test_age_strip_prints_the_face_box(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "photo.png"
    x, y, w, h = _photo_with_face(photo)
    assert age_cli(str(photo), "--run", str(tiny_run), "--out", str(tmp_path / "s.png"), "--box", f"{x},{y},{w},{h}",
                   "--groups", "0,9") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"strip row 1: the face at {x},{y},{w},{h} (manual)"
    assert out[1].startswith(f"wrote {tmp_path / 's.png'}: 1 face(s) x [input, 0-5, 71+]")


def test_age_verb_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(blank)
    assert age_cli(str(blank), "--run", str(tiny_run), "--out", str(tmp_path / "o.png")) == 2
    assert "no face found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert age_cli(str(bad), "--run", str(tiny_run), "--out", str(tmp_path / "o.png")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert age_cli(str(blank), "--run", str(tmp_path), "--out", str(tmp_path / "o.png")) == 2
    assert "not a gancore run" in capsys.readouterr().err
    assert age_cli(str(blank), "--run", str(tiny_run), "--out", str(tmp_path / "o.png"), "--groups", "3,10") == 2
    assert "--groups" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_age_verb_refuses_a_run_of_another_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gancore.testing import smoke_train

    other = {
        "recipe": {"name": "not-caae"},
        "data": {"source": "blobs", "resolution": 16, "size": 8},
        "parts": {"G": {"use": "basic.generator"}, "D": {"use": "basic.discriminator"}},
        "schedule": {"use": "alternating"},
    }
    run = smoke_train(other, tmp_path, steps=1, overrides=["output.checkpoint_every=1"])
    assert age_cli(str(tmp_path / "x.png"), "--run", str(run), "--out", str(tmp_path / "o.png")) == 2
    assert "is a run of schedule 'alternating', not 'caae.aae'" in capsys.readouterr().err


def test_trains_on_a_utkface_folder_and_evaluates_without_counterfactuals(tmp_path: Path) -> None:
    import numpy as np
    from gancore.runs import load_run
    from gancore.testing import smoke_train
    from gancore_caae.metric import AgeMetric
    from PIL import Image

    root = tmp_path / "UTKFace"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, age in enumerate([1, 8, 14, 19, 25, 35, 45, 55, 65, 80, 3, 30, 40, 50, 70, 90]):
        img = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{age}_{i % 2}_0_2017011617452{i:04d}.jpg.chip.jpg", "JPEG")
    recipe = {**TINY, "data": {"source": "utkface", "root": str(root), "resolution": 16, "test_fraction": 0.25}}
    run_dir = smoke_train(recipe, tmp_path, steps=1, overrides=["output.checkpoint_every=1"])
    out = AgeMetric(samples=4, strips=1, interp_pairs=1, interp_steps=2).compute(load_run(run_dir))
    assert "age_mse" not in out and "counterfactual" in out["age_note"]
    assert math.isfinite(out["recon_mse"]) and 0 <= out["z_ks_mean"] <= 1
