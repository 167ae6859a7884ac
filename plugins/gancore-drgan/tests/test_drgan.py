"""DR-GAN through the engine: the schedule's phases (who steps, what is made once), identity-
grouped batches, two-step CPU trains of every recipe, checkpoint reload, the evaluation
protocol end to end (Multi-PIE style and CFP), and the ``gancore rotate`` / ``gancore verify``
verbs on synthetic photos.  Everything is tiny (16 px, widths 4, a few identities)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gancore.losses import LossSum
from gancore.parts import DataInfo
from gancore.schedule import Context, Ledger
from gancore_drgan.model import DRGANDecoder, DRGANDiscriminator, DRGANEncoder
from gancore_drgan.schedule import DRGANSchedule, random_crops, to_channels

ROOT = Path(__file__).resolve().parents[3]
INFO = DataInfo(resolution=16, label_classes={"identity": 5, "pose": 3})

#: what makes any DR-GAN recipe tiny (on top of gancore.testing's TINY_OVERRIDES).
TINY = ["data.resolution=16", "data.identities=5", "data.size=128", "parts.G_enc.width=4", "parts.G_dec.width=4",
        "parts.D.width=4", "parts.G_dec.z_dim=8", "train.batch_size=4", "output.checkpoint_every=1",
        "output.keep_last=5", "output.sample_every=2"]


@pytest.fixture(scope="module", autouse=True)
def eager_renders():
    """Tiny test renders are faster eagerly than through synthfaces' one-off torch.compile."""
    from gancore_synth.render import set_render_backend

    set_render_backend("eager")
    yield
    set_render_backend(None)


def tiny_nets(images: int = 1, realfake: str = "softmax") -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"G_enc": DRGANEncoder(info=INFO, width=4, confidence=images > 1),
            "G_dec": DRGANDecoder(info=INFO, width=4, z_dim=8),
            "D": DRGANDiscriminator(info=INFO, width=4, realfake=realfake)}


def tiny_batch(groups: int = 4, images: int = 1) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    n = groups * images
    b = {"image": torch.rand(n, 3, 16, 16, generator=g) * 2 - 1,
         "identity": torch.arange(groups).repeat_interleave(images) % 5,
         "pose": torch.randint(0, 3, (n,), generator=g)}
    if images > 1:
        b["group"] = torch.arange(groups).repeat_interleave(images)
    return {"batch": b}


def run_iteration(schedule: DRGANSchedule, nets: dict, batch: dict, step: int = 0) -> dict[str, Any]:
    """One iteration the way the engine runs it: each phase backpropagates into the roles it trains."""
    ledger = Ledger(nets)
    ctx = Context(step=step, batch=batch, info=INFO, ledger=ledger)
    due = [p for p in schedule.phases() if not step % p.every and (p.when is None or p.when(ctx))]
    ledger.iteration = frozenset(r for p in due for r in p.trains)
    out: dict[str, Any] = {"phases": [p.name for p in due]}
    for p in due:
        ledger.begin_phase(p)
        ctx.phase = p.name
        p.run(ctx)
        total, parts = LossSum(p.losses).evaluate(ctx, step)
        total.backward(inputs=[q for r in p.trains for q in nets[r].parameters()])
        out[p.name] = {"parts": {k: float(v.detach()) for k, v in parts.items()},
                       "grads": {r for r, n in nets.items() if any(q.grad is not None for q in n.parameters())}}
        for n in nets.values():
            n.zero_grad(set_to_none=True)
        ledger.stepped(p.trains, p.name)
        ctx.release(p.trains)
        ctx.end_phase()
    out["ctx"] = ctx
    return out


# ---------------------------------------------------------------------------------------------
# the schedule


@pytest.mark.parametrize("images", [1, 3])
def test_one_iteration_encodes_once_and_each_phase_reaches_only_its_roles(images: int) -> None:
    nets = tiny_nets(images)
    calls = {"G_enc": 0, "G_dec": 0, "D": 0}
    for role in calls:
        nets[role].register_forward_hook(lambda *a, r=role: calls.__setitem__(r, calls[r] + 1))
    out = run_iteration(DRGANSchedule(images=images), nets, tiny_batch(4, images))
    assert out["phases"] == ["D", "G"]
    # f(x) once per image, one decoder pass (single and fused syntheses together); D: real + fake, then fake
    assert calls == {"G_enc": 1, "G_dec": 1, "D": 3}
    assert out["D"]["grads"] == {"D"} and out["G"]["grads"] == {"G_enc", "G_dec"}
    names = set(out["D"]["parts"]) | set(out["G"]["parts"])
    want = {"d_id_real", "d_pose_real", "d_synthetic", "g_id", "g_pose"}
    assert names == (want | {"g_id_fused", "g_pose_fused"} if images > 1 else want)
    assert all(math.isfinite(v) for p in ("D", "G") for v in out[p]["parts"].values())


