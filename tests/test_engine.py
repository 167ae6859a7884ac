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

from gancore import engine, hookimpl, plugins
from gancore.builtins.basic import Alternating
from gancore.builtins.blobs import Blobs
from gancore.builtins.losses import L1, Adversarial, CrossEntropy
from gancore.checkpoint import latest_checkpoint, list_checkpoints
from gancore.data.base import DataConfig, DataError, DataSource, PartialLabels, missing
from gancore.engine import LossScale, RunExists, TrainingError, _split, train
from gancore.losses import LossConfig, LossTerm
from gancore.parts import Config, DataInfo, Discriminator, DiscOutput, Encoder, Generator, Network
from gancore.recipe import RecipeError, load_recipe
from gancore.schedule import Context, Phase, Schedule, StaleResult, Stream
from gancore.testing import Trace, checkpoint_roundtrip, trace_phases

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
# schedules that exercise the contract


def ce(name: str, logits: str, target: str, weight: float = 1.0) -> CrossEntropy:
    return CrossEntropy(name=name, weight=weight, inputs={"logits": logits, "target": target})


def adv(name: str, logits: str, target: str = "real", player: str = "discriminator") -> Adversarial:
    return Adversarial(name=name, target=target, player=player, inputs={"logits": logits})


def l1(name: str, pred: str, target: str, weight: float = 1.0) -> L1:
    return L1(name=name, weight=weight, inputs={"pred": pred, "target": target})


class ResConfig(Config):
    other: bool = Field(False, description="G0's phase also trains G1 through the dual pass (wkcw)")


class ResShape(Schedule):
    """ResGAN's shape: a 3-class D on {x0, x1, G0(x0), G1(x1)}, then G0, then G1 with a dual
    pass through the other G.  G0(x0) and G1(x1) are shared from the D phase."""

    Config = ResConfig
    roles = {"G0": "generator", "G1": "generator", "D": "discriminator"}

    def required_labels(self):
        return ("attribute",)

    def streams(self):
        return {"x0": Stream(where={"attribute": 0}), "x1": Stream(where={"attribute": 1})}

    def _fake(self, ctx, i):
        x = ctx.batch[f"x{i}"]["image"]
        return ctx.once(f"fake{i}", lambda: ctx.nets[f"G{i}"](x))

    def _d(self, ctx):
        x0, x1 = ctx.batch["x0"]["image"], ctx.batch["x1"]["image"]
        ctx["d_logits"] = ctx.nets.D(torch.cat([x0, x1, self._fake(ctx, 0), self._fake(ctx, 1)])).logits
        n = x0.shape[0]
        ctx["d_target"] = torch.tensor([0] * n + [1] * n + [2] * 2 * n)

    def _g(self, ctx, i):
        fake = self._fake(ctx, i)
        n = fake.shape[0]
        d = ctx.nets.D(torch.cat([fake, ctx.nets[f"G{1 - i}"](fake)])).logits
        ctx["x"], ctx["fake"] = ctx.batch[f"x{i}"]["image"], fake
        ctx["gan_logits"], ctx["dual_logits"] = d[:n], d[n:]
        ctx["gan_target"] = torch.full((n,), 1 - i, dtype=torch.long)
        ctx["dual_target"] = torch.full((n,), i, dtype=torch.long)

    def phases(self):
        g_losses = lambda: [ce("gan", "gan_logits", "gan_target"), ce("dual", "dual_logits", "dual_target"),  # noqa: E731
                            l1("keep", "fake", "x", 0.1)]
        other = self.config.other
        return [
            Phase("D", trains=("D",), run=self._d, provides=("d_logits", "d_target"),
                  losses=[ce("d_cls", "d_logits", "d_target")]),
            Phase("G0", trains=("G0", "G1") if other else ("G0",), run=lambda ctx: self._g(ctx, 0),
                  provides=("gan_logits", "gan_target", "dual_logits", "dual_target", "fake", "x"),
                  losses=g_losses()),
            Phase("G1", trains=("G1", "G0") if other else ("G1",), run=lambda ctx: self._g(ctx, 1),
                  provides=("gan_logits", "gan_target", "dual_logits", "dual_target", "fake", "x"),
                  losses=g_losses(), accepts_extra_losses=True),
        ]


class CAAEConfig(Config):
    order: str = Field("simultaneous", pattern="^(simultaneous|d_first)$")


#: (step, phase, z numbers) as each phase saw z = E(x)
SEEN_Z: list[tuple[int, str, torch.Tensor]] = []


