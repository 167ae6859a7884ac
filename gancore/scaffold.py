"""``gancore new-plugin NAME``: write a working plugin package to start from.

``scaffold("stargan", Path("plugins"))`` creates ``plugins/gancore-stargan/``::

    pyproject.toml                 distribution gancore-stargan, entry point gancore: stargan
    README.md
    gancore_stargan/__init__.py
    gancore_stargan/plugin.py      the entry point: GANCORE_PLUGIN_API, lazy register_parts
    gancore_stargan/model.py       generator, discriminator, loss term, schedule (the template)
    recipes/stargan-tiny.toml      trains on the built-in ``blobs`` source at 16 px in seconds
    tests/test_stargan.py          2-step CPU train, a hand-computed loss value, checkpoint reload

The package works as generated (``pip install -e plugins/gancore-stargan && pytest
plugins/gancore-stargan``); a plugin author then replaces the template parts with the
paper's.  The templates are plain strings below, filled with :class:`string.Template`
(``${name}`` etc.; a literal dollar sign is written ``$$``).
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

__all__ = ["scaffold", "check_name", "ScaffoldError", "RESERVED_NAMES"]

#: names a plugin cannot take: the built-in plugin, and the ``timm.*`` backbone namespace.
RESERVED_NAMES = {
    "gancore": "it is the name of gancore's built-in plugin",
    "timm": "part names under 'timm.' are reserved for timm backbones",
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(ValueError):
    """A plugin cannot be scaffolded as asked; the message says why and what to do."""


def check_name(name: str) -> str:
    """``name`` if it is a valid plugin name, else :class:`ScaffoldError` naming the bad value.

    A plugin name is a lowercase Python identifier (letters, digits, ``_``; starting with
    a letter): it is the entry-point name, the prefix of every part (``<name>.<part>``)
    and, as ``gancore_<name>``, the package name.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and '_', starting with a letter "
            f"(e.g. 'stargan' or 'res_gan'); it becomes the package gancore_<name> and the part prefix <name>."
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"invalid plugin name {name!r}: it is a Python keyword")
    if name in RESERVED_NAMES:
        raise ScaffoldError(f"invalid plugin name {name!r}: {RESERVED_NAMES[name]}")
    return name


def scaffold(name: str, dir: Path | str) -> Path:  # noqa: A002 - the CLI's --dir
    """Create ``dir/gancore-<name>/``, a working plugin package; returns its path.

    Raises :class:`ScaffoldError` for an invalid name or when the folder already exists
    (nothing is overwritten).  Files are written to a temporary folder first and moved
    into place at the end, so a failure never leaves a half-written package.
    """
    check_name(name)
    dir = Path(dir)
    target = dir / f"gancore-{name}"
    if target.exists():
        raise ScaffoldError(f"{target} already exists; choose another name or --dir, or remove it first")
    if dir.exists() and not dir.is_dir():
        raise ScaffoldError(f"--dir {dir} is a file, not a folder")
    dir.mkdir(parents=True, exist_ok=True)
    values = {
        "name": name,
        "pkg": f"gancore_{name}",
        "dist": f"gancore-{name}",
        "Camel": "".join(p.capitalize() for p in name.split("_")),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".gancore-{name}-", dir=dir))
    try:
        for rel, text in _FILES.items():
            path = tmp / Template(rel).substitute(values)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(values), encoding="utf-8")
        os.replace(tmp, target)  # fails (leaving nothing) if target appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ---------------------------------------------------------------------------------------
# the templates

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "${dist}"
version = "0.1.0"
description = "gancore plugin: ${name} (describe the paper here)"
readme = "README.md"
requires-python = ">=3.10"
license = { text = "MIT" }
dependencies = ["gancore"]

[project.optional-dependencies]
test = ["pytest>=7"]

# How gancore finds the plugin: entry-point group "gancore", name = the plugin name
# (the prefix of every part), value = the module with the @hookimpl functions.
[project.entry-points.gancore]
${name} = "${pkg}.plugin"