def test_loss_terms_of_the_phases_read_what_they_should() -> None:
    nets = tiny_nets(3)
    out = run_iteration(DRGANSchedule(images=3, omega_dropout=0.0), nets, tiny_batch(2, 3))
    ctx = out["ctx"]
    syn = ctx["syntheses"]
    # one pose code and z per group: all images of a group asked for the same pose
    assert syn.pose.view(2, 3).eq(syn.pose.view(2, 3)[:, :1]).all() and torch.equal(syn.group_pose, syn.pose[::3])
    assert syn.single.shape == (6, 3, 16, 16) and syn.fused.shape == (2, 3, 16, 16)
    assert syn.group_identity.tolist() == [0, 1]
    # eq. 7: the n single terms weigh n times their mean; D's synthetic class is the last identity logit
    sched = DRGANSchedule(images=3)
    g = {t.name: t for t in sched.phases()[1].losses}
    assert g["g_id"].config.weight == 3.0 and g["g_id_fused"].config.weight == 1.0
    assert DRGANSchedule(images=3, single_weight=1.0).phases()[1].losses[0].config.weight == 1.0
    d_fake = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, math.log(5.0)]])  # 6 = 5 identities + synthetic
    syn_term = {t.name: t for t in sched.phases()[0].losses}["d_synthetic"]
    assert syn_term({"d_fake_id_logits": d_fake}).item() == pytest.approx(math.log(2))  # -log(5/10)


def test_d_every_and_the_d_strong_rule() -> None:
    nets = tiny_nets()
    sched = DRGANSchedule(d_every=2)
    assert run_iteration(sched, nets, tiny_batch(), step=1)["phases"] == ["G"]  # 1 D : 2 G
    assert run_iteration(sched, nets, tiny_batch(), step=2)["phases"] == ["D", "G"]
    strong = DRGANSchedule(strong_accuracy=0.9, strong_every=4)
    d = strong.phases()[0]
    state: dict[str, Any] = {}
    ctx = Context(step=5, batch=tiny_batch(), state=state)
    assert d.when(ctx)  # no accuracy yet: D steps
    out = run_iteration(strong, nets, tiny_batch(), step=0)
    assert 0.0 <= float(out["ctx"].state["d_accuracy"]) <= 1.0  # written by the D phase, no host sync
    state["d_accuracy"] = torch.tensor(0.95)  # strong: D only every 4th iteration
    assert not d.when(Context(step=5, batch=tiny_batch(), state=state))
    assert d.when(Context(step=8, batch=tiny_batch(), state=state))
    state["d_accuracy"] = torch.tensor(0.5)
    assert d.when(Context(step=5, batch=tiny_batch(), state=state))
    with pytest.raises(ValueError, match="not both"):
        DRGANSchedule(strong_accuracy=0.9, d_every=2)


def test_separate_real_fake_unit_and_the_l2_ablation() -> None:
    out = run_iteration(DRGANSchedule(realfake="separate"), tiny_nets(realfake="separate"), tiny_batch())
    assert set(out["D"]["parts"]) == {"d_id_real", "d_pose_real", "d_rf_real", "d_rf_fake"}
    assert set(out["G"]["parts"]) == {"g_id", "g_pose", "g_rf"}
    with pytest.raises(ValueError, match="set the same value"):
        run_iteration(DRGANSchedule(realfake="separate"), tiny_nets(), tiny_batch())
    l2 = DRGANSchedule(objective="l2")
    assert [p.name for p in l2.phases()] == ["G"] and l2.optimized_roles() == ["G_enc", "G_dec"]
    assert l2.streams()["batch"].group_size == 2
    b = tiny_batch(2, 2)
    out = run_iteration(l2, tiny_nets(), b)
    ctx = out["ctx"]
    assert out["G"]["grads"] == {"G_enc", "G_dec"} and set(out["G"]["parts"]) == {"g_l2"}
    with pytest.raises(ValueError, match="single-image"):
        DRGANSchedule(objective="l2", images=2)


