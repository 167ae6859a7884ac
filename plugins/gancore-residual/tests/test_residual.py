"""Tests of gancore-residual: networks, loss terms, the dual schedule, training through the
engine, checkpoint reload and the ``gancore edit`` verb.  CPU, tiny, < 30 s in all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gancore.parts import DataInfo
from gancore.schedule import Context, Ledger
from gancore_residual.losses import PerceptualL1, ResidualSparsity
from gancore_residual.model import ResidualDiscriminator, ResidualOutput, ResidualTransformer, disc_layers
from gancore_residual.schedule import DualSchedule, residual_to_image

ROOT = Path(__file__).resolve().parents[3]  # the gancore checkout
CPU_RECIPE = ROOT / "recipes" / "residual-cpu.toml"
PAPER_RECIPE = ROOT / "recipes" / "residual.toml"


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------ networks


def test_transformer_shapes_and_parameters_at_128px() -> None:
    # Hand count at width 64 (conv weights k·k·c_in·c_out; convs before BN have no bias; BN has 2·c):
    #   conv 5x5/1   3→64 :   5·5·3·64    =   4,800  + BN 128 =   4,928
    #   conv 4x4/2  64→128:   4·4·64·128  = 131,072  + BN 256 = 131,328
    #   conv 4x4/2 128→256:   4·4·128·256 = 524,288  + BN 512 = 524,800
    #   deconv 3x3/2 256→128: 3·3·256·128 = 294,912  + BN 256 = 295,168
    #   deconv 3x3/2 128→64:  3·3·128·64  =  73,728  + BN 128 =  73,856
    #   conv 4x4/1  64→3  :   4·4·64·3    =   3,072  + bias 3 =   3,075
    #   total                                                    1,033,155
    g = ResidualTransformer(info=DataInfo(resolution=128))
    assert _count(g) == 1_033_155
    x = torch.randn(2, 3, 128, 128)
    out = g(x)
    assert isinstance(out, ResidualOutput)
    assert out.out.shape == out.residual.shape == (2, 3, 128, 128)
    torch.testing.assert_close(out.out, x + out.residual)  # x̃ = x + r, no tanh


@pytest.mark.parametrize("channels_last", [False, True])
def test_transformer_last_conv_equals_the_padded_layer_list(channels_last: bool) -> None:
    """forward() skips ZeroPad2d((1, 2, 1, 2)) by padding the last conv by 2 and dropping its
    first row and column: the same residual (and gradients) as running the layer list."""
    g = ResidualTransformer(info=DataInfo(resolution=32), width=8).train()
    x = torch.randn(3, 3, 32, 32)
    if channels_last:
        g, x = g.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    r = g(x).residual
    (gx_fast,) = torch.autograd.grad(r.square().sum(), x)
    ref = g.net(x)  # the layers as listed, with the explicit padding (BatchNorm in train mode: same batch)
    (gx_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(r, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_fast, gx_ref, atol=1e-5, rtol=1e-5)
    assert r.shape == (3, 3, 32, 32)


def test_discriminator_shapes_and_parameters_at_128px() -> None:
    # Hand count at width 64, 128 px → five 4x4/2 convs (128→64→32→16→8→4), first without BN (has bias):
    #   conv   3→64   : 16·3·64      =     3,072 + bias 64    =     3,136
    #   conv  64→128  : 16·64·128    =   131,072 + BN 256     =   131,328
    #   conv 128→256  : 16·128·256   =   524,288 + BN 512     =   524,800
    #   conv 256→512  : 16·256·512   = 2,097,152 + BN 1024    = 2,098,176
    #   conv 512→1024 : 16·512·1024  = 8,388,608 + BN 2048    = 8,390,656
    #   linear 1024·4·4 → 3          :    49,152 + bias 3     =    49,155
    #   total                                                    11,197,251
    d = ResidualDiscriminator(info=DataInfo(resolution=128))
    assert _count(d) == 11_197_251
    out = d(torch.randn(2, 3, 128, 128), features=True)
    assert out.logits.shape == (2, 3)
    assert [f.shape for f in out.features] == [(2, 256, 16, 16)]  # φ = 3rd conv by default
    assert d(torch.randn(2, 3, 128, 128)).features == []


@pytest.mark.parametrize("res,layers", [(32, 3), (48, 3), (64, 4), (128, 5), (256, 5)])
def test_discriminator_depth_adapts_to_resolution(res: int, layers: int) -> None:
    assert disc_layers(res) == layers
    d = ResidualDiscriminator(width=4, info=DataInfo(resolution=res))
    assert d(torch.randn(2, 3, res, res)).logits.shape == (2, 3)


def test_bad_configs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="perceptual_layer = 4.*only 3 conv layers"):
        ResidualDiscriminator(width=4, perceptual_layer=4, info=DataInfo(resolution=32))
    with pytest.raises(ValueError, match="multiples of 4"):
        ResidualTransformer(width=4)(torch.randn(1, 3, 30, 30))
    with pytest.raises(Exception, match="width"):
        ResidualTransformer(width=0)


# ------------------------------------------------------------------------------ loss terms


def test_sparsity_against_hand_value() -> None:
    r = torch.tensor([[[[1.0, -2.0], [0.0, 0.5]]], [[[-1.0, 0.0], [0.0, 0.0]]]])  # [2, 1, 2, 2]
    # per image Σ|r|: 3.5 and 1.0 → batch mean 2.25; weighted by α = 5e-4
    term = ResidualSparsity()
    assert term.compute(residual=r).item() == pytest.approx(2.25)
    assert term({"residual": r}).item() == pytest.approx(2.25 * 5e-4)


def test_perceptual_against_hand_value() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 4.0], [1.0, 1.0, -1.0]])
    # image 0: |0|+|2|+|-1| = 3; image 1: 1+1+1 = 3 → mean 3; two layers in the list → 3 + 3·(scale 2) = 9
    term = PerceptualL1(inputs={"real": "pr", "fake": "pf"})
    assert term.compute(real=[a], fake=[b]).item() == pytest.approx(3.0)
    assert term.compute(real=[a, 2 * a], fake=[b, 2 * b]).item() == pytest.approx(9.0)
    assert term({"pr": [a], "pf": [b]}).item() == pytest.approx(3.0 * 5e-5)
    with pytest.raises(ValueError, match="equally long"):
        term.compute(real=[a], fake=[b, b])


# ------------------------------------------------------------------------------ schedule

RES = 16


def _nets() -> dict[str, torch.nn.Module]:
    info = DataInfo(resolution=RES)
    torch.manual_seed(0)
    return {"G0": ResidualTransformer(width=4, info=info), "G1": ResidualTransformer(width=4, info=info),
            "D": ResidualDiscriminator(width=4, perceptual_layer=2, info=info)}


def _batch(n: int = 3) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return {s: {"image": torch.rand(n, 3, RES, RES, generator=g) * 2 - 1, "attribute": torch.full((n,), a)}
            for a, s in enumerate(("x0", "x1"))}


def test_d_is_trained_on_the_right_three_classes() -> None:
    nets, batch = _nets(), _batch(3)
    ctx = Context(step=0, batch=batch, ledger=Ledger(nets))
    DualSchedule()._run_d(ctx)
    # real x0 → 0, real x1 → 1, x̃0 = G0(x0) → 2, x̃1 = G1(x1) → 2
    assert ctx["d_target"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert ctx["d_logits"].shape == (12, 3)
    assert ctx["fake0"].out.requires_grad  # shared, with its graph, with the G0 phase


def test_g_phase_targets_gan_and_dual() -> None:
    nets, batch = _nets(), _batch(2)
    ctx = Context(step=0, batch=batch, ledger=Ledger(nets))
    s = DualSchedule()
    s._run_g(ctx, 0)  # G0's output should pass as class 1, G1(G0(x0)) as class 0
    assert ctx["gan_target"].tolist() == [1, 1] and ctx["dual_target"].tolist() == [0, 0]
    s._run_g(ctx, 1)  # G1's output as class 0, G0(G1(x1)) as class 1
    assert ctx["gan_target"].tolist() == [0, 0] and ctx["dual_target"].tolist() == [1, 1]
    assert [f.shape for f in ctx["phi_real"]] == [(2, 8, 4, 4)]


BLOBS = {  # ResGAN on the core's instant test images (attribute = square), 16 px, 4-channel networks
    "recipe": {"name": "residual-blobs"},
    "data": {"source": "blobs", "resolution": 16, "size": 64, "attribute": "square"},
    "parts": {"G0": {"use": "residual.transformer", "width": 4}, "G1": {"use": "residual.transformer", "width": 4},
              "D": {"use": "residual.discriminator", "width": 4, "perceptual_layer": 2}},
    "schedule": {"use": "residual.dual"},
}


@pytest.mark.parametrize("options", [{}, {"d_every": 1, "g_every": 2}, {"d_every": 2, "g_every": 1},
                                     {"d_every": 3, "g_every": 2}, {"dual_updates_other": True}, {"dual": False}])
def test_phases_step_only_their_own_networks(options: dict, tmp_path: Path) -> None:
    """Through the engine, at every D:G ratio and variant: each phase changes exactly the
    weights of the roles it trains, on every step it runs; D's and the other G's BatchNorm
    statistics stay put in a G phase (the dual pass and the perceptual features)."""
    from gancore.testing import trace_phases

    recipe = {**BLOBS, "schedule": {**BLOBS["schedule"], **options}}
    t = trace_phases(recipe, tmp_path, steps=6)
    d, g = options.get("d_every", 1), options.get("g_every", 1)
    assert t.ran() == [(s, p) for s in range(6) for p, every in (("D", d), ("G0", g), ("G1", g)) if s % every == 0]
    t.check()
    other = options.get("dual_updates_other", False)
    for r in t.records:
        if r.phase != "D":
            assert "D" not in r.stats and (other or f"G{1 - int(r.phase[1])}" not in r.stats), (r.step, r.phase)


def test_default_losses_and_weights() -> None:
    phases = {p.name: p for p in DualSchedule().phases()}
    assert [(t.name, t.config.weight) for t in phases["D"].losses] == [("cls", 1.0)]
    assert [(t.name, t.config.weight) for t in phases["G0"].losses] == [
        ("gan", 1.0), ("dual", 1.0), ("residual.sparsity", 5e-4), ("residual.perceptual", 5e-5)]


def test_sample_rows_and_residual_scaling() -> None:
    nets = {k: v.eval() for k, v in _nets().items()}
    rows = DualSchedule().sample(nets, _batch(2))
    assert [name for name, _ in rows] == ["x0", "r0 (scaled)", "G0(x0)", "x1", "r1 (scaled)", "G1(x1)"]
    assert all(t.shape == (2, 3, RES, RES) and t.abs().max() <= 1 for _, t in rows)
    r = torch.tensor([[[[0.0, 0.1], [-0.2, 0.05]]]])
    assert residual_to_image(r).flatten().tolist() == pytest.approx([0.0, 0.5, -1.0, 0.25])


# ------------------------------------------------------------------------------ through the engine

TINY = [  # the CPU recipe, shrunk: 32 px, 4-channel networks, 48 faces, no cache
    "data.resolution=32", "data.size=48", "data.supersample=1", "data.cache='{cache}'",
    "parts.G0.width=4", "parts.G1.width=4", "parts.D.width=4",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training steps of recipes/residual-cpu.toml on CPU (shared by the tests below)."""
    from gancore.testing import smoke_train

    tmp = tmp_path_factory.mktemp("residual")
    return smoke_train(CPU_RECIPE, tmp, steps=2, overrides=[o.format(cache=tmp / "cache") for o in TINY])