[tool.setuptools.packages.find]
include = ["${pkg}*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_README = '''\
# ${dist}

A gancore plugin. *Describe the paper (title, authors, venue) and what it edits here.*

Made with `gancore new-plugin ${name}`; the parts below are a working template (a small
GAN) to be replaced with the paper's.

## Install and test

```
pip install -e .            # from this folder; gancore must be installed
gancore plugins             # lists "${name}" with its parts
pytest                      # trains 2 steps on CPU, checks a loss value and a checkpoint reload
gancore run recipes/${name}-tiny.toml   # a few seconds on CPU, on the built-in blobs data
```

## Parts

| name | kind | what it is |
|---|---|---|
| `${name}.generator` | generator | noise `[B, z_dim]` → image `[B, C, R, R]` in [-1, 1] |
| `${name}.discriminator` | discriminator | image → one real/fake logit (+ feature maps on request) |
| `${name}.moments` | loss | match per-channel mean and std of fake and real images |
| `${name}.gan` | schedule | each iteration a D step, then a G step |

Each part's recipe keys: `gancore parts --json`, or the `Config` classes in
`${pkg}/model.py`.

## Layout

```
pyproject.toml              distribution ${dist}, entry point [project.entry-points.gancore]
${pkg}/plugin.py   cheap to import: GANCORE_PLUGIN_API and register_parts (lazy names)
${pkg}/model.py    the parts
recipes/${name}-tiny.toml   a recipe that runs in seconds
tests/test_${name}.py       the plugin's tests (gancore.testing helpers)
```

## Publishing

`python -m build` then `twine upload dist/*`; users install with `pip install ${dist}`
and gancore finds the plugin through its entry point.
'''

_INIT = '''\
"""${dist}: a gancore plugin.  *One line about the paper here.*

Parts (registered lazily by :mod:`${pkg}.plugin`, defined in :mod:`${pkg}.model`):
``${name}.generator``, ``${name}.discriminator``, ``${name}.moments`` (loss), ``${name}.gan`` (schedule).
"""

__version__ = "0.1.0"
'''

_PLUGIN = '''\
"""gancore entry point of ${dist} (``[project.entry-points.gancore] ${name}``).

gancore imports this module at start-up, for every command (even ``gancore --help``), so
keep it cheap: import nothing heavy here.  Each part is named by a lazy
``"module:Class"`` string, and its module is imported only when a recipe uses the part.
"""

from __future__ import annotations

from typing import Any

from gancore import hookimpl

#: the gancore plugin API this plugin is written for; gancore refuses a plugin whose
#: version it does not provide (``gancore plugins`` shows the message).
GANCORE_PLUGIN_API = 1

#: (name, "module:Class", kind, one-line description).  Names are "<plugin>.<part>";
#: kinds: encoder, generator, discriminator, loss, schedule, data, metric.
_PARTS = [
    ("${name}.generator", "${pkg}.model:${Camel}Generator", "generator",
     "noise -> image: linear to 4x4, then upsample+conv blocks (template)"),
    ("${name}.discriminator", "${pkg}.model:${Camel}Discriminator", "discriminator",
     "image -> one real/fake logit, feature maps on request (template)"),
    ("${name}.moments", "${pkg}.model:MomentMatch", "loss",
     "|per-channel mean (and std) of real - fake|, averaged over channels"),
    ("${name}.gan", "${pkg}.model:${Camel}Schedule", "schedule",
     "each iteration a D step, then a G step that reuses G(z)"),
]


@hookimpl
def register_parts(register: Any) -> None:
    for name, target, kind, description in _PARTS:
        register(name, target, description, kind=kind)


# A CLI verb (``gancore <verb> ...``) is one more hook; see docs/writing-a-plugin.md:
#
# @hookimpl
# def register_commands(register: Any) -> None:
#     def configure(parser):                 # an argparse sub-parser
#         parser.add_argument("run", help="a run folder trained with this plugin")
#
#     def run(args) -> int:                  # import heavy modules here, not at the top
#         from .cli import main
#         return main(args)
#
#     register("${name}-apply", "Apply a trained ${name} run to a photo", configure, run)
'''

_MODEL = '''\
"""The parts of the ``${name}`` plugin.  Made by ``gancore new-plugin ${name}``: a small,
complete GAN that trains out of the box.  Replace each part with the paper's, keeping the
contracts written in each docstring.

- ``${name}.generator``      ${Camel}Generator: noise ``[B, z_dim]`` -> image ``[B, C, R, R]`` in [-1, 1]
- ``${name}.discriminator``  ${Camel}Discriminator: image -> ``DiscOutput`` (a logit per image)
- ``${name}.moments``        MomentMatch: a loss term reading ``real`` and ``fake``
- ``${name}.gan``            ${Camel}Schedule: the training algorithm (a D phase, then a G phase)

This module may import anything heavy: gancore imports it only when a recipe uses one of
its parts (see ``plugin.py``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from gancore.builtins.losses import Adversarial
from gancore.losses import LossConfig, LossTerm
from gancore.parts import Config, DataInfo, Discriminator, DiscOutput, Generator
from gancore.schedule import Context, Phase, Schedule, Stream

__all__ = ["${Camel}Generator", "${Camel}Discriminator", "MomentMatch", "${Camel}Schedule"]


def _doublings(resolution: int, part: str) -> int:
    """How many x2 steps lie between 4x4 and ``resolution`` (which must be 4 * 2**k)."""
    k = int(math.log2(max(resolution // 4, 1)))
    if resolution < 8 or 4 * 2**k != resolution:
        raise ValueError(f"{part} needs a resolution of 4 * 2**k (8, 16, 32, 64, ...), got {resolution}")
    return k


# ------------------------------------------------------------------------------ generator


class GeneratorConfig(Config):
    """The recipe table of the generator (``[parts.G]`` besides ``use``).  Config is strict:
    an unknown or misspelt key is an error naming it.  ``description`` shows in ``gancore parts``."""

    z_dim: int = Field(32, ge=1, description="noise dimensions")
    width: int = Field(32, ge=4, description="channels of every feature map")


class ${Camel}Generator(Generator):
    """Noise -> image: a linear layer to ``width`` x 4 x 4, then (upsample x2, conv 3x3,
    LeakyReLU) until the data's resolution, then conv 3x3 + tanh to the data's channels.

    ``forward(z: [B, z_dim]) -> [B, C, R, R]`` in [-1, 1].
    """

    Config = GeneratorConfig

    def __init__(self, config: GeneratorConfig | dict | None = None, *, info: DataInfo | None = None,
                 **overrides: object) -> None:
        # The base class validates the config into self.config and keeps self.info: what the
        # data looks like (resolution, channels, number of classes of each label).
        super().__init__(config, info=info, **overrides)
        c, info = self.config, self.info
        self.fc = nn.Linear(c.z_dim, c.width * 4 * 4)
        blocks: list[nn.Module] = []
        for _ in range(_doublings(info.resolution, "${name}.generator")):
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(c.width, c.width, 3, padding=1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(c.width, info.channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc(z), 0.2).view(z.shape[0], self.config.width, 4, 4)
        return torch.tanh(self.to_image(self.body(h)))


# ------------------------------------------------------------------------------ discriminator


class DiscriminatorConfig(Config):
    width: int = Field(32, ge=4, description="channels of the first conv (doubled per downsampling, at most 8x)")


class ${Camel}Discriminator(Discriminator):
    """Image -> one real/fake logit: (conv 4x4 stride 2, LeakyReLU) blocks down to 4x4, then
    a linear layer.

    ``forward(x: [B, C, R, R], features=False) -> DiscOutput``: ``logits [B]``, and with
    ``features=True`` every block's output in ``features`` (for perceptual or
    feature-matching loss terms).
    """

    Config = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig | dict | None = None, *, info: DataInfo | None = None,
                 **overrides: object) -> None:
        super().__init__(config, info=info, **overrides)
        c, info = self.config, self.info
        self.blocks = nn.ModuleList()
        ch_in, ch = info.channels, c.width
        for _ in range(_doublings(info.resolution, "${name}.discriminator")):
            self.blocks.append(nn.Sequential(nn.Conv2d(ch_in, ch, 4, 2, 1), nn.LeakyReLU(0.2)))
            ch_in, ch = ch, min(ch * 2, c.width * 8)
        self.head = nn.Linear(ch_in * 4 * 4, 1)

    def forward(self, x: torch.Tensor, features: bool = False) -> DiscOutput:
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            if features:
                feats.append(h)
        return DiscOutput(logits=self.head(h.flatten(1))[:, 0], features=feats)


# ------------------------------------------------------------------------------ loss term


class MomentsConfig(LossConfig):
    """LossConfig already has ``weight``, ``start``, ``ramp``, ``inputs`` and ``name``;
    add the term's own keys here."""

    std: bool = Field(True, description="also match the per-channel standard deviation")