def test_random_crops_and_grayscale() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    torch.manual_seed(0)
    y = random_crops(x, 0.5)  # pad 2 per side: a shifted window, the same scale
    assert y.shape == x.shape
    for i in range(2):  # every output pixel is an input pixel (edges repeated), never interpolated
        assert set(y[i].flatten().tolist()) <= set(x[i].flatten().tolist())
    assert torch.equal(random_crops(x, 0.0), x)
    g = to_channels(torch.ones(1, 3, 2, 2), 1)
    assert g.shape == (1, 1, 2, 2) and torch.allclose(g, torch.ones(1, 1, 2, 2))


def test_sample_grid_rows() -> None:
    nets = {k: v.eval() for k, v in tiny_nets(3).items()}
    rows = DRGANSchedule(images=3, sample_faces=2).sample(nets, tiny_batch(4, 3))
    assert len(rows) == 2 and rows[0][1].shape == (3 + 3, 3, 16, 16)  # 3 inputs, then 3 poses
    rows = DRGANSchedule(sample_faces=2).sample({k: v.eval() for k, v in tiny_nets().items()}, tiny_batch())
    assert len(rows) == 2 and rows[0][1].shape == (1 + 3, 3, 16, 16)


# ---------------------------------------------------------------------------------------------
# data: identity-grouped batches


def test_identity_grouped_batches() -> None:
    from gancore.data.base import BatchPlan
    from gancore_synth.synthfaces import SynthFaces

    src = SynthFaces(profile="multipie", resolution=16, identities=5, size=200)
    sched = DRGANSchedule(images=6)
    plan = BatchPlan(src.labels(), sched.streams(), 3, seed=0, num_samples=len(src))
    for step in range(3):
        idx, group = plan.draw("batch", step)
        assert group == [g for g in range(3) for _ in range(6)]  # 3 full groups of 6, contiguous
        ids = src.labels()["identity"][idx].view(3, 6)
        assert bool((ids == ids[:, :1]).all())  # one identity per group
        assert len(set(idx)) == len(idx)  # distinct images


# ---------------------------------------------------------------------------------------------
# the engine: every recipe trains two steps on CPU


def _smoke(recipe: str, tmp_path: Path, extra: list[str] | None = None) -> Path:
    from gancore.testing import smoke_train

    return smoke_train(ROOT / "recipes" / recipe, tmp_path, steps=2,
                       overrides=[*TINY, f"data.cache='{(tmp_path / 'cache').as_posix()}'", *(extra or [])])


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"step_{step:06d}" / "model.safetensors"))


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _smoke("drgan-multi.toml", tmp_path_factory.mktemp("multi"), ["train.batch_size=2", "schedule.images=3"])


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _smoke("drgan-cpu.toml", tmp_path_factory.mktemp("single"))


def _check_trained(run_dir: Path, terms: set[str]) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert terms <= set(records[-1]) and all(math.isfinite(records[-1][k]) for k in terms)
    a, b = _weights(run_dir, 1), _weights(run_dir, 2)
    for role in ("G_enc", "G_dec", "D"):  # every network's weights change when its phase runs
        keys = [k for k in a if k.startswith(role + ".") and a[k].is_floating_point() and "running" not in k]
        assert keys and any(not torch.equal(a[k], b[k]) for k in keys), role
    assert (run_dir / "samples" / "step_000002.png").is_file()


def test_two_step_train_of_the_paper_recipe(tmp_path: Path) -> None:
    run = _smoke("drgan.toml", tmp_path)  # 9 poses (data.poses = "drgan9"), random crops
    _check_trained(run, {"D/d_id_real", "D/d_pose_real", "D/d_synthetic", "G/g_id", "G/g_pose"})
    assert json.loads((run / "recipe.json").read_text())["data"]["poses"] == "drgan9"
    assert _weights(run, 2)["G_dec.fc.weight"].shape[1] == 4 * 10 + 9 + 8  # f (40) + 9 poses + z (8)