class CAAEShape(Schedule):
    """CAAE's shape: E+G, D_z and D_img on one forward of E and G per iteration.

    ``simultaneous``: E+G first; the D phases train on E's and G's numbers from before they
    stepped (``ctx.value(..., pre_step=True)``).  ``d_first``: the D phases run first on the
    shared forward, which the E+G phase then backpropagates.
    """

    Config = CAAEConfig
    roles = {"E": "encoder", "G": "generator", "Dz": "discriminator", "Dimg": "discriminator"}

    def required_labels(self):
        return ("color",)

    def _make_z(self, ctx):
        return ctx.nets.E(ctx.batch["batch"]["image"])

    def _make_recon(self, ctx):
        return ctx.nets.G(ctx.once("z", lambda: self._make_z(ctx)), ctx.batch["batch"]["color"])

    def _numbers(self, ctx, key):
        make = (lambda: self._make_z(ctx)) if key == "z" else (lambda: self._make_recon(ctx))
        return ctx.value(key, make, pre_step=self.config.order == "simultaneous")

    def _eg(self, ctx):
        z = ctx.once("z", lambda: self._make_z(ctx))
        SEEN_Z.append((ctx.step, "EG", z.detach().clone()))
        ctx["real"] = ctx.batch["batch"]["image"]
        ctx["recon"] = ctx.once("recon", lambda: self._make_recon(ctx))
        ctx["dz_enc"] = ctx.nets.Dz(z).logits
        ctx["dimg_recon"] = ctx.nets.Dimg(ctx["recon"]).logits

    def _dz(self, ctx):
        z = self._numbers(ctx, "z")
        SEEN_Z.append((ctx.step, "Dz", z.clone()))
        ctx["dz_prior"] = ctx.nets.Dz(torch.rand_like(z) * 2 - 1).logits
        ctx["dz_fake"] = ctx.nets.Dz(z).logits

    def _dimg(self, ctx):
        ctx["di_real"] = ctx.nets.Dimg(ctx.batch["batch"]["image"]).logits
        ctx["di_fake"] = ctx.nets.Dimg(self._numbers(ctx, "recon")).logits

    def phases(self):
        eg = Phase("EG", trains=("E", "G"), run=self._eg, provides=("recon", "real", "dz_enc", "dimg_recon"),
                   losses=[l1("recon", "recon", "real"), adv("eg_z", "dz_enc", player="generator"),
                           adv("eg_img", "dimg_recon", player="generator")], accepts_extra_losses=True)
        dz = Phase("Dz", trains=("Dz",), run=self._dz, provides=("dz_prior", "dz_fake"),
                   losses=[adv("dz_real", "dz_prior"), adv("dz_fake", "dz_fake", "fake")])
        dimg = Phase("Dimg", trains=("Dimg",), run=self._dimg, provides=("di_real", "di_fake"),
                     losses=[adv("di_real", "di_real"), adv("di_fake", "di_fake", "fake")])
        return [dz, dimg, eg] if self.config.order == "d_first" else [eg, dz, dimg]


class KeepsFake(Schedule):
    """Wrong on purpose: keeps G's output in ``self`` across phases and trains G on it again
    after G has stepped (what ctx.once prevents)."""

    roles = {"G": "generator"}

    def _a(self, ctx):
        self.kept = ctx.nets.G(ctx.batch["batch"]["image"])
        ctx["fake"], ctx["real"] = self.kept, ctx.batch["batch"]["image"]

    def _b(self, ctx):
        ctx["fake"], ctx["real"] = self.kept, ctx.batch["batch"]["image"]

    def phases(self):
        return [Phase("A", trains=("G",), run=self._a, provides=("fake", "real"), losses=[l1("l1", "fake", "real")]),
                Phase("B", trains=("G",), run=self._b, provides=("fake", "real"), losses=[l1("l1", "fake", "real")])]


class BrokenConfig(Config):
    fault: str = Field("detached", pattern="^(detached|unreached)$")


class Broken(Schedule):
    """Wrong on purpose: the G phase's objective reaches no parameter of G (``detached``:
    the fake is taken without a graph, the old alternating bug) or trains a role its
    objective never reaches (``unreached``)."""

    Config = BrokenConfig
    roles = {"G": "generator", "D": "discriminator"}

    def _fake(self, ctx):
        z = torch.randn(ctx.batch["batch"]["image"].shape[0], 8)
        if self.config.fault == "detached":
            return ctx.value("fake", lambda: ctx.nets.G(z))
        return ctx.once("fake", lambda: ctx.nets.G(z))

    def _d(self, ctx):
        ctx["d_real"] = ctx.nets.D(ctx.batch["batch"]["image"]).logits
        if self.config.fault == "detached":
            ctx["d_fake"] = ctx.nets.D(self._fake(ctx)).logits

    def _g(self, ctx):
        ctx["g_fake"] = ctx.nets.D(self._fake(ctx)).logits

    def phases(self):
        if self.config.fault == "unreached":  # D's phase claims to train G, but never calls it
            d = Phase("D", trains=("D", "G"), run=self._d, provides=("d_real",), losses=[adv("d_real", "d_real")])
        else:
            d = Phase("D", trains=("D",), run=self._d, provides=("d_real", "d_fake"),
                      losses=[adv("d_real", "d_real"), adv("d_fake", "d_fake", "fake")])
        return [d, Phase("G", trains=("G",), run=self._g, provides=("g_fake",),
                         losses=[adv("g", "g_fake", player="generator")])]


