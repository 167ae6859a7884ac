"""gancore's built-in parts, registered through the same hook as any plugin's.

Imports stay lazy: each part is named by a ``"module:Class"`` string and imported
only when a recipe uses it.
"""

from __future__ import annotations

from ..hookspecs import hookimpl

#: parts the core names (``data.source`` defaults to ``synthfaces``) that another plugin
#: provides: without it installed, an unknown-part error says ``pip install gancore-synth``.
GANCORE_PART_HOMES = {"synthfaces": "synth", "synthchairs": "synth"}
#: the verbs of the project's own plugins, which the README and docs use: typed without
#: the plugin installed, ``gancore VERB`` says which distribution provides it.
GANCORE_COMMAND_HOMES = {"data": "synth", "edit": "residual", "age": "caae",
                         "rotate": "drgan", "verify": "drgan", "rerender": "tdgan"}

_PARTS = [
    # name, target, kind
    ("l1", "gancore.builtins.losses:L1", "loss"),
    ("l2", "gancore.builtins.losses:L2", "loss"),
    ("tv", "gancore.builtins.losses:TotalVariation", "loss"),
    ("ce", "gancore.builtins.losses:CrossEntropy", "loss"),
    ("adversarial", "gancore.builtins.losses:Adversarial", "loss"),
    ("alternating", "gancore.builtins.basic:Alternating", "schedule"),
    ("basic.generator", "gancore.builtins.basic:BasicGenerator", "generator"),
    ("basic.discriminator", "gancore.builtins.basic:BasicDiscriminator", "discriminator"),
    ("blobs", "gancore.builtins.blobs:Blobs", "data"),
    ("celeba", "gancore.data.readers:CelebA", "data"),
    ("utkface", "gancore.data.readers:UTKFace", "data"),
    ("multipie", "gancore.data.readers:MultiPIE", "data"),
    ("cfp", "gancore.data.readers:CFP", "data"),
    ("chairs3d", "gancore.data.readers:Chairs3D", "data"),
    ("folder", "gancore.data.readers:Folder", "data"),
]


@hookimpl
def register_parts(register) -> None:  # noqa: ANN001 - the callback's type is documented in hookspecs
    for name, target, kind in _PARTS:
        register(name, target, kind=kind)