def test_two_step_train_from_the_cpu_recipe(tiny_run: Path) -> None:
    import json

    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("D/cls", "G0/gan", "G0/dual", "G0/residual.sparsity", "G0/residual.perceptual",
                "G1/gan", "G1/dual", "G1/residual.sparsity", "G1/residual.perceptual"):
        assert math.isfinite(records[-1][key]), key
    assert (tiny_run / "samples" / "step_000002.png").exists()


def test_paper_recipe_validates() -> None:
    import gancore

    resolved = gancore.load_recipe(PAPER_RECIPE)
    assert resolved.data_config.resolution == 128 and resolved.train.batch_size == 64
    assert {r: cfg.width for r, (_, cfg) in resolved.parts.items()} == {"G0": 64, "G1": 64, "D": 64}
    weights = {t.name: t.config.weight for t in resolved.phase_losses["G0"]}
    assert weights["residual.sparsity"] == 5e-4 and weights["residual.perceptual"] == 5e-5


def test_checkpoint_reload_gives_the_same_edit(tiny_run: Path) -> None:
    from gancore.testing import checkpoint_roundtrip
    from gancore_residual.cli import edit_crops, load_residual_run

    checkpoint_roundtrip(tiny_run)  # every saved tensor comes back bit for bit
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = edit_crops(load_residual_run(tiny_run), x, "auto")
    b = edit_crops(load_residual_run(tiny_run), x, "auto")
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    assert a[2] == b[2]
    add = edit_crops(load_residual_run(tiny_run), x, "add")
    run = load_residual_run(tiny_run)
    torch.testing.assert_close(add[0], run.nets["G0"](x).out.clamp(-1, 1))