class EveryThird(Alternating):
    """``alternating`` whose D phase, once it has run, skips the next two iterations:
    a condition on the schedule's state (``Phase.when``), as DR-GAN's "D strong" rule."""

    def phases(self):
        d, g = super().phases()
        run = d.run

        def d_run(ctx):
            run(ctx)
            ctx.state["next_d"] = ctx.step + 3

        d.run = d_run
        d.when = lambda ctx: ctx.step >= ctx.state.get("next_d", 0)
        return [d, g]


class TinyNet(_Watched, Network):
    """z [B, z_dim] -> z [B, z_dim]: a part of the generic ``network`` kind."""

    Config = TinyEncConfig

    def __init__(self, config=None, *, info: DataInfo | None = None, **kw):
        super().__init__(config, info=info, **kw)
        self.net = nn.Linear(self.config.z_dim, self.config.z_dim)
        self._watch()

    def forward(self, z):
        self._called()
        return torch.tanh(self.net(z))


class Mapped(Alternating):
    """``alternating`` with a mapping net M of kind ``network`` between the noise and G,
    trained in the G phase."""

    roles = {"G": "generator", "D": "discriminator", "M": "network"}

    def _fake(self, ctx):
        def make():
            real = ctx.batch["batch"]["image"]
            z = torch.randn(real.shape[0], ctx.nets.plain("G").config.z_dim)
            return ctx.nets.G(ctx.nets.M(z))

        return ctx.once("fake", make)

    def phases(self):
        d, g = super().phases()
        g.trains = ("G", "M")
        return [d, g]


#: (step, stream, batch) as the streams schedule saw them
SEEN_BATCHES: list[tuple[int, str, dict[str, torch.Tensor]]] = []


class Streams(Alternating):
    """``alternating`` on a labelled stream, plus an unlabelled stream of its own batch size and
    a grouped stream, recorded as drawn (the shapes TD-GAN's and multi-image DR-GAN's data take)."""

    def streams(self):
        return {"batch": Stream(labeled=("color",)), "untagged": Stream(unlabeled=("color",), batch_size=3),
                "faces": Stream(group_by="identity", group_size=3, min_group=2, batch_size=2)}

    def phases(self):
        d, g = super().phases()
        run = d.run

        def d_run(ctx):
            for name, b in ctx.batch.items():
                SEEN_BATCHES.append((ctx.step, name, {k: v.clone() for k, v in b.items()}))
            run(ctx)

        d.run = d_run
        return [d, g]


class GroupsConfig(DataConfig):
    counts: list[int] = Field([1, 2, 3, 5], description="images per identity")


class Groups(DataSource):
    """Identities with uneven numbers of images (``counts``); labels identity and color."""

    Config = GroupsConfig
    provides = ("identity", "color")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self._id = torch.repeat_interleave(torch.arange(len(self.config.counts)), torch.tensor(self.config.counts))

    def __len__(self):
        return len(self._id)

    def labels(self):
        return {"identity": self._id, "color": self._id % 4}

    def load(self, indices):
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        r = self.config.resolution
        image = (idx.float()[:, None, None, None] / len(self)).expand(-1, 3, r, r) * 2 - 1
        return {"image": image.clone(), **{k: v[idx] for k, v in self.labels().items()}}


class TrainOnly(Blobs):
    """``blobs`` without a test split (as a folder of images without one)."""

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        if self.config.split == "test":
            raise DataError("this source has no test split")


def _probe_write(ctx: Context) -> None:
    import torch.distributed as dist

    folder = os.environ.get("GTEST_PROBE")
    if not folder or (LOG and LOG[-1][:2] == (ctx.step, "probe")):
        return
    LOG.append((ctx.step, "probe", {}, {}))  # first micro-batch of the step only
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    b = ctx.batch["batch"]
    rec = {"step": ctx.step, "rank": rank, "world": world, "image_sum": float(b["image"].double().sum()),
           "G": _flat(ctx.nets.plain("G")).tolist(), "D": _flat(ctx.nets.plain("D")).tolist(),
           "D_buffers": torch.cat([x.flatten().float() for x in ctx.nets.plain("D").buffers()
                                   if x.dtype.is_floating_point]).tolist()}
    with open(Path(folder) / f"rank{rank}.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")


class Probe(Alternating):
    """``alternating`` that writes, per process and step, its world size, its data and the
    parameters and D's running statistics both networks start the step with (to check the
    all-reduce and what a checkpoint leaves every process holding)."""

    def phases(self):
        out = super().phases()
        run = out[0].run

        def probed(ctx):
            _probe_write(ctx)
            run(ctx)

        out[0].run = probed
        return out


