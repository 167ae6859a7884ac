"""gancore-drgan: DR-GAN of Tran, Yin & Liu (CVPR 2017; TPAMI 2018), single- and multi-image.

G is an encoder–decoder: G_enc maps a face to an identity feature f(x) (and, multi-image,
a confidence ω); G_dec renders [f(x), pose code c, noise z] as the same identity at pose c.
D classifies identity (N_d classes plus one "synthetic" class) and pose (N_p classes).
f(x) serves both face recognition (cosine similarity) and rotation to any pose.

Parts: ``drgan.encoder``, ``drgan.decoder``, ``drgan.discriminator``; losses
``drgan.identity``, ``drgan.pose``, ``drgan.synthetic``; schedule ``drgan.schedule``;
metric ``drgan.recognition``; CLI verbs ``gancore rotate`` and ``gancore verify``.
"""

from __future__ import annotations

__version__ = "0.1.0"