def test_edit_metric_on_a_tiny_run(tiny_run: Path) -> None:
    from gancore.runs import load_run
    from gancore_residual.metric import EditMetric

    run = load_run(tiny_run)
    out = EditMetric(num_faces=4, batch_size=4, oracle_steps=2, oracle_pool=16, oracle_batch=4).compute(run)
    assert out["faces"] == 4
    for key in ("l1_in_mask", "psnr_in_mask", "psnr_out_mask", "success_oracle"):
        assert out[f"model.{key}"] is not None and out[f"baseline.{key}"] is not None
    assert 0 <= out["model.residual_in_mask"] <= 1
    assert out["baseline.l1_in_mask"] > 0  # doing nothing leaves the attribute region wrong


def _synthetic_photo(path: Path) -> tuple[int, int, int, int]:
    """A synthfaces render (64 px) pasted into a 160x120 grey canvas; returns its box."""
    from gancore_synth.synthfaces import SynthFaces
    from gancore.photo import save_image

    face = SynthFaces(resolution=64, split="test", size=4, supersample=1).load([0])["image"][0]
    canvas = torch.zeros(3, 120, 160)
    canvas[:, 30:94, 50:114] = face
    save_image(canvas, path)
    return (50, 30, 64, 64)


def test_edit_cli_on_a_synthetic_photo(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    from gancore.cli import main

    photo, out, res = tmp_path / "face.png", tmp_path / "out.png", tmp_path / "res.png"
    box = _synthetic_photo(photo)
    code = main(["edit", str(photo), "--run", str(tiny_run), "--out", str(out), "--residual", str(res),
                 "--direction", "add", "--box", ",".join(map(str, box))])
    assert code == 0, capsys.readouterr().err
    before, after = np.asarray(Image.open(photo)), np.asarray(Image.open(out))
    assert after.shape == before.shape
    changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 0
    assert changed.any() and not changed[:, :20].any()  # edited inside the aligned crop around the box only
    assert Image.open(res).size == (3 * 32, 32)  # crop | residual | edit
    assert "add Eyeglasses" in capsys.readouterr().out


def test_edit_cli_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gancore.cli import main
    from gancore.photo import save_image

    blank = tmp_path / "blank.png"
    save_image(torch.zeros(3, 100, 100), blank)
    assert main(["edit", str(blank), "--run", str(tiny_run), "--out", str(tmp_path / "o.png")]) == 2
    assert "no face found" in capsys.readouterr().err
    assert main(["edit", str(blank), "--run", str(tmp_path), "--out", str(tmp_path / "o.png")]) == 2
    assert "not a gancore run folder" in capsys.readouterr().err
    assert main(["edit", str(blank), "--run", str(tiny_run), "--attribute", "Smiling", "--box", "1,1,50,50",
                 "--out", str(tmp_path / "o.png")]) == 2
    assert "trained to edit 'Eyeglasses'" in capsys.readouterr().err


def test_edit_cli_refuses_a_run_of_another_schedule(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gancore.cli import main
    from gancore.photo import save_image
    from gancore.testing import smoke_train

    other = smoke_train(ROOT / "recipes" / "basic-gan.toml", tmp_path, steps=1,
                        overrides=["data.resolution=16", "data.size=16", "data.supersample=1",
                                   "parts.G.width=4", "parts.D.width=4"])
    photo = tmp_path / "p.png"
    save_image(torch.zeros(3, 64, 64), photo)
    assert main(["edit", str(photo), "--run", str(other), "--out", str(tmp_path / "o.png")]) == 2
    assert "schedule 'alternating'" in capsys.readouterr().err


def test_dry_run_names_a_loss_term_whose_inputs_do_not_fit() -> None:
    """What `gancore validate` reports where `run` would fail mid-step: an L1 on the
    perceptual features (lists of tensors), and an L1 between GAN logits and class targets."""
    import gancore
    from gancore.engine import dry_run
    from gancore.losses import LossError

    lists = {**BLOBS, "losses": [{"use": "l1", "phase": "G0", "inputs": {"pred": "phi_fake", "target": "phi_real"}}]}
    with pytest.raises(LossError, match=r"loss 'l1' \(L1\) in phase 'G0' cannot be computed from its inputs "
                                        r"\(pred = 'phi_fake': list of 1 \(first: Tensor\[\d+, 8, 4, 4\] float32\), "
                                        r"target = 'phi_real': list of 1 .*TypeError: unsupported operand"):
        dry_run(gancore.load_recipe(lists))
    shapes = {**BLOBS, "losses": [{"use": "l1", "phase": "G0", "inputs": {"pred": "gan_logits", "target": "gan_target"}}]}
    with pytest.raises(LossError, match=r"loss 'l1' \(L1\) in phase 'G0' cannot be computed from its inputs "
                                        r"\(pred = 'gan_logits': Tensor\[2, 3\] float32, target = 'gan_target': "
                                        r"Tensor\[2\] int64\): RuntimeError"):
        dry_run(gancore.load_recipe(shapes))