class Recorded(LossTerm):
    """The mean of what it reads, also appended (per process) to ``$GTEST_PROBE/loss{rank}.jsonl``."""

    reads = ("value",)

    def compute(self, value):
        import torch.distributed as dist

        v = value.float().mean()
        folder = os.environ.get("GTEST_PROBE")
        if folder:
            rank = dist.get_rank() if dist.is_initialized() else 0
            with open(Path(folder) / f"loss{rank}.jsonl", "a") as fh:
                fh.write(json.dumps(float(v)) + "\n")
        return v


@hookimpl
def register_parts(register) -> None:
    for name, cls in [("gtest.encoder", TinyEncoder), ("gtest.transformer", TinyTransformer),
                      ("gtest.decoder", TinyDecoder), ("gtest.disc", TinyDiscriminator),
                      ("gtest.zdisc", TinyZDiscriminator), ("gtest.net", TinyNet), ("gtest.nan_at", NanAt),
                      ("gtest.const", Const), ("gtest.recorded", Recorded), ("gtest.res", ResShape),
                      ("gtest.caae", CAAEShape), ("gtest.keeps", KeepsFake), ("gtest.broken", Broken),
                      ("gtest.every_third", EveryThird), ("gtest.mapped", Mapped), ("gtest.streams", Streams),
                      ("gtest.groups", Groups), ("gtest.trainonly", TrainOnly), ("gtest.probe", Probe)]:
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


def run(recipe: dict[str, Any], out: Path, overrides: list[str] = (), resume: bool = False, **kw: Any) -> Path:
    data = copy.deepcopy(recipe)
    data["output"]["dir"] = str(out)
    return train(load_recipe(data, list(overrides)), resume=resume, progress=False, **kw)


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


def trace(recipe: dict[str, Any], tmp_path: Path, steps: int = 3, overrides: list[str] = ()) -> Trace:
    return trace_phases(recipe, tmp_path, steps, [*overrides, "train.threads=1"])


@pytest.fixture
def tiny(basic_recipe):
    return basic_recipe


RES_PARTS = {"G0": {"use": "gtest.transformer"}, "G1": {"use": "gtest.transformer"},
             "D": {"use": "gtest.disc", "outputs": 3}}
CAAE_PARTS = {"E": {"use": "gtest.encoder"}, "G": {"use": "gtest.decoder", "condition": "color"},
              "Dz": {"use": "gtest.zdisc"}, "Dimg": {"use": "gtest.disc"}}


# ---------------------------------------------------------------------------------------
# gradients go exactly where the schedule says


@pytest.mark.parametrize("d_every,g_every", [(1, 1), (1, 2), (2, 1), (1, 3), (3, 2)])
def test_alternating_trains_both_networks_at_every_ratio(tiny, tmp_path, d_every, g_every):
    """The old bug: with d_every != g_every, G trained on a fake made without a graph and
    never changed.  Now each network changes on every step its phase runs, and only then."""
    tiny["schedule"].update(d_every=d_every, g_every=g_every)
    t = trace(tiny, tmp_path, steps=6)
    expected = [(s, p) for s in range(6) for p, every in (("D", d_every), ("G", g_every)) if s % every == 0]
    assert t.ran() == expected
    t.check()


@pytest.mark.parametrize("other", [False, True])
def test_resgan_shape_shares_forwards_and_recomputes_after_a_step(gtest_plugin, tiny, tmp_path, other):
    r = shape_recipe(tiny, {"use": "gtest.res", "other": other}, RES_PARTS, attribute="square")
    r["losses"] = [{"use": "tv", "weight": 0.01, "inputs": {"image": "fake"}}]
    t = trace(r, tmp_path)
    t.check()
    assert {"D/d_cls", "G0/gan", "G0/dual", "G0/keep", "G1/gan", "G1/dual", "G1/tv"} <= set(metrics(t.run_dir)[-1])
    nets = {role: id(m) for role, m in t.nets.items()}
    # G0(x0), G1(x1) are made once, in the D phase; each G phase's dual pass runs the other G
    # again.  When G0's phase also steps G1, G1(x1) is stale in G1's phase and made again.
    assert CALLS[nets["G0"]] == 3 * 2
    assert CALLS[nets["G1"]] == 3 * (3 if other else 2)
    assert CALLS[nets["D"]] == 3 * 3


