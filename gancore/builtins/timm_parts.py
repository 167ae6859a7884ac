"""Any timm model as an Encoder or Discriminator backbone: ``use = "timm.resnet18"``.

Weights are never downloaded (``pretrained`` is always off): the backbone trains from
scratch like every other part.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..parts import Config, DataInfo, Discriminator, DiscOutput, Encoder


class TimmConfig(Config):
    model: str = Field(..., description="timm model name (set from the part name timm.<model>)")
    outputs: int = Field(1, ge=0, description="size of the output head (0: pooled features)")
    options: dict[str, object] = Field(default_factory=dict, description="extra timm.create_model keyword arguments")


def _create(config: TimmConfig, info: DataInfo) -> torch.nn.Module:
    import timm

    if not timm.is_model(config.model):
        close = timm.list_models(f"*{config.model.split('_')[0]}*")[:5]
        raise ValueError(f"timm has no model {config.model!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    return timm.create_model(config.model, pretrained=False, num_classes=config.outputs,
                             in_chans=info.channels, **config.options)


class TimmEncoder(Encoder):
    """A timm model as an encoder: image → ``[B, outputs]`` (pooled features if outputs = 0)."""

    Config = TimmConfig

    def __init__(self, config: TimmConfig | None = None, *, info: DataInfo | None = None, **kw: object) -> None:
        super().__init__(config, info=info, **kw)
        self.net = _create(self.config, self.info)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TimmDiscriminator(Discriminator):
    """A timm model as a discriminator: image → logits ``[B]`` (outputs = 1) or ``[B, outputs]``."""

    Config = TimmConfig

    def __init__(self, config: TimmConfig | None = None, *, info: DataInfo | None = None, **kw: object) -> None:
        super().__init__(config, info=info, **kw)
        self.net = _create(self.config, self.info)

    def forward(self, x: torch.Tensor, *conds: torch.Tensor, features: bool = False) -> DiscOutput:
        feats = self.net.forward_features(x)
        logits = self.net.forward_head(feats)
        if self.config.outputs == 1:
            logits = logits[:, 0]
        return DiscOutput(logits=logits, features=[feats] if features else [])
