"""Registers TD-GAN's parts, loss terms, schedule, metric and the ``gancore rerender`` verb.

Kept cheap to import: only ``gancore`` here; the model code loads when a recipe uses it.
"""

from __future__ import annotations

from typing import Any

from gancore import hookimpl

GANCORE_PLUGIN_API = 1

_PARTS = [
    # name, target, kind, description
    ("tdgan.disentangler", "gancore_tdgan.model:TDGANDisentangler", "encoder",
     "TD-GAN R: image -> one tanh representation block per tag (7-conv trunk, FC, heads)"),
    ("tdgan.tagnet", "gancore_tdgan.model:TagMapping", "network",
     "TD-GAN g: one-hot tags -> representation blocks (one 2-layer MLP per tag)"),
    ("tdgan.generator", "gancore_tdgan.model:TDGANGenerator", "generator",
     "TD-GAN G: concatenated tag blocks -> image (FC to 4x4, stride-2 deconvs, tanh)"),
    ("tdgan.discriminator", "gancore_tdgan.model:TDGANDiscriminator", "discriminator",
     "TD-GAN D: image -> real/fake logit (R's trunk, FC 2560, FC 1)"),
    ("tdgan.f1", "gancore_tdgan.losses:TagConsistency", "loss", "f1: ||R(x) - g(C)||^2, image and tags agree"),
    ("tdgan.f2", "gancore_tdgan.losses:TagRendering", "loss", "f2: ||G(g(C)) - x||^2, render from tags alone"),
    ("tdgan.f1u", "gancore_tdgan.losses:UntaggedReconstruction", "loss", "f~1: ||G(R(x)) - x||^2 on untagged images"),
    ("tdgan.f3", "gancore_tdgan.losses:TagAdversarial", "loss", "f3: adversarial term on G(R(x)) (D's or R's/G's side)"),
    ("tdgan.alternating", "gancore_tdgan.schedule:TDGANSchedule", "schedule",
     "TD-GAN: g, G, R, D steps, each holding the others fixed; semi-supervised with untagged images"),
    ("tdgan.rerender", "gancore_tdgan.metric:RerenderMetric", "metric",
     "re-render held-out identities at every tag value: MSE vs true images, copy and nearest-neighbour baselines"),
]


@hookimpl
def register_parts(register: Any) -> None:
    for name, target, kind, description in _PARTS:
        register(name, target, description, kind=kind)


@hookimpl
def register_commands(register: Any) -> None:
    def configure(parser: Any) -> None:
        from .cli import configure_rerender

        configure_rerender(parser)

    def run(args: Any) -> int:
        from .cli import run_rerender

        return run_rerender(args)

    register("rerender", "Re-render an object image or a face with other tags (view, light, ...) with a trained TD-GAN run",
             configure, run)


@hookimpl
def register_benchmarks(register: Any) -> None:
    register("tdgan-chairs", paper="recipes/tdgan-chairs.toml", cpu="recipes/tdgan-chairs-cpu.toml",
             description="TD-GAN chairs: g, G, R and D steps sharing R(x), g(C), G(g(C)), G(R(x))")
    register("tdgan-faces", paper="recipes/tdgan-faces.toml", cpu="recipes/tdgan-faces-cpu.toml",
             description="TD-GAN faces: four tag blocks (identity, pose, light, expression)")