@pytest.mark.parametrize("order", ["simultaneous", "d_first"])
def test_caae_shape_one_forward_per_iteration(gtest_plugin, tiny, tmp_path, order):
    SEEN_Z.clear()
    r = shape_recipe(tiny, {"use": "gtest.caae", "order": order}, CAAE_PARTS)
    t = trace(r, tmp_path)
    t.check()
    assert [p for s, p in t.ran() if s == 0] == (["Dz", "Dimg", "EG"] if order == "d_first" else ["EG", "Dz", "Dimg"])
    nets = {role: id(m) for role, m in t.nets.items()}
    assert CALLS[nets["E"]] == 3 and CALLS[nets["G"]] == 3  # one forward of E and G per iteration
    # the discriminators trained on the very numbers E+G trained on (from before E stepped)
    by_step = collections.defaultdict(dict)
    for step, phase, z in SEEN_Z:
        by_step[step][phase] = z
    for step, seen in by_step.items():
        assert torch.equal(seen["EG"], seen["Dz"]), step


def test_stale_reuse_raises(gtest_plugin, tiny, tmp_path):
    r = shape_recipe(tiny, {"use": "gtest.keeps"}, {"G": {"use": "gtest.transformer"}})
    with pytest.raises(StaleResult, match=r"phase 'B' backpropagates through an output of role 'G' made in phase "
                                          r"'A' of step 0, but G has stepped since \(in phase 'A'\)"):
        run(r, tmp_path / "stale")


def test_an_objective_without_a_graph_is_an_error(gtest_plugin, tiny, tmp_path):
    r = shape_recipe(tiny, {"use": "gtest.broken"}, {"G": {"use": "gtest.decoder"}, "D": {"use": "gtest.disc"}})
    with pytest.raises(TrainingError, match=r"phase 'G' has a non-zero objective \(g\) that reaches none of the "
                                            r"parameters of the roles it trains \(G\)"):
        run(r, tmp_path / "detached")


def test_a_trained_role_without_gradient_is_an_error(gtest_plugin, tiny, tmp_path):
    r = shape_recipe(tiny, {"use": "gtest.broken", "fault": "unreached"},
                     {"G": {"use": "gtest.decoder"}, "D": {"use": "gtest.disc"}})
    with pytest.raises(TrainingError, match=r"phase 'D' trains role 'G', but its objective gives G no gradient"):
        run(r, tmp_path / "unreached")


def test_untrained_roles_keep_their_batchnorm_statistics(tiny, tmp_path):
    """D judges the fake in G's phase and G's fake is made in D's phase: D's running
    statistics move only in D's phase; G's move where its training forward is made."""
    t = trace(tiny, tmp_path)
    t.check()
    for r in t.records:
        assert r.stats == ({"D", "G"} if r.phase == "D" else set()), (r.step, r.phase, r.stats)
    # with d_every = 2, odd iterations make the fake in G's phase: G's statistics move there
    tiny["schedule"]["d_every"] = 2
    t = trace(tiny, tmp_path / "ratio", steps=4)
    for r in t.records:
        want = {"D", "G"} if r.phase == "D" else ({"G"} if r.step % 2 else set())
        assert r.stats == want, (r.step, r.phase, r.stats)


def test_a_phase_can_ask_for_other_roles_statistics(tiny, tmp_path, monkeypatch):
    original = Alternating.phases

    def phases(self):
        d, g = original(self)
        g.updates_stats = ("D",)
        return [d, g]

    monkeypatch.setattr(Alternating, "phases", phases)
    t = trace(tiny, tmp_path)
    assert all(r.stats == ({"D", "G"} if r.phase == "D" else {"D"}) for r in t.records)


def test_phase_when_condition_and_exact_resume(gtest_plugin, tiny, tmp_path):
    tiny["schedule"] = {"use": "gtest.every_third"}
    t = trace(tiny, tmp_path, steps=7)
    assert [s for s, p in t.ran() if p == "D"] == [0, 3, 6]
    assert [s for s, p in t.ran() if p == "G"] == list(range(7))
    t.check()
    whole = run(tiny, tmp_path / "whole", ["train.steps=7"])
    half = run(tiny, tmp_path / "half", ["train.steps=4"])
    assert json.loads((latest_checkpoint(half) / "state.json").read_text())["schedule_state"] == {"next_d": 6}
    run(tiny, half, ["train.steps=7"], resume=True)
    a, b = weights(latest_checkpoint(whole)), weights(latest_checkpoint(half))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_network_kind_role(gtest_plugin, tiny, tmp_path):
    tiny["schedule"] = {"use": "gtest.mapped"}
    tiny["parts"]["M"] = {"use": "gtest.net"}
    t = trace(tiny, tmp_path)
    t.check()
    assert {r.phase: r.trains for r in t.records} == {"D": ("D",), "G": ("G", "M")}
    saved = weights(latest_checkpoint(t.run_dir))
    assert {"M.net.weight", "M.net.bias"} <= set(saved)
    assert checkpoint_roundtrip(t.run_dir).nets["M"].config.z_dim == 8


