"""The engine, end to end on CPU with tiny dummy parts: schedules of every paper's shape
(which parameters change in which phase, who gets gradients, what is logged), exact
resume, kills, NaN stops, init_from, sample grids and the 2-process torchrun path.

This module is also a gancore plugin (``GANCORE_PLUGIN_API``, ``register_parts``): the
``gtest_plugin`` fixture loads it in-process, and the torchrun test exposes it to the
subprocesses through a throw-away ``*.dist-info`` entry point.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file
from torch import nn

from gancore import hookimpl, plugins
from gancore.builtins.basic import Alternating
from gancore.builtins.losses import L1, Adversarial, CrossEntropy
from gancore.checkpoint import latest_checkpoint, list_checkpoints
from gancore.engine import TrainingError, train
from gancore.losses import LossConfig, LossTerm
from gancore.parts import Config, DataInfo, Discriminator, DiscOutput, Encoder, Generator
from gancore.recipe import load_recipe
from gancore.schedule import Context, Phase, Schedule, Stream
from gancore.testing import checkpoint_roundtrip

GANCORE_PLUGIN_API = 1
TESTS_DIR = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------
# what the dummy parts and schedules record

#: (step, phase, {role: flat parameters}, {role: any .grad present}) at each phase start
LOG: list[tuple[int, str, dict[str, torch.Tensor], dict[str, bool]]] = []
#: (step, phase, id(part)) for every gradient accumulated into a part's parameter
GRADS: list[tuple[int, str, int]] = []
#: forward calls per part instance
CALLS: collections.Counter = collections.Counter()
#: the plain modules of the current run, by role
NETS: dict[str, nn.Module] = {}
CURRENT: dict[str, Any] = {"step": None, "phase": None}
GROUPS: list[torch.Tensor] = []


def _reset_records() -> None:
    LOG.clear(), GRADS.clear(), CALLS.clear(), NETS.clear(), GROUPS.clear()
    CURRENT.update(step=None, phase=None)


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


class _Watched:
    """Mixin: count forwards and record which phase accumulates gradients into the part."""

    def _watch(self) -> None:
        for p in self.parameters():
            p.register_post_accumulate_grad_hook(
                lambda _p, me=id(self): GRADS.append((CURRENT["step"], CURRENT["phase"], me)))

    def _called(self) -> None:
        CALLS[id(self)] += 1


# ---------------------------------------------------------------------------------------
# tiny parts


class TinyEncConfig(Config):
    width: int = Field(4, ge=1)
    z_dim: int = Field(8, ge=1)


class TinyEncoder(_Watched, Encoder):
    """image [B, 3, R, R] -> z [B, z_dim]"""

    Config = TinyEncConfig

    def __init__(self, config=None, *, info: DataInfo | None = None, **kw):
        super().__init__(config, info=info, **kw)
        c, r = self.config, self.info.resolution
        self.net = nn.Sequential(nn.Conv2d(3, c.width, 4, 4), nn.LeakyReLU(0.2), nn.Flatten(),
                                 nn.Linear(c.width * (r // 4) ** 2, c.z_dim))
        self._watch()

    def forward(self, x):
        self._called()
        return self.net(x)


class TinyGenConfig(Config):
    width: int = Field(4, ge=1)


class TinyTransformer(_Watched, Generator):
    """image -> image (x + r, squashed)"""

    Config = TinyGenConfig

    def __init__(self, config=None, *, info: DataInfo | None = None, **kw):
        super().__init__(config, info=info, **kw)
        w = self.config.width
        self.net = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(w, 3, 3, padding=1))
        self._watch()

    def forward(self, x):
        self._called()
        return torch.tanh(x + self.net(x))


class TinyDecConfig(Config):
    z_dim: int = Field(8, ge=1)
    condition: str | None = None


class TinyDecoder(_Watched, Generator):
    """z [B, z_dim] (+ one-hot label) -> image [B, 3, R, R]"""

    Config = TinyDecConfig

    def __init__(self, config=None, *, info: DataInfo | None = None, **kw):
        super().__init__(config, info=info, **kw)
        c, r = self.config, self.info.resolution
        self.n = self.info.classes(c.condition) if c.condition else 0
        self.net = nn.Linear(c.z_dim + self.n, 3 * r * r)
        self._watch()

    def forward(self, z, label=None):
        self._called()
        if self.n:
            z = torch.cat([z, F.one_hot(label.long(), self.n).to(z.dtype)], 1)
        r = self.info.resolution
        return torch.tanh(self.net(z)).view(-1, 3, r, r)


class TinyDiscConfig(Config):
    width: int = Field(4, ge=1)
    outputs: int = Field(1, ge=1, description="logits per image (1: a [B] real/fake logit)")
    classes_of: str | None = Field(None, description="outputs = classes of this label + extra")
    extra: int = 0


class TinyDiscriminator(_Watched, Discriminator):
    """image -> DiscOutput(logits [B] or [B, K])"""

    Config = TinyDiscConfig

    def __init__(self, config=None, *, info: DataInfo | None = None, **kw):
        super().__init__(config, info=info, **kw)
        c, r = self.config, self.info.resolution
        self.k = self.info.classes(c.classes_of) + c.extra if c.classes_of else c.outputs
        self.net = nn.Sequential(nn.Conv2d(3, c.width, 4, 4), nn.LeakyReLU(0.2), nn.Flatten(),
                                 nn.Linear(c.width * (r // 4) ** 2, self.k))
        self._watch()

    def forward(self, x, features=False):
        self._called()
        out = self.net(x)
        return DiscOutput(logits=out[:, 0] if self.k == 1 else out)


class TinyZDiscConfig(Config):
    width: int = Field(4, ge=1)
    z_dim: int = Field(8, ge=1)


class TinyZDiscriminator(_Watched, Discriminator):
    """z [B, z_dim] -> one logit per sample"""

    Config = TinyZDiscConfig

    def __init__(self, config=None, *, info: DataInfo | None = None, **kw):
        super().__init__(config, info=info, **kw)
        c = self.config
        self.net = nn.Sequential(nn.Linear(c.z_dim, c.width), nn.LeakyReLU(0.2), nn.Linear(c.width, 1))
        self._watch()

    def forward(self, z, features=False):
        self._called()
        return DiscOutput(logits=self.net(z)[:, 0])


# ---------------------------------------------------------------------------------------
# loss terms for failure tests


class NanAtConfig(LossConfig):
    at: int = Field(2, ge=0, description="0-based step from which the term is NaN")


class NanAt(LossTerm):
    """0 until step ``at``, NaN from then on."""

    Config = NanAtConfig
    reads = ("value",)

    def weight_at(self, step: int) -> float:
        return float("nan") if step >= self.config.at else self.config.weight

    def compute(self, value):
        return value.float().mean() * 0


class Const(LossTerm):
    """Always ``weight`` (the value it reads only anchors it to a phase)."""

    reads = ("value",)

    def compute(self, value):
        return value.detach().float().mean() * 0 + 1.0


# ---------------------------------------------------------------------------------------
# schedules of the papers' shapes


def ce(name: str, logits: str, target: str, weight: float = 1.0) -> CrossEntropy:
    return CrossEntropy(name=name, weight=weight, inputs={"logits": logits, "target": target})


def adv(name: str, logits: str, target: str = "real") -> Adversarial:
    return Adversarial(name=name, target=target, inputs={"logits": logits})


def l1(name: str, pred: str, target: str, weight: float = 1.0) -> L1:
    return L1(name=name, weight=weight, inputs={"pred": pred, "target": target})


class Recorded(Schedule):
    """Wraps every phase's ``run`` to snapshot all parameters and .grad presence at phase start."""

    def phases(self) -> list[Phase]:
        out = self._phases()
        for p in out:
            p.run = self._recording(p.name, p.run)
        return out

    @staticmethod
    def _recording(name, run):
        def wrapped(ctx: Context) -> None:
            CURRENT.update(step=ctx.step, phase=name)
            if not LOG or LOG[-1][:2] != (ctx.step, name):
                if not NETS:
                    NETS.update({r: ctx.nets.plain(r) for r in ctx.nets.roles()})
                LOG.append((ctx.step, name, {r: _flat(m) for r, m in NETS.items()},
                            {r: any(p.grad is not None for p in m.parameters()) for r, m in NETS.items()}))
            run(ctx)

        return wrapped