def test_two_step_train_of_the_multi_image_recipe(multi_run: Path) -> None:
    _check_trained(multi_run, {"D/d_synthetic", "G/g_id", "G/g_pose", "G/g_id_fused", "G/g_pose_fused"})
    assert _weights(multi_run, 2)["G_enc.trunk.blocks.4.3.weight"].shape[0] == 41  # 40 + the omega channel


def test_two_step_train_of_the_cpu_recipes(single_run: Path, tmp_path: Path) -> None:
    _check_trained(single_run, {"D/d_id_real", "G/g_id"})
    multi = _smoke("drgan-multi-cpu.toml", tmp_path, ["train.batch_size=2"])
    _check_trained(multi, {"D/d_synthetic", "G/g_id_fused", "G/g_pose_fused"})


def test_checkpoint_reload_gives_the_same_rotation(multi_run: Path) -> None:
    from PIL import Image

    from gancore.engine import heldout_batch, save_grid
    from gancore.testing import checkpoint_roundtrip

    run = checkpoint_roundtrip(multi_run)
    batch, _ = heldout_batch(run.resolved, 2)
    rows = run.schedule.sample(run.nets, batch)
    out = multi_run / "again.png"
    save_grid(rows, out)
    # the sample grid the trained networks drew at step 2, and the same from the reloaded checkpoint
    assert torch.equal(torch.tensor(list(Image.open(out).get_flattened_data())),
                       torch.tensor(list(Image.open(multi_run / "samples" / "step_000002.png").get_flattened_data())))
    x = batch["batch"]["image"][:2]
    again = load_twice = None
    from gancore.runs import load_run

    for _ in range(2):
        r = load_run(multi_run)
        y = r.nets["G_dec"](r.nets["G_enc"](x).f, torch.tensor([0, 2]))
        again, load_twice = load_twice, y
    assert torch.equal(again, load_twice)


# ---------------------------------------------------------------------------------------------
# evaluation


def test_evaluating_the_trained_weights_of_an_averaged_run_keeps_the_verify_threshold(tmp_path: Path) -> None:
    """`gancore verify` uses train.ema's averages, so only their evaluation may store its threshold."""
    from gancore.runs import load_run
    from gancore_drgan.metric import VERIFY_FILE, RecognitionMetric

    run = _smoke("drgan-cpu.toml", tmp_path, ["train.ema=0.9", "train.ema_roles=['G_enc', 'G_dec']"])
    metric = RecognitionMetric(max_probes=60, multi_max=2, multi_sets=1, pose_faces=2, identity_faces=0, mean_faces=1,
                               classifier_steps=1, classifier_batch=4, figure_faces=1, batch=128)
    raw = metric.compute(load_run(run, ema=False))
    assert not (run / VERIFY_FILE).exists() and "verify_threshold_file" not in raw
    averaged = metric.compute(load_run(run))
    stored = json.loads((run / VERIFY_FILE).read_text())
    assert averaged["verify_threshold"] == round(stored["threshold"], 4)
    assert raw["rank1_all"] != averaged["rank1_all"] or raw["frontal_mse"] != averaged["frontal_mse"]


def test_detail_measures_blur() -> None:
    from gancore_drgan.metric import detail

    x = torch.zeros(2, 3, 4, 4)
    x[0, :, :, 2:] = 1.0  # one vertical edge: 4 of 12 horizontal pairs differ by 1, no vertical pair
    assert torch.allclose(detail(x), torch.tensor([(4 / 12 + 0) / 2, 0.0]))
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(img, 3, 1, 1, count_include_pad=False)
    assert detail(blurred) < 0.6 * detail(img) and torch.equal(detail(img), detail(img.clone()))


def test_masked_mse_and_head_mask_by_hand() -> None:
    from gancore_drgan.metric import head_mask, masked_mse

    a, b = torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    a[0, :, 0, 0] = 2.0  # sample 0: one pixel off by 2 in every channel
    a[1, :, 1, 1] = 1.0  # sample 1: another pixel off by 1
    assert torch.allclose(masked_mse(a, b), torch.tensor([4 / 4, 1 / 4]))
    mask = torch.zeros(2, 1, 2, 2)
    mask[:, :, 0, :] = 1.0  # the top row only: sample 0's error is inside it, sample 1's outside
    assert torch.allclose(masked_mse(a, b, mask), torch.tensor([4 / 2, 0.0]))
    assert torch.equal(masked_mse(a, b, torch.zeros(2, 1, 2, 2)), torch.zeros(2))  # an empty mask: 0, not NaN
    parts = {"background": torch.ones(1, 2, 2), "body": torch.ones(1, 2, 2), "skin": torch.tensor([[[0.9, 0.2], [0.0, 0.0]]]),
             "hair": torch.tensor([[[0.0, 0.4], [0.0, 0.0]]])}
    assert torch.equal(head_mask(parts), torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]]))  # skin + hair > 0.5