def test_hinge_generator_term():
    logits = torch.tensor([0.5, 3.0, -2.0])
    g = Adversarial(mode="hinge", player="generator")
    assert float(g.compute(logits)) == pytest.approx(-(0.5 + 3.0 - 2.0) / 3)
    d = Adversarial(mode="hinge", target="real")
    assert float(d.compute(logits)) == pytest.approx((0.5 + 0 + 3.0) / 3)  # saturates past 1
    # nonsaturating and lsgan: the generator's term is the discriminator's real-target term
    for mode in ("nonsaturating", "lsgan"):
        assert torch.equal(Adversarial(mode=mode, player="generator").compute(logits),
                           Adversarial(mode=mode, target="real").compute(logits))
    with pytest.raises(ValueError, match="player = 'generator' has target 'real'"):
        Adversarial(mode="hinge", player="generator", target="fake")


# ---------------------------------------------------------------------------------------
# mixed precision: one loss scale per iteration


def test_loss_scale_skips_overflowing_steps_and_updates_once():
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scale = LossScale(torch.device("cpu"), init=2.0**127, interval=1)
    scale.scale(w.sum() * 4).backward()  # 4 · 2^127 overflows float32
    assert scale.step(opt, [w]) is False and torch.equal(w.detach(), torch.ones(3))
    scale.update()
    assert float(scale.scale_) == 2.0**126
    opt.zero_grad()
    scale = LossScale(torch.device("cpu"), init=1024.0, interval=1)
    scale.scale(w.sum()).backward()
    assert scale.step(opt, [w]) is True and torch.allclose(w.detach(), torch.full((3,), 0.9))
    scale.update()
    assert float(scale.scale_) == 2048.0


def test_engine_uses_one_loss_scale_per_iteration(gtest_plugin, tiny, tmp_path, monkeypatch):
    """CAAE's shape steps E and G in one phase and three optimizers per iteration: the scale
    is updated once per iteration, and power-of-two scaling leaves the weights bit-identical."""
    r = shape_recipe(tiny, {"use": "gtest.caae", "order": "simultaneous"}, CAAE_PARTS)
    plain = run(r, tmp_path / "plain")
    made: list[LossScale] = []

    def fp16_scale(device):
        made.append(LossScale(device, init=2.0**10, interval=1))
        return made[-1]

    monkeypatch.setattr(engine, "_loss_scale", lambda precision, device: fp16_scale(device))
    scaled = run(r, tmp_path / "scaled")
    assert float(made[0].scale_) == 2.0**13  # 3 iterations: 3 updates, not 9
    a, b = weights(latest_checkpoint(plain)), weights(latest_checkpoint(scaled))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((latest_checkpoint(scaled) / "state.json").read_text())["loss_scale"]["scale"] == 2.0**13


# ---------------------------------------------------------------------------------------
# data streams: batch sizes, missing labels, groups


def test_streams_batch_sizes_missing_labels_and_groups(gtest_plugin, tiny, tmp_path, capsys):
    SEEN_BATCHES.clear()
    tiny["schedule"] = {"use": "gtest.streams"}
    tiny["data"] = {"source": "gtest.groups", "resolution": 16, "label_fraction": 0.5, "partial_labels": ["color"],
                    "counts": [1, 2, 3, 5, 4, 6]}
    tiny["train"].update(batch_size=2, stream_batch_size={"batch": 4}, steps=3)
    run(tiny, tmp_path / "streams")
    assert "stream 'faces': 2 of 6 identity values have fewer than 3 samples (smallest 1); 1 with fewer than 2 are " \
           "left out, the others make smaller groups" in capsys.readouterr().err
    seen = collections.defaultdict(list)
    for step, name, b in SEEN_BATCHES:
        seen[name].append(b)
    assert [len(b["image"]) for b in seen["batch"]] == [4, 4, 4]  # train.stream_batch_size
    assert [len(b["image"]) for b in seen["untagged"]] == [3, 3, 3]  # the stream's own batch size
    assert all((b["color"] >= 0).all() for b in seen["batch"])
    assert all((b["color"] == -1).all() for b in seen["untagged"])
    counts = dict(enumerate([1, 2, 3, 5, 4, 6]))
    for b in seen["faces"]:  # 2 groups of up to 3 images of one identity, contiguous, numbered 0, 1
        group, ident = b["group"], b["identity"]
        assert group.tolist() == sorted(group.tolist()) and set(group.tolist()) == {0, 1}
        for g in (0, 1):
            ids = ident[group == g]
            assert (ids == ids[0]).all() and len(ids) == min(3, counts[int(ids[0])]) and counts[int(ids[0])] >= 2


def test_heldout_grid_of_an_unlabeled_stream_uses_the_test_split(gtest_plugin, tiny):
    tiny["schedule"] = {"use": "gtest.streams"}
    tiny["data"] = {"source": "gtest.groups", "resolution": 16, "label_fraction": 0.5, "partial_labels": ["color"]}
    batch, note = engine.heldout_batch(load_recipe(tiny), 2)
    assert note is None  # test samples, not a fallback to training images
    assert (batch["untagged"]["color"] >= 0).all()  # the test split keeps its labels


