"""gancore-caae: the Conditional Adversarial Autoencoder of Zhang, Song & Qi (CVPR 2017).

An encoder E maps a face to a personality code z in (-1, 1)^50, a generator G decodes
[z, age label] back to a face, D_z pushes z towards a uniform prior and D_img, conditioned
on the age label, judges the faces.  At test time a face is encoded once and decoded at
each of the 10 age groups (:data:`gancore_caae.labels.AGE_GROUPS`).

Parts: ``caae.encoder``, ``caae.generator``, ``caae.dz``, ``caae.dimg``; schedule
``caae.aae``; metric ``caae.age``; CLI verb ``gancore age``.
"""

from __future__ import annotations

__version__ = "0.1.0"