class ResShape(Recorded):
    """ResGAN: a 3-class D (no attribute / attribute / made), then G0 (adds), then G1 (removes)."""

    roles = {"G0": "generator", "G1": "generator", "D": "discriminator"}

    def required_labels(self):
        return ("attribute",)

    def streams(self):
        return {"x0": Stream(where={"attribute": 0}), "x1": Stream(where={"attribute": 1})}

    def _fakes(self, ctx):
        x0, x1 = ctx.batch["x0"]["image"], ctx.batch["x1"]["image"]
        return ctx.once("fake0", lambda: ctx.nets.G0(x0)), ctx.once("fake1", lambda: ctx.nets.G1(x1))

    def _d(self, ctx):
        x0, x1 = ctx.batch["x0"]["image"], ctx.batch["x1"]["image"]
        f0, f1 = self._fakes(ctx)
        ctx["d_logits"] = ctx.nets.D(torch.cat([x0, x1, f0.detach(), f1.detach()])).logits
        n = x0.shape[0]
        ctx["d_target"] = torch.tensor([0] * n + [1] * n + [2] * 2 * n)

    def _g0(self, ctx):
        f0, _ = self._fakes(ctx)
        ctx["x0"] = ctx.batch["x0"]["image"]
        ctx["g0_logits"] = ctx.nets.D(f0).logits
        ctx["g0_target"] = torch.ones(f0.shape[0], dtype=torch.long)

    def _g1(self, ctx):
        _, f1 = self._fakes(ctx)
        ctx["x1"] = ctx.batch["x1"]["image"]
        ctx["g1_logits"] = ctx.nets.D(f1).logits
        ctx["g1_target"] = torch.zeros(f1.shape[0], dtype=torch.long)

    def _phases(self):
        return [
            Phase("D", trains=("D",), prepares=("G0", "G1"), run=self._d, provides=("d_logits", "d_target"),
                  losses=[ce("d_cls", "d_logits", "d_target")]),
            Phase("G0", trains=("G0",), run=self._g0, provides=("g0_logits", "g0_target", "fake0", "x0"),
                  losses=[ce("g0_cls", "g0_logits", "g0_target"), l1("g0_keep", "fake0", "x0", 0.1)]),
            Phase("G1", trains=("G1",), run=self._g1, provides=("g1_logits", "g1_target", "fake1", "x1"),
                  losses=[ce("g1_cls", "g1_logits", "g1_target"), l1("g1_keep", "fake1", "x1", 0.1)],
                  accepts_extra_losses=True),
        ]