def test_eval_metric_end_to_end(single_run: Path) -> None:
    from gancore.runs import load_run
    from gancore_drgan.metric import VERIFY_FILE, RecognitionMetric

    metric = RecognitionMetric(max_probes=120, multi_max=3, multi_sets=2, pose_faces=4, identity_faces=1, mean_faces=2,
                               classifier_steps=3, classifier_batch=8, figure_faces=2, batch=128)
    out = metric.compute(load_run(single_run))
    assert out["yaws"] == [-90.0 + 15 * k for k in range(13)] and out["gallery_identities"] == 2
    for key in ("rank1_avg60", "rank1_avg60_baseline", "rank1_avg60_untrained", "pose_control", "frontal_mse",
                "frontal_mse_baseline", "frontal_mse_mean_face", "identity_kept", "pose_classifier_accuracy",
                "sharpness", "sharpness_baseline"):
        assert out[key] is not None and math.isfinite(out[key]) and out[key] >= 0, key
    assert len(out["rank1_by_yaw"]) == 13 and len(out["pose_control_by_pose"]) == 13
    assert len(out["sharpness_by_pose"]) == 13 and out["sharpness_baseline"] < 1  # an average is blurrier than a render
    assert out["multi_n"] == [1, 2, 3] and len(out["multi_rank1_by_n"]) == 3
    assert Path(out["rotations_png"]).is_file()
    assert (single_run / VERIFY_FILE).is_file() and -1 <= out["verify_threshold"] <= 1 + 1e-6

    wider = RecognitionMetric(max_probes=60, multi_max=1, multi_sets=1, pose_faces=2, identity_faces=0, mean_faces=2,
                              classifier_steps=1, classifier_batch=8, figure_faces=0, test_identities=5)
    assert wider.compute(load_run(single_run))["gallery_identities"] == 5  # a harder gallery: 5 held-out identities