def test_partial_labels_keep_the_requested_fraction():
    src = Blobs(size=200, resolution=8)
    part = PartialLabels(src, 0.1, ["color"])
    kept = ~missing(part.labels()["color"])
    assert int(kept.sum()) == 20
    assert torch.equal(part.labels()["square"], src.labels()["square"])  # other labels untouched
    b = part.load(list(range(200)))
    assert torch.equal(b["color"] >= 0, kept) and torch.equal(b["image"], src.load(list(range(200)))["image"])
    again = PartialLabels(Blobs(size=200, resolution=8), 0.1, ["color"])
    assert torch.equal(again.keep, part.keep)  # deterministic
    with pytest.raises(DataError, match=r"data.partial_labels names \['colour'\]"):
        PartialLabels(src, 0.5, ["colour"])


def test_grad_accum_never_splits_a_group():
    group = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3])
    batch = {"faces": {"image": torch.arange(9.0), "group": group}, "other": {"image": torch.arange(4.0)}}
    first, second = _split(batch, 2)
    assert first["faces"]["image"].tolist() == [0, 1, 2, 3] and first["faces"]["group"].tolist() == [0, 0, 0, 1]
    assert second["faces"]["image"].tolist() == [4, 5, 6, 7, 8] and second["faces"]["group"].tolist() == [0, 0, 1, 1, 1]
    assert first["other"]["image"].tolist() == [0, 1] and second["other"]["image"].tolist() == [2, 3]


def test_stream_batch_size_validation(tiny):
    tiny["train"]["stream_batch_size"] = {"batch": 3, "nope": 2}
    tiny["train"]["grad_accum"] = 2
    with pytest.raises(RecipeError) as info:
        load_recipe(tiny)
    text = str(info.value)
    assert "train.stream_batch_size.nope: schedule 'alternating' draws no stream 'nope'; its streams: batch" in text
    assert ("train.grad_accum: 2 does not divide the batch size of stream 'batch' (train.stream_batch_size.batch "
            "= 3)") in text


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