class CAAEConfig(Config):
    order: str = Field("eg_first", pattern="^(eg_first|d_first)$")


class CAAEShape(Recorded):
    """CAAE: E+G step, D_z step, D_img step from one forward (E and G run once per iteration).

    ``eg_first``: the D phases reuse E(x) and G(E(x)) detached.  ``d_first``: the D phases
    make them with gradient (``prepares``) and the E+G phase backpropagates through them.
    """

    Config = CAAEConfig
    roles = {"E": "encoder", "G": "generator", "Dz": "discriminator", "Dimg": "discriminator"}

    def required_labels(self):
        return ("color",)

    def _z(self, ctx):
        return ctx.once("z", lambda: ctx.nets.E(ctx.batch["batch"]["image"]))

    def _recon(self, ctx):
        return ctx.once("recon", lambda: ctx.nets.G(self._z(ctx), ctx.batch["batch"]["color"]))

    def _eg(self, ctx):
        ctx["real"] = ctx.batch["batch"]["image"]
        ctx["dz_enc"] = ctx.nets.Dz(self._z(ctx)).logits
        ctx["dimg_recon"] = ctx.nets.Dimg(self._recon(ctx)).logits

    def _dz(self, ctx):
        z = self._z(ctx).detach()
        ctx["dz_prior"] = ctx.nets.Dz(torch.rand_like(z) * 2 - 1).logits
        ctx["dz_fake"] = ctx.nets.Dz(z).logits

    def _dimg(self, ctx):
        ctx["di_real"] = ctx.nets.Dimg(ctx.batch["batch"]["image"]).logits
        ctx["di_fake"] = ctx.nets.Dimg(self._recon(ctx).detach()).logits

    def _phases(self):
        d_first = self.config.order == "d_first"
        eg = Phase("EG", trains=("E", "G"), run=self._eg, provides=("recon", "real", "dz_enc", "dimg_recon", "z"),
                   losses=[l1("recon", "recon", "real"), adv("eg_z", "dz_enc"), adv("eg_img", "dimg_recon")],
                   accepts_extra_losses=True)
        dz = Phase("Dz", trains=("Dz",), run=self._dz, provides=("dz_prior", "dz_fake"),
                   prepares=("E",) if d_first else (),
                   losses=[adv("dz_real", "dz_prior"), adv("dz_fake", "dz_fake", "fake")])
        dimg = Phase("Dimg", trains=("Dimg",), run=self._dimg, provides=("di_real", "di_fake"),
                     prepares=("E", "G") if d_first else (),
                     losses=[adv("di_real", "di_real"), adv("di_fake", "di_fake", "fake")])
        return [dz, dimg, eg] if d_first else [eg, dz, dimg]


