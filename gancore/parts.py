"""The network parts of an adversarial model: Encoder, Generator, Discriminator, and
Network for any other network a schedule trains (TD-GAN's tag mapping net).

Every part is an ``nn.Module`` with a nested pydantic ``Config`` (``extra="forbid"``)
that is exactly the recipe table that configures it.  A part is built as
``Part(config, info=info)`` or, from Python, ``Part(width=32, info=info)``.

``info`` (:class:`DataInfo`) tells a part what the data looks like (resolution,
channels, how many classes each label has), so that, for example, DR-GAN's
discriminator can size its identity head from the data rather than the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

__all__ = [
    "Config",
    "DataInfo",
    "Part",
    "Encoder",
    "Generator",
    "Discriminator",
    "Network",
    "DiscOutput",
    "make_config",
]


class Config(BaseModel):
    """Base of every part's configuration: strict, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class DataInfo:
    """What the training data looks like; handed to every part when it is built.

    :param resolution: side of the square images, in pixels.
    :param channels: image channels (3 for RGB).
    :param label_classes: number of classes of each categorical label
        (e.g. ``{"identity": 200, "pose": 9, "age_group": 10, "attribute": 2}``).
        Continuous labels (``age`` in years, ``yaw`` in degrees) are absent.
    """

    resolution: int = 64
    channels: int = 3
    label_classes: dict[str, int] = field(default_factory=dict)

    def classes(self, label: str) -> int:
        """Number of classes of ``label``; a clear error if the data lacks it."""
        try:
            return self.label_classes[label]
        except KeyError:
            have = ", ".join(sorted(self.label_classes)) or "none"
            raise KeyError(
                f"this part needs the number of classes of label {label!r}, "
                f"but the data source provides only: {have}"
            ) from None


def make_config(cls: type, config: Any, overrides: dict[str, Any]) -> Any:
    """Turn ``config`` (None, a dict or a Config) plus keyword overrides into ``cls.Config``."""
    config_cls = cls.Config
    if config is None:
        return config_cls(**overrides)
    if isinstance(config, dict):
        return config_cls(**{**config, **overrides})
    if not isinstance(config, config_cls):
        raise TypeError(f"{cls.__name__} expects a {cls.__name__}.Config, got {type(config).__name__}")
    return config.model_copy(update=overrides) if overrides else config


class Part(nn.Module):
    """Base of the network parts.  Subclasses override ``Config`` and ``forward``."""

    #: the recipe table of this part; subclasses define their own.
    Config: ClassVar[type[Config]] = Config
    #: the kind under which the registry files it ("encoder", "generator", ...).
    kind: ClassVar[str] = "part"

    def __init__(self, config: Any = None, *, info: DataInfo | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = make_config(type(self), config, overrides)
        self.info = info or DataInfo()


class Encoder(Part):
    """Image(s) → representation.

    ``forward(x: [B, C, H, W]) -> Tensor`` (e.g. ``[B, Z]``); subclasses document theirs.
    """

    kind = "encoder"


class Generator(Part):
    """Representation and/or image plus conditions → image ``[B, C, H, W]`` in [-1, 1]
    (residual generators document that their output is ``x + r``)."""

    kind = "generator"


@dataclass
class DiscOutput:
    """What a discriminator returns: logits and, on request, intermediate features."""

    logits: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class Discriminator(Part):
    """Image (+ conditions) → :class:`DiscOutput` (logits, optionally feature maps).

    ``forward(x, *conds, features=False)``: with ``features=True`` the output carries the
    intermediate feature maps that perceptual losses read (ResGAN's φ).
    """

    kind = "discriminator"


class Network(Part):
    """Any other network a schedule trains (e.g. TD-GAN's tag mapping net g: one-hot tags →
    representation).  Registered, configured, checkpointed and built exactly like the other
    parts; ``forward`` is the subclass's own, documented there."""

    kind = "network"