def test_a_second_run_into_a_run_folder(tiny, tmp_path, write_recipe):
    """Refused (naming how to continue or start again), resumed, or overwritten."""
    out = run(tiny, tmp_path / "r")
    with pytest.raises(RunExists, match=r"already holds checkpoints \(latest step_000002\); pass resume=True to "
                                        r"continue that run, overwrite=True to start it again from scratch"):
        run(tiny, out)
    tiny["output"]["dir"] = str(out)
    proc = subprocess.run([sys.executable, "-m", "gancore", "run", str(write_recipe(tiny)), "--no-progress"],
                          env={**os.environ, "GANCORE_LOAD_PLUGINS": ""}, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "pass --resume to continue that run, --overwrite to start it again" in proc.stderr
    assert "training stopped" not in proc.stderr
    resumed = run(tiny, out, ["train.steps=3"], resume=True)  # more steps: continues from step 2
    assert [m["step"] for m in metrics(resumed)] == [1, 2, 3]
    again = run(tiny, out, ["train.steps=1"], overwrite=True)  # from scratch
    assert [m["step"] for m in metrics(again)] == [1]
    assert [p.name for p in list_checkpoints(again)] == ["step_000001"]
    tiny["parts"]["G"]["width"] = 8
    with pytest.raises(TrainingError, match=r"cannot resume .*: the recipe's \[parts\] differs"):
        run(tiny, out, resume=True)


def test_samples_say_when_they_are_training_images(gtest_plugin, tiny, tmp_path, capsys):
    from PIL import Image

    tiny["data"]["source"] = "gtest.trainonly"
    tiny["output"].update(sample_every=1, num_samples=4)
    out = run(tiny, tmp_path / "trainonly")
    assert "note: samples are TRAINING images: the data has no usable test split" in capsys.readouterr().err
    with Image.open(out / "samples" / "step_000002.png") as im:
        assert im.size == (4 * 17 + 1, 2 * 17 + 1 + 14)  # the grid plus a line of text saying so


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


def _torchrun(tiny: dict, tmp_path: Path, write_recipe: Any, out: Path, probe: Path, *extra: str) -> None:
    site = tmp_path / "site"
    info = site / "gtest_probe-0.0.dist-info"
    if not info.exists():
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gtest-probe\nVersion: 0.0\n")
        (info / "entry_points.txt").write_text(f"[gancore]\ngtest = {Path(__file__).stem}\n")
    probe.mkdir(exist_ok=True)
    tiny.setdefault("train", {}).pop("threads", None)
    path = write_recipe(tiny, f"recipe-{out.name}.toml")
    env = {**os.environ, "GANCORE_LOAD_PLUGINS": "gtest", "GTEST_PROBE": str(probe), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(site), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "--no-python", "gancore", "run",
                           str(path), "--no-progress", "--set", f"output.dir='{out}'", *extra],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _probe_rows(probe: Path) -> list[list[dict[str, Any]]]:
    return [[json.loads(x) for x in (probe / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_torchrun_two_processes_all_reduce(tiny, tmp_path, write_recipe, grad_accum):
    """torchrun starts 2 processes; each draws different samples, and after every step both
    hold the same weights — which only the all-reduce of gradients can give.  The logged
    loss is the mean over both processes."""
    probe = tmp_path / "probe"
    tiny["schedule"] = {"use": "gtest.probe"}
    tiny["losses"] = [{"use": "gtest.recorded", "phase": "D", "inputs": {"value": "d_real"}, "weight": 1e-3}]
    tiny["train"].update(steps=3, batch_size=4, grad_accum=grad_accum)
    out = tmp_path / "ddp"
    _torchrun(tiny, tmp_path, write_recipe, out, probe)
    assert latest_checkpoint(out).name == "step_000003"
    logged = metrics(out)
    assert [m["step"] for m in logged] == [1, 2, 3]
    per_rank = [[json.loads(x) for x in (probe / f"loss{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for step, m in enumerate(logged):  # each process's mean over its micro-batches, then over processes
        mine = [sum(v[step * grad_accum:(step + 1) * grad_accum]) / grad_accum for v in per_rank]
        assert m["D/gtest.recorded"] == pytest.approx(1e-3 * sum(mine) / 2, abs=2e-6)
        assert mine[0] != mine[1]
    ranks = _probe_rows(probe)
    for r, rows in enumerate(ranks):
        assert [(m["step"], m["rank"], m["world"]) for m in rows] == [(s, r, 2) for s in range(3)]
    for a, b in zip(*ranks):
        assert a["image_sum"] != b["image_sum"]  # each process trains on its own share
        assert a["G"] == b["G"] and a["D"] == b["D"]  # ... yet both hold the same weights
    assert ranks[0][0]["D"] != ranks[0][2]["D"] and ranks[0][0]["G"] != ranks[0][2]["G"]  # and they trained


@pytest.mark.slow
def test_torchrun_resume_restores_each_process_and_syncs_statistics(tiny, tmp_path, write_recipe):
    """Two processes stopped at step 2 and resumed end bit-identical to an uninterrupted
    run (each process restores its own noise), and after every checkpoint both hold the
    same BatchNorm statistics (averaged over the processes)."""
    tiny["schedule"] = {"use": "gtest.probe"}
    tiny["train"].update(steps=4, batch_size=4)
    tiny["output"]["checkpoint_every"] = 2
    whole, half = tmp_path / "whole", tmp_path / "half"
    _torchrun(tiny, tmp_path, write_recipe, whole, tmp_path / "probe_whole")
    _torchrun(tiny, tmp_path, write_recipe, half, tmp_path / "probe_half", "--set", "train.steps=2")
    _torchrun(tiny, tmp_path, write_recipe, half, tmp_path / "probe_half", "--resume")
    a, b = weights(latest_checkpoint(whole)), weights(latest_checkpoint(half))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = _probe_rows(tmp_path / "probe_whole")
    # step 2 starts right after the step-2 checkpoint: both processes hold the same statistics;
    # without the averaging, each keeps the statistics of its own batches
    assert rows[0][2]["D_buffers"] == rows[1][2]["D_buffers"]
    assert rows[0][1]["D_buffers"] != rows[1][1]["D_buffers"]


def test_adam_implementations_take_the_same_steps(tiny, tmp_path):
    """optim.implementation picks Adam's kernels, never its update: every choice moves every
    network from the same start to the same weights, up to rounding.  (Where a gradient is
    ~0, as for a conv bias before BatchNorm, Adam's m/sqrt(v) turns rounding into steps of
    up to lr, so those may differ by that much.)"""
    start = weights(run(tiny, tmp_path / "start", ["train.steps=1", "optim.lr=1e-12", "output.checkpoint_every=1"])
                    / "checkpoints" / "step_000001")
    ends = {}
    for impl in ("loop", "foreach", "fused"):
        out = run(tiny, tmp_path / impl, [f"optim.implementation='{impl}'", "output.checkpoint_every=2"])
        ends[impl] = weights(out / "checkpoints" / "step_000002")
    for name, w in ends["loop"].items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert not torch.equal(w, start[name]), name  # the step moved it
        for impl in ("foreach", "fused"):
            tol = 1e-6 if name.endswith("weight") else 2 * 2e-4  # two steps of lr at most
            assert torch.allclose(ends[impl][name], w, atol=tol), (impl, name)
    assert all(torch.equal(ends["foreach"][n], w) for n, w in ends["loop"].items())  # foreach: bit for bit here
