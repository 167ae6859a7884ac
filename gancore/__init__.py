"""gancore — a small, plugin-based PyTorch core for face-editing GANs.

Public API::

    import gancore
    recipe = gancore.load_recipe("recipes/residual.toml", overrides=["train.steps=100"])
    run_dir = gancore.train(recipe)
    term = gancore.loss("tv", weight=0.1) + gancore.loss("residual.sparsity")
    net = gancore.build("residual.transformer", width=32)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl
from .losses import LossConfig, LossSum, LossTerm
from .metrics import Metric
from .parts import Config, DataInfo, Discriminator, DiscOutput, Encoder, Generator, Network, Part
from .plugins import PLUGIN_API
from .schedule import Context, Phase, Schedule, StaleResult, Stream

if TYPE_CHECKING:
    from .recipe import Recipe
    from .registry import Registry

__version__ = "0.1.0"

__all__ = [
    "__version__", "PLUGIN_API", "hookimpl",
    "Config", "DataInfo", "Part", "Encoder", "Generator", "Discriminator", "Network", "DiscOutput",
    "LossTerm", "LossConfig", "LossSum", "Schedule", "Phase", "Stream", "Context", "StaleResult", "Metric",
    "registry", "build", "loss", "load_recipe", "train", "load_run",
]


def registry() -> Registry:
    """The registry of every loaded plugin's parts (plugins load on first call)."""
    from .plugins import get_host

    return get_host().registry


def build(name: str, config: Any = None, /, *, info: DataInfo | None = None, **options: Any) -> Any:
    """Build a registered part by name: ``gancore.build("residual.transformer", width=32)``."""
    spec = registry().get(name)
    cfg = {**(config or {}), **options}
    if spec.kind in ("encoder", "generator", "discriminator", "network"):
        return spec.build(cfg, info=info)
    return spec.build(cfg)


def loss(name: str, /, **options: Any) -> LossTerm:
    """A registered loss term by name: ``gancore.loss("tv", weight=0.1)``."""
    return registry().get(name, "loss").build(options)


def load_recipe(path: Any, overrides: list[str] | None = None) -> Recipe:
    """Read and fully validate a recipe file (raises RecipeError listing every problem)."""
    from .recipe import load_recipe as _load

    return _load(path, overrides or [])


def train(recipe: Any, *, overrides: list[str] | None = None, resume: bool = False, overwrite: bool = False,
          **kwargs: Any) -> Any:
    """Train from a recipe (a path or a loaded Recipe); returns the run directory.

    A run folder that already holds checkpoints needs ``resume=True`` (continue it) or
    ``overwrite=True`` (start again from scratch).
    """
    from .engine import train as _train

    if not hasattr(recipe, "train"):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply when loading a recipe from a file; pass a path")
    return _train(recipe, resume=resume, overwrite=overwrite, **kwargs)


def load_run(run_dir: Any, checkpoint: Any = None, *, ema: bool = True) -> Any:
    """A trained run (networks in eval mode, recipe, data) from its folder; for a run trained
    with ``train.ema``, the averaged weights unless ``ema=False``."""
    from .runs import load_run as _load

    return _load(run_dir, checkpoint, ema=ema)


def _drop_cuda_home_warning(record: logging.LogRecord) -> bool:
    """torch.compile's CPU code generation imports ``torch.utils.cpp_extension``, which warns
    ``No CUDA runtime is found, using CUDA_HOME=...`` on a machine that has a CUDA toolkit
    but no usable GPU.  On CPU that is harmless and says nothing about the run, so gancore
    drops exactly this record (every other torch message is kept)."""
    return not str(record.msg).startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_drop_cuda_home_warning)