class TDShape(Recorded):
    """TD-GAN: four networks, g, G, R, D phases alternating; R learns through the frozen g."""

    roles = {"g": "generator", "G": "generator", "R": "encoder", "D": "discriminator"}

    def _fake(self, ctx):
        x = ctx.batch["batch"]["image"]
        z_dim = ctx.nets.plain("g").config.z_dim
        return ctx.once("fake", lambda: ctx.nets.g(torch.randn(x.shape[0], z_dim)))

    def _g(self, ctx):
        ctx["g_logits"] = ctx.nets.D(self._fake(ctx)).logits

    def _G(self, ctx):
        ctx["real"] = ctx.batch["batch"]["image"]
        ctx["G_out"] = ctx.nets.G(ctx["real"])

    def _R(self, ctx):
        ctx["real"] = ctx.batch["batch"]["image"]
        ctx["R_rec"] = ctx.nets.g(ctx.nets.R(ctx["real"]))

    def _D(self, ctx):
        ctx["d_real"] = ctx.nets.D(ctx.batch["batch"]["image"]).logits
        ctx["d_fake"] = ctx.nets.D(self._fake(ctx).detach()).logits

    def _phases(self):
        return [
            Phase("g", trains=("g",), run=self._g, provides=("g_logits",), losses=[adv("g_adv", "g_logits")]),
            Phase("G", trains=("G",), run=self._G, provides=("G_out", "real"), losses=[l1("G_l1", "G_out", "real")]),
            Phase("R", trains=("R",), run=self._R, provides=("R_rec", "real"), losses=[l1("R_rec", "R_rec", "real")]),
            Phase("D", trains=("D",), run=self._D, provides=("d_real", "d_fake"),
                  losses=[adv("d_real", "d_real"), adv("d_fake", "d_fake", "fake")]),
        ]