class MomentMatch(LossTerm):
    """|per-channel mean of ``real`` - that of ``fake``| (+ the same for the standard
    deviation, ``std = true``), averaged over channels; statistics over batch and pixels.

    Reads ``real`` and ``fake`` ``[B, C, H, W]``; a recipe can point it at other tensors
    with ``inputs = {fake = "recon"}``.  A cheap hint that keeps early samples in the
    data's colour range.
    """

    Config = MomentsConfig
    #: the context tensors ``compute`` takes, by keyword; checked against the phase's
    #: ``provides`` when a recipe is validated.
    reads = ("real", "fake")
    #: the name it is logged under when a schedule builds it directly (``G/${name}.moments``).
    default_name = "${name}.moments"

    def compute(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The *unweighted* value; the weight (and its ramp) is applied by gancore."""
        dims = (0, 2, 3)
        value = (real.mean(dims) - fake.mean(dims)).abs().mean()
        if self.config.std:
            value = value + (real.std(dims, correction=0) - fake.std(dims, correction=0)).abs().mean()
        return value


# ------------------------------------------------------------------------------ schedule


class ScheduleConfig(Config):
    mode: Literal["nonsaturating", "hinge", "lsgan"] = Field("nonsaturating", description="GAN objective")
    d_every: int = Field(1, ge=1, description="run the D phase every n iterations (a D:G ratio of 1:n)")


class ${Camel}Schedule(Schedule):
    """The training algorithm as data: each iteration a ``D`` phase, then a ``G`` phase.

    Roles: ``G`` (generator) and ``D`` (discriminator); a recipe fills them with
    ``[parts.G]`` / ``[parts.D]``.  Stream: ``batch`` (any images).

    - Phase ``D`` trains D: it makes ``fake = G(z)`` once (``ctx.once``, shared with the G
      phase) and provides ``real``, ``d_real`` and ``d_fake`` (D's logits on real and fake);
      the engine backpropagates its objective into D's parameters only.
    - Phase ``G`` trains G: it reuses ``fake`` with its graph (G has not stepped since it
      was made) and provides ``real``, ``fake`` and ``g_fake`` (D's logits on ``fake``).
      Loss terms a recipe adds without a ``phase`` key go here.
    """

    Config = ScheduleConfig
    roles = {"G": "generator", "D": "discriminator"}

    def streams(self) -> dict[str, Stream]:
        # One batch per iteration from all samples.  Filter or group with, for example,
        # Stream(where={"attribute": 1}) or Stream(group_by="identity", group_size=2).
        return {"batch": Stream()}

    def required_labels(self) -> tuple[str, ...]:
        return ()  # e.g. ("identity",) for a conditional model: recipes are checked against the data

    def _fake(self, ctx: Context) -> torch.Tensor:
        def make() -> torch.Tensor:
            real = ctx.batch["batch"]["image"]
            z_dim = ctx.nets.plain("G").config.z_dim  # plain(): the module itself, for its config
            return ctx.nets.G(torch.randn(real.shape[0], z_dim, device=real.device))

        return ctx.once("fake", make)  # computed by the first phase that asks, then shared

    def _run_d(self, ctx: Context) -> None:
        ctx["real"] = ctx.batch["batch"]["image"]
        ctx["d_real"] = ctx.nets.D(ctx["real"]).logits
        ctx["d_fake"] = ctx.nets.D(self._fake(ctx)).logits

    def _run_g(self, ctx: Context) -> None:
        ctx["real"] = ctx.batch["batch"]["image"]
        ctx["g_fake"] = ctx.nets.D(self._fake(ctx)).logits

    def phases(self) -> list[Phase]:
        mode = self.config.mode
        return [
            Phase("D", trains=("D",), run=self._run_d, provides=("real", "d_real", "d_fake"),
                  every=self.config.d_every,
                  losses=[Adversarial(target="real", mode=mode, inputs={"logits": "d_real"}, name="d_real"),
                          Adversarial(target="fake", mode=mode, inputs={"logits": "d_fake"}, name="d_fake")]),
            Phase("G", trains=("G",), run=self._run_g, provides=("real", "fake", "g_fake"),
                  accepts_extra_losses=True,
                  losses=[Adversarial(target="real", player="generator", mode=mode, inputs={"logits": "g_fake"},
                                      name="g_adv"),
                          MomentMatch()]),
        ]

    @torch.no_grad()
    def sample(self, nets, batch):  # noqa: ANN001, ANN201
        """Rows of the sample grid written to samples/step_N.png."""
        real = batch["batch"]["image"]
        g = torch.Generator().manual_seed(0)  # the same noise every time, so grids show progress
        z = torch.randn(real.shape[0], nets["G"].config.z_dim, generator=g).to(real.device)
        return [("real", real), ("generated", nets["G"](z))]
'''

_RECIPE = '''\
# A tiny ${name} run on the built-in "blobs" images (16 px): checks that everything runs,
# in seconds on a CPU.  gancore run recipes/${name}-tiny.toml
# Every key is validated before training starts; `gancore validate` prints the resolved recipe.

[recipe]
name = "${name}-tiny"
plugins = ["${name}"]
description = "${name} template GAN on 16 px blobs"

[data]
source = "blobs"
resolution = 16
size = 256

[parts.G]
use = "${name}.generator"
z_dim = 16
width = 16

[parts.D]
use = "${name}.discriminator"
width = 16

[schedule]
use = "${name}.gan"

# Overrides the schedule's default ${name}.moments term (matched by its kind); a term the
# schedule does not have would be added to its G phase.
[[losses]]
use = "${name}.moments"
weight = 0.5

[optim]
lr = 2e-4
betas = [0.5, 0.999]

[train]
steps = 200
batch_size = 16
device = "cpu"
threads = 1

[output]
sample_every = 100
checkpoint_every = 200
num_samples = 8
'''

_TEST = '''\
"""Tests of ${dist}: shapes, the loss term against a hand-computed value, 2 training
steps on CPU through gancore's engine and a checkpoint reload.  Run after
``pip install -e .`` (gancore finds the plugin through its entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gancore
from gancore.parts import DataInfo
from gancore.testing import checkpoint_roundtrip, smoke_train
from ${pkg}.model import ${Camel}Discriminator, ${Camel}Generator, ${Camel}Schedule, MomentMatch

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "${name}-tiny.toml"


def test_plugin_registers_its_parts() -> None:
    registry = gancore.registry()
    for name, kind in [("${name}.generator", "generator"), ("${name}.discriminator", "discriminator"),
                       ("${name}.moments", "loss"), ("${name}.gan", "schedule")]:
        spec = registry.get(name, kind)
        assert spec.plugin == "${name}"
        spec.load()  # the lazy "module:Class" string resolves


def test_shapes() -> None:
    info = DataInfo(resolution=16)
    g, d = ${Camel}Generator(z_dim=8, width=8, info=info), ${Camel}Discriminator(width=8, info=info)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, 16, 16) and x.abs().max() <= 1
    out = d(x, features=True)
    assert out.logits.shape == (2,)
    assert [f.shape[-1] for f in out.features] == [8, 4]  # 16 -> 8 -> 4
    with pytest.raises(ValueError, match="resolution"):
        ${Camel}Generator(info=DataInfo(resolution=24))


def test_moments_against_hand_value() -> None:
    # real: channel 0 is all 1, channel 1 all -1 (std 0); fake: channel 0 is 0 and 1 (mean 0.5,
    # std 0.5), channel 1 all 0.  Means: |1 - 0.5| = 0.5 and |-1 - 0| = 1; stds: 0.5 and 0.
    real = torch.stack([torch.ones(2, 2), -torch.ones(2, 2)])[None].expand(2, 2, 2, 2)
    fake = torch.stack([torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.zeros(2, 2)])[None].expand(2, 2, 2, 2)
    assert MomentMatch(std=False).compute(real=real, fake=fake).item() == pytest.approx((0.5 + 1.0) / 2)
    assert MomentMatch().compute(real=real, fake=fake).item() == pytest.approx((0.5 + 1.0) / 2 + (0.5 + 0.0) / 2)
    # weighted, through the context, with a renamed input
    term = MomentMatch(weight=2.0, inputs={"fake": "recon"})
    assert term({"real": real, "recon": fake}).item() == pytest.approx(2 * 1.0)


def test_schedule_phases() -> None:
    phases = ${Camel}Schedule().phases()
    assert [(p.name, p.trains) for p in phases] == [("D", ("D",)), ("G", ("G",))]
    assert [t.name for t in phases[1].losses] == ["g_adv", "${name}.moments"]


def test_trains_two_steps_and_reloads(tmp_path: Path) -> None:
    run_dir = smoke_train(RECIPE, tmp_path, steps=2, overrides=["parts.G.width=8", "parts.D.width=8"])
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2
    assert {"D/d_real", "D/d_fake", "G/g_adv", "G/${name}.moments"} <= set(last)
    run = checkpoint_roundtrip(run_dir)  # reload from the checkpoint; every tensor must match
    assert run.step == 2 and set(run.nets) == {"G", "D"}
'''

_FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "${pkg}/__init__.py": _INIT,
    "${pkg}/plugin.py": _PLUGIN,
    "${pkg}/model.py": _MODEL,
    "recipes/${name}-tiny.toml": _RECIPE,
    "tests/test_${name}.py": _TEST,
}
