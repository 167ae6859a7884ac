"""gancore-residual: ResGAN — "Learning Residual Images for Face Attribute Manipulation"
(Shen & Liu, CVPR 2017) as a gancore plugin.

Parts (registered by :mod:`gancore_residual.plugin`):

- ``residual.transformer`` (generator) — G0 / G1, ``forward(x) -> ResidualOutput(out, residual)``
- ``residual.discriminator`` (discriminator) — shared 3-class D with a perceptual tap
- ``residual.sparsity`` / ``residual.perceptual`` (losses) — α‖r‖₁ and β‖φ(x) − φ(x̃)‖₁
- ``residual.dual`` (schedule) — D, then G0, then G1 each iteration, with dual learning
- ``residual.edit`` (metric) — edit quality against synthfaces' true counterfactual renders
- CLI verb ``gancore edit`` — apply a trained run to faces in a photo
"""

from __future__ import annotations

__version__ = "0.1.0"
