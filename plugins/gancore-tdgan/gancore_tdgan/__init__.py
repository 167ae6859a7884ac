"""gancore-tdgan: Tag Disentangled GAN of Wang, Wang, Xu & Tao (IJCAI 2017).

A disentangling network R maps an image to one representation block per tag type
(identity, view; for faces also light and expression), a tag mapping net g maps each
one-hot tag into the same space, a generator G renders the concatenated blocks, and a
discriminator D judges G(R(x)).  Re-rendering: R(x) with one or more blocks replaced by
g(new tag), through G.  Untagged images (semi-supervised mode) are autoencoded through R
and G.

Parts: ``tdgan.disentangler`` (R), ``tdgan.tagnet`` (g), ``tdgan.generator`` (G),
``tdgan.discriminator`` (D); loss terms ``tdgan.f1``, ``tdgan.f2``, ``tdgan.f3``,
``tdgan.f1u`` (f̃1); schedule ``tdgan.alternating``; metric ``tdgan.rerender``; CLI verb
``gancore rerender``.
"""

from __future__ import annotations

__version__ = "0.1.0"