class DRShape(Recorded):
    """Multi-image DR-GAN: groups of 3 images of one identity, fused in E's space; D, then E+G."""

    roles = {"E": "encoder", "G": "generator", "D": "discriminator"}

    def required_labels(self):
        return ("identity",)

    def streams(self):
        return {"faces": Stream(group_by="identity", group_size=3)}

    def _fake(self, ctx):
        b = ctx.batch["faces"]

        def make():
            z = ctx.nets.E(b["image"])
            fused = z.view(-1, 3, z.shape[1]).mean(1)
            return ctx.nets.G(fused, b["square"].view(-1, 3)[:, 0])

        return ctx.once("fake", make)

    def _d(self, ctx):
        b = ctx.batch["faces"]
        GROUPS.append(b["identity"].view(-1, 3).clone())
        n_id = ctx.info.classes("identity")
        fake = self._fake(ctx).detach()
        ctx["d_real"], ctx["d_real_t"] = ctx.nets.D(b["image"]).logits, b["identity"]
        ctx["d_fake"] = ctx.nets.D(fake).logits
        ctx["d_fake_t"] = torch.full((fake.shape[0],), n_id, dtype=torch.long)

    def _g(self, ctx):
        fake = self._fake(ctx)
        ctx["g_logits"] = ctx.nets.D(fake).logits
        ctx["g_target"] = ctx.batch["faces"]["identity"].view(-1, 3)[:, 0]

    def _phases(self):
        return [
            Phase("D", trains=("D",), prepares=("E", "G"), run=self._d,
                  provides=("d_real", "d_real_t", "d_fake", "d_fake_t"),
                  losses=[ce("d_id", "d_real", "d_real_t"), ce("d_gan", "d_fake", "d_fake_t")]),
            Phase("G", trains=("E", "G"), run=self._g, provides=("g_logits", "g_target"),
                  losses=[ce("g_id", "g_logits", "g_target")], accepts_extra_losses=True),
        ]


def _probe_write(ctx: Context) -> None:
    import torch.distributed as dist

    folder = os.environ.get("GTEST_PROBE")
    if not folder or (LOG and LOG[-1][:2] == (ctx.step, "probe")):
        return
    LOG.append((ctx.step, "probe", {}, {}))  # first micro-batch of the step only
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    b = ctx.batch["batch"]
    rec = {"step": ctx.step, "rank": rank, "world": world, "image_sum": float(b["image"].double().sum()),
           "G": _flat(ctx.nets.plain("G")).tolist(), "D": _flat(ctx.nets.plain("D")).tolist()}
    with open(Path(folder) / f"rank{rank}.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")


class Probe(Alternating):
    """``alternating`` that writes, per process and step, its world size, its data and the
    parameters both networks start the step with (to check the all-reduce)."""

    def phases(self):
        out = super().phases()
        run = out[0].run

        def probed(ctx):
            _probe_write(ctx)
            run(ctx)

        out[0].run = probed
        return out


@hookimpl
def register_parts(register) -> None:
    for name, cls in [("gtest.encoder", TinyEncoder), ("gtest.transformer", TinyTransformer),
                      ("gtest.decoder", TinyDecoder), ("gtest.disc", TinyDiscriminator),
                      ("gtest.zdisc", TinyZDiscriminator), ("gtest.nan_at", NanAt), ("gtest.const", Const),
                      ("gtest.res", ResShape), ("gtest.caae", CAAEShape), ("gtest.td", TDShape),
                      ("gtest.dr", DRShape), ("gtest.probe", Probe)]:
        register(name, cls)