def test_cfp_protocol_end_to_end_on_an_export(single_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from gancore.cli import main

    root = tmp_path / "cfp"
    assert main(["data", "export", "synthfaces", "--profile", "multipie", "--format", "cfp", "--n", "160",
                 "--resolution", "16", "--split", "test", "--out", str(root)]) == 0
    assert (root / "Protocol" / "Split" / "FP").is_dir()
    capsys.readouterr()
    assert main(["eval", str(single_run), "--protocol", "cfp", "--root", str(root), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["drgan.recognition"]
    for setting in ("FF", "FP"):
        r = res[setting]
        assert r["folds"] >= 2 and r["pairs"] > 0
        for key in ("accuracy", "eer", "auc"):
            assert 0.0 <= r[key] <= 1.0 and r[f"{key}_std"] >= 0.0
    assert (single_run / "eval-cfp.json").is_file()
    assert main(["eval", str(single_run), "--protocol", "cfp"]) == 2  # no --root
    assert "--root" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# gancore rotate / gancore verify


def _photo(path: Path, index: int = 0, res: int = 96) -> str:
    """A held-out synthfaces render pasted into a grey canvas; returns its --box."""
    import numpy as np
    from PIL import Image

    from gancore_synth.synthfaces import SynthFaces

    face = SynthFaces(profile="multipie", resolution=res, size=8, split="test").load([index])["image"][0]
    arr = ((face.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    canvas = np.full((200, 260, 3), 120, np.uint8)
    canvas[50 : 50 + res, 80 : 80 + res] = arr
    Image.fromarray(canvas).save(path)
    return f"80,50,{res},{res}"


def cli(*args: str) -> int:
    from gancore.cli import main

    return main(list(args))


def test_rotate_on_synthetic_photos(single_run: Path, multi_run: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    box = _photo(a, 0)
    _photo(b, 1)
    out = tmp_path / "strip.png"
    assert cli("rotate", str(a), "--run", str(single_run), "--out", str(out), "--box", box) == 0
    assert Image.open(out).size == (16 * (1 + 13), 16)  # the input, then all 13 poses
    assert cli("rotate", str(a), "--run", str(single_run), "--out", str(out), "--box", box, "--yaw", "-90,0,90") == 0
    assert Image.open(out).size == (16 * 4, 16) and "-90°, +0°, +90°" in capsys.readouterr().out
    # several photos of one person: fused with omega by the multi-image run
    assert cli("rotate", str(a), str(b), "--run", str(multi_run), "--out", str(out), "--box", box) == 0
    assert Image.open(out).size == (16 * (2 + 9), 16)  # two inputs, then the paper recipe's 9 poses
    front = tmp_path / "front.png"
    assert cli("rotate", str(a), "--run", str(single_run), "--out", str(front), "--box", box, "--frontal") == 0
    assert Image.open(front).size == (260, 200)  # the photo, with the frontal face pasted back
    assert cli("rotate", str(a), "--run", str(single_run), "--out", str(out), "--box", box, "--yaw", "10") == 2
    assert "no pose at 10°" in capsys.readouterr().err


def test_verify_on_synthetic_photos(single_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    box = _photo(a, 0)
    _photo(b, 3)
    capsys.readouterr()
    assert cli("verify", str(a), str(a), "--run", str(single_run), "--box", box, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["cosine"] == pytest.approx(1.0, abs=1e-5)
    # the tiny run's stored threshold may say "never the same" (above every cosine): the
    # verdict follows it, and a usable threshold says the same image is the same person
    assert res["threshold_from"].endswith("drgan_verify.json") and res["same"] is (res["cosine"] >= res["threshold"])
    assert cli("verify", str(a), str(a), "--run", str(single_run), "--box", box, "--json", "--threshold", "0.9") == 0
    assert json.loads(capsys.readouterr().out)["same"] is True
    assert cli("verify", str(a), str(b), "--run", str(single_run), "--box", box, "--threshold", "1.5") == 0
    text = capsys.readouterr().out
    assert "different people" in text and "threshold 1.5000 (--threshold)" in text


def test_verbs_refuse_a_photo_without_a_face_and_other_runs(single_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(noise)
    assert cli("rotate", str(noise), "--run", str(single_run), "--out", str(tmp_path / "o.png")) == 2
    assert "no face found" in capsys.readouterr().err
    assert cli("verify", str(noise), str(noise), "--run", str(single_run)) == 2
    assert "no face found" in capsys.readouterr().err
    assert cli("rotate", str(tmp_path / "missing.jpg"), "--run", str(single_run), "--out", str(tmp_path / "o.png")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli("rotate", str(noise), "--run", str(tmp_path), "--out", str(tmp_path / "o.png")) == 2
    assert "cannot load run" in capsys.readouterr().err
    a = tmp_path / "a.png"
    box = _photo(a)
    assert cli("rotate", str(a), str(a), str(a), "--run", str(single_run), "--out", str(tmp_path / "o.png"),
               "--box", box, "--box", box) == 2
    assert "--box was given 2 times for 3 photos" in capsys.readouterr().err


def test_verbs_refuse_a_run_of_another_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gancore.testing import smoke_train

    other = {
        "recipe": {"name": "not-drgan"},
        "data": {"source": "blobs", "resolution": 16, "size": 8},
        "parts": {"G": {"use": "basic.generator"}, "D": {"use": "basic.discriminator"}},
        "schedule": {"use": "alternating"},
    }
    run = smoke_train(other, tmp_path, steps=1, overrides=["output.checkpoint_every=1"])
    assert cli("verify", "a.png", "b.png", "--run", str(run)) == 2
    assert "is a run of schedule 'alternating', not 'drgan.schedule'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the speed benchmark script


def test_benchmark_script_measures_a_tiny_engine_run(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("drgan_bench", ROOT / "plugins/gancore-drgan/scripts/benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.measure(str(ROOT / "recipes" / "drgan.toml"), 2, steps=2, warmup=1, device="cpu",
                      overrides=["data.resolution=16", "data.identities=5", "data.size=64", "parts.G_enc.width=4",
                                 "parts.G_dec.width=4", "parts.D.width=4"], workdir=tmp_path)
    assert r["images_per_batch"] == 2 and r["images_per_s"] > 0 and r["peak_memory_mib"] > 0
    assert r["steps_timed"] == 2 and r["device"] == "cpu"
