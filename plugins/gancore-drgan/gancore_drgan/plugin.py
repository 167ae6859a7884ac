"""Registers DR-GAN's parts, losses, schedule, metric and the ``gancore rotate`` / ``gancore verify`` verbs.

Kept cheap to import: only ``gancore`` here; the model code loads when a recipe uses it.
"""

from __future__ import annotations

from typing import Any

from gancore import hookimpl

GANCORE_PLUGIN_API = 1

_PARTS = [
    # name, target, kind, description
    ("drgan.encoder", "gancore_drgan.model:DRGANEncoder", "encoder",
     "DR-GAN G_enc: face -> identity feature f(x) (CVPR Table 1 trunk; +confidence omega for multi-image)"),
    ("drgan.decoder", "gancore_drgan.model:DRGANDecoder", "generator",
     "DR-GAN G_dec: [f(x), one-hot pose c, noise z] -> face at pose c (FC + FConv stack + tanh)"),
    ("drgan.discriminator", "gancore_drgan.model:DRGANDiscriminator", "discriminator",
     "DR-GAN D: trunk + identity head (N_d + synthetic class) and pose head (N_p)"),
    ("drgan.identity", "gancore_drgan.losses:IdentityLoss", "loss", "-log D^d_y: softmax CE of identity logits vs labels"),
    ("drgan.pose", "gancore_drgan.losses:PoseLoss", "loss", "-log D^p_y: softmax CE of pose logits vs labels"),
    ("drgan.synthetic", "gancore_drgan.losses:SyntheticLoss", "loss", "-log D^d_{N_d+1}: syntheses into the synthetic class"),
    ("drgan.schedule", "gancore_drgan.schedule:DRGANSchedule", "schedule",
     "DR-GAN: D step, then G step, on syntheses made once; single- or multi-image (omega fusion)"),
    ("drgan.recognition", "gancore_drgan.metric:RecognitionMetric", "metric",
     "rank-1 per pose, multi-image curve, pose control, rotation/frontalization error; CFP 10-fold"),
]


@hookimpl
def register_parts(register: Any) -> None:
    for name, target, kind, description in _PARTS:
        register(name, target, description, kind=kind)


@hookimpl
def register_commands(register: Any) -> None:
    def configure_rotate(parser: Any) -> None:
        from .cli import configure_rotate as configure

        configure(parser)

    def run_rotate(args: Any) -> int:
        from .cli import run_rotate as run

        return run(args)

    def configure_verify(parser: Any) -> None:
        from .cli import configure_verify as configure

        configure(parser)

    def run_verify(args: Any) -> int:
        from .cli import run_verify as run

        return run(args)

    register("rotate", "Rotate the face in photo(s) to other poses with a trained DR-GAN run", configure_rotate, run_rotate)
    register("verify", "Same person or not: compare two photos' DR-GAN identity features", configure_verify, run_verify)


@hookimpl
def register_benchmarks(register: Any) -> None:
    register("drgan", paper="recipes/drgan.toml", cpu="recipes/drgan-cpu.toml",
             description="DR-GAN single-image: D and G phases sharing G_enc/G_dec's forward")
    register("drgan-multi", paper="recipes/drgan-multi.toml", cpu="recipes/drgan-multi-cpu.toml",
             description="DR-GAN multi-image: groups of images of one subject fused with learned confidences")