# ---------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def gtest_plugin(monkeypatch):
    """Load this module as a plugin next to the built-ins (and no installed plugin)."""
    monkeypatch.setitem(plugins.BUILTIN_PLUGINS, "gtest", __name__)
    monkeypatch.setenv("GANCORE_LOAD_PLUGINS", "")
    monkeypatch.delenv("GANCORE_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    _reset_records()
    yield
    plugins.reset()
    _reset_records()


def run(recipe: dict[str, Any], out: Path, overrides: list[str] = (), resume: bool = False) -> Path:
    data = copy.deepcopy(recipe)
    data["output"]["dir"] = str(out)
    return train(load_recipe(data, list(overrides)), resume=resume, progress=False)


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def shape_recipe(basic: dict[str, Any], schedule: dict[str, Any], parts: dict[str, Any], **data: Any) -> dict:
    r = copy.deepcopy(basic)
    r["schedule"], r["parts"] = schedule, parts
    r["data"].update(data)
    r["train"].update(steps=3, batch_size=2)
    return r


def check_phases(phases: dict[str, tuple[str, ...]], run_dir: Path, steps: int) -> None:
    """Each phase changed exactly the parameters of the roles it trains, gradients reached
    only those roles, no phase started with a stale .grad, every term was logged."""
    assert [(s, p) for s, p, _, _ in LOG] == [(s, p) for s in range(steps) for p in phases]
    final = {r: _flat(m) for r, m in NETS.items()}
    snaps = [snap for _, _, snap, _ in LOG] + [final]
    for (step, phase, _, stale), before, after in zip(LOG, snaps, snaps[1:]):
        changed = {r for r in before if not torch.equal(before[r], after[r])}
        assert changed == set(phases[phase]), f"step {step} phase {phase}: changed {changed}"
        assert not any(stale.values()), f"step {step} phase {phase} started with gradients in {stale}"
    role_of = {id(m): r for r, m in NETS.items()}
    got: dict[str, set[str]] = collections.defaultdict(set)
    for step, phase, who in GRADS:
        got[phase].add(role_of[who])
    assert dict(got) == {p: set(t) for p, t in phases.items()}
    last = metrics(run_dir)[-1]
    assert last["step"] == steps and "seconds" in last


@pytest.fixture
def tiny(basic_recipe):
    return basic_recipe


# ---------------------------------------------------------------------------------------
# schedules of every paper's shape


def test_resgan_shape(gtest_plugin, tiny, tmp_path):
    r = shape_recipe(tiny, {"use": "gtest.res"},
                     {"G0": {"use": "gtest.transformer"}, "G1": {"use": "gtest.transformer"},
                      "D": {"use": "gtest.disc", "outputs": 3}}, attribute="square")
    r["losses"] = [{"use": "tv", "weight": 0.01, "inputs": {"image": "fake1"}}]
    out = run(r, tmp_path / "res")
    check_phases({"D": ("D",), "G0": ("G0",), "G1": ("G1",)}, out, 3)
    keys = set(metrics(out)[-1])
    assert {"D/d_cls", "G0/g0_cls", "G0/g0_keep", "G1/g1_cls", "G1/g1_keep", "G1/tv"} <= keys
    # G0(x0) and G1(x1) are made once per iteration (in D) and reused by their G phases
    assert CALLS[id(NETS["G0"])] == 3 and CALLS[id(NETS["G1"])] == 3
    assert CALLS[id(NETS["D"])] == 3 * 3


@pytest.mark.parametrize("order", ["eg_first", "d_first"])
def test_caae_shape(gtest_plugin, tiny, tmp_path, order):
    r = shape_recipe(tiny, {"use": "gtest.caae", "order": order},
                     {"E": {"use": "gtest.encoder"}, "G": {"use": "gtest.decoder", "condition": "color"},
                      "Dz": {"use": "gtest.zdisc"}, "Dimg": {"use": "gtest.disc"}})
    out = run(r, tmp_path / "caae")
    phases = {"EG": ("E", "G"), "Dz": ("Dz",), "Dimg": ("Dimg",)}
    if order == "d_first":
        phases = {"Dz": ("Dz",), "Dimg": ("Dimg",), "EG": ("E", "G")}
    check_phases(phases, out, 3)
    assert {"EG/recon", "EG/eg_z", "EG/eg_img", "Dz/dz_real", "Dz/dz_fake", "Dimg/di_real",
            "Dimg/di_fake"} <= set(metrics(out)[-1])
    assert CALLS[id(NETS["E"])] == 3 and CALLS[id(NETS["G"])] == 3  # one forward per iteration


def test_tdgan_shape(gtest_plugin, tiny, tmp_path):
    r = shape_recipe(tiny, {"use": "gtest.td"},
                     {"g": {"use": "gtest.decoder"}, "G": {"use": "gtest.transformer"},
                      "R": {"use": "gtest.encoder"}, "D": {"use": "gtest.disc"}})
    out = run(r, tmp_path / "td")
    # R's loss flows through g, which is frozen in R's phase: g gets no gradient there
    check_phases({"g": ("g",), "G": ("G",), "R": ("R",), "D": ("D",)}, out, 3)
    assert {"g/g_adv", "G/G_l1", "R/R_rec", "D/d_real", "D/d_fake"} <= set(metrics(out)[-1])
    assert CALLS[id(NETS["g"])] == 3 * 2  # fake once (reused by D) + once in R's phase


def test_drgan_multi_image_shape(gtest_plugin, tiny, tmp_path):
    r = shape_recipe(tiny, {"use": "gtest.dr"},
                     {"E": {"use": "gtest.encoder"}, "G": {"use": "gtest.decoder", "condition": "square"},
                      "D": {"use": "gtest.disc", "classes_of": "identity", "extra": 1}})
    out = run(r, tmp_path / "dr")
    check_phases({"D": ("D",), "G": ("E", "G")}, out, 3)
    assert {"D/d_id", "D/d_gan", "G/g_id"} <= set(metrics(out)[-1])
    assert len(GROUPS) == 3
    for ids in GROUPS:  # batch_size groups of group_size images sharing one identity
        assert ids.shape == (2, 3)
        assert (ids == ids[:, :1]).all()
    assert CALLS[id(NETS["E"])] == 3


# ---------------------------------------------------------------------------------------
# logging


def test_metrics_and_sample_grids(tiny, tmp_path):
    tiny["output"].update(sample_every=1, num_samples=4)
    out = run(tiny, tmp_path / "basic")
    rows = metrics(out)
    assert [m["step"] for m in rows] == [1, 2]
    for m in rows:
        assert {"step", "D/d_real", "D/d_fake", "G/g_adv", "seconds"} <= set(m)
        assert all(isinstance(m[k], float) for k in ("D/d_real", "D/d_fake", "G/g_adv"))
    assert rows[1]["seconds"] >= rows[0]["seconds"] > 0
    from PIL import Image

    grids = sorted(p.name for p in (out / "samples").iterdir())
    assert grids == ["step_000001.png", "step_000002.png"]
    with Image.open(out / "samples" / "step_000002.png") as im:
        # rows "real" and "generated", 4 tiles of 16 px with 1 px padding
        assert im.size == (4 * 17 + 1, 2 * 17 + 1)
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["train"]["steps"] == 2 and saved["output"]["dir"] == str(out)


def test_logged_value_of_a_phase_that_runs_every_other_step(gtest_plugin, tiny, tmp_path):
    tiny["schedule"]["d_every"] = 2
    tiny["losses"] = [{"use": "gtest.const", "phase": "D", "inputs": {"value": "d_real"}}]
    tiny["train"].update(steps=2, log_every=2)
    out = run(tiny, tmp_path / "every")
    assert metrics(out)[-1]["D/gtest.const"] == 1.0


# ---------------------------------------------------------------------------------------
# checkpoints, resume, failures


def test_resume_is_exact(tiny, tmp_path):
    tiny["train"]["steps"] = 4
    whole = run(tiny, tmp_path / "whole")
    half = run(tiny, tmp_path / "half", ["train.steps=2"])
    assert latest_checkpoint(half).name == "step_000002"
    run(tiny, half, ["train.steps=4"], resume=True)
    a, b = weights(latest_checkpoint(whole)), weights(latest_checkpoint(half))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda rows: [{k: v for k, v in m.items() if k not in ("seconds", "it_per_s")} for m in rows]  # noqa: E731
    assert strip(metrics(whole)) == strip(metrics(half))


def test_existing_checkpoints_need_resume(tiny, tmp_path):
    out = run(tiny, tmp_path / "r")
    with pytest.raises(TrainingError, match=r"already holds checkpoints \(latest step_000002\); pass --resume"):
        run(tiny, out)
    tiny["parts"]["G"]["width"] = 8
    with pytest.raises(TrainingError, match=r"cannot resume .*: the recipe's \[parts\] differs"):
        run(tiny, out, resume=True)


def test_init_from_loads_weights(tiny, tmp_path):
    tiny["optim"]["lr"] = 1e-2
    a = run(tiny, tmp_path / "a")
    tiny["optim"]["lr"] = 1e-12
    tiny["train"].update(steps=1, seed=1)
    b = run(tiny, tmp_path / "b", [f"train.init_from='{a}'"])
    fresh = run(tiny, tmp_path / "fresh")
    wa, wb, wf = (weights(latest_checkpoint(x)) for x in (a, b, fresh))
    params = [k for k in wa if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in params)
    assert not all(torch.allclose(wa[k], wf[k], atol=1e-3) for k in params)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(gtest_plugin, tiny, tmp_path):
    tiny["losses"] = [{"use": "gtest.nan_at", "name": "poison", "at": 2, "inputs": {"value": "fake"}}]
    tiny["train"]["steps"] = 5
    tiny["output"]["checkpoint_every"] = 1
    out = tmp_path / "nan"
    with pytest.raises(TrainingError) as info:
        run(tiny, out)
    assert str(info.value) == (f"loss term G/poison became NaN or Inf at step 3; training stopped and the last good "
                               f"checkpoint, {out / 'checkpoints' / 'step_000002'}, is kept. Lower optim.lr or this "
                               f"term's weight, then resume with --resume")
    assert [p.name for p in list_checkpoints(out)] == ["step_000001", "step_000002"]
    assert checkpoint_roundtrip(out).step == 2


def test_sigkill_leaves_a_resumable_checkpoint(tiny, tmp_path, write_recipe):
    tiny["train"]["steps"] = 100_000
    tiny["output"].update(checkpoint_every=1, keep_last=2)
    out = tmp_path / "killed"
    path = write_recipe(tiny)
    env = {**os.environ, "GANCORE_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gancore", "run", str(path), "--no-progress",
                             "--set", f"output.dir='{out}'"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while len(list_checkpoints(out)) < 2 or int(latest_checkpoint(out).name[5:]) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoints within 90 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # a half-written checkpoint from another kill is never picked up
    junk = out / "checkpoints" / ".tmp-step_999999-1"
    junk.mkdir(exist_ok=True)
    (junk / "model.safetensors").write_bytes(b"\0" * 10)
    last = latest_checkpoint(out)
    step = int(last.name[5:])
    assert checkpoint_roundtrip(out).step == step
    resumed = run(tiny, out, [f"train.steps={step + 2}"], resume=True)
    assert latest_checkpoint(resumed).name == f"step_{step + 2:06d}"
    assert [m["step"] for m in metrics(resumed)][-3:] == [step, step + 1, step + 2]


# ---------------------------------------------------------------------------------------
# two processes on CPU


@pytest.mark.slow
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_torchrun_two_processes_all_reduce(tiny, tmp_path, write_recipe, grad_accum):
    """torchrun starts 2 processes; each draws different samples, and after every step both
    hold the same weights — which only the all-reduce of gradients can give."""
    site = tmp_path / "site"
    info = site / "gtest_probe-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gtest-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(f"[gancore]\ngtest = {Path(__file__).stem}\n")
    probe = tmp_path / "probe"
    probe.mkdir()
    tiny["schedule"] = {"use": "gtest.probe"}
    tiny["train"].update(steps=3, batch_size=4, grad_accum=grad_accum)
    tiny["train"].pop("threads")
    path = write_recipe(tiny)
    out = tmp_path / "ddp"
    env = {**os.environ, "GANCORE_LOAD_PLUGINS": "gtest", "GTEST_PROBE": str(probe), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(site), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "--no-python", "gancore", "run",
                           str(path), "--no-progress", "--set", f"output.dir='{out}'"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latest_checkpoint(out).name == "step_000003"
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]
    ranks = [[json.loads(x) for x in (probe / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for r, rows in enumerate(ranks):
        assert [(m["step"], m["rank"], m["world"]) for m in rows] == [(s, r, 2) for s in range(3)]
    for a, b in zip(*ranks):
        assert a["image_sum"] != b["image_sum"]  # each process trains on its own share
        assert a["G"] == b["G"] and a["D"] == b["D"]  # ... yet both hold the same weights
    assert ranks[0][0]["D"] != ranks[0][2]["D"] and ranks[0][0]["G"] != ranks[0][2]["G"]  # and they trained
