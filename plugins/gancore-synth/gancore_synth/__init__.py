"""gancore-synth: synthetic data with ground truth, as a gancore plugin.

Registered by :mod:`gancore_synth.plugin`:

- ``synthfaces`` (data) — procedurally generated 3D faces, every factor known, with true
  counterfactual renders (:mod:`gancore_synth.synthfaces`)
- ``synthchairs`` (data) — chair-like objects seen from 31 azimuths × 2 elevations
  (:mod:`gancore_synth.synthchairs`)
- CLI verb ``gancore data export|preview`` — write any source in a real dataset's layout
  (:mod:`gancore_synth.export`), or a PNG of samples and labelled factor sweeps
  (:mod:`gancore_synth.preview`)

Both sources are drawn by a small batched ray caster in pure PyTorch
(:mod:`gancore_synth.render`).
"""

from __future__ import annotations

__version__ = "0.1.0"
