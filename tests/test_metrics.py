"""The helpers metrics share (gancore.metrics): per-sample means and PSNR."""

from __future__ import annotations

import math

import torch

from gancore.metrics import PSNR_CAP, per_sample_mean, psnr


def test_per_sample_mean_plain_and_masked() -> None:
    v = torch.arange(8.0).view(2, 1, 2, 2)  # sample 0: 0..3, sample 1: 4..7
    assert per_sample_mean(v).tolist() == [1.5, 5.5]
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2).expand(2, 1, 2, 2).clone()
    mask[1] = 0  # an empty mask gives NaN, not 0 (and no division error)
    out = per_sample_mean(v, mask)
    assert out[0].item() == 1.5 and math.isnan(out[1].item())


def test_psnr_float_and_tensor_agree_and_cap() -> None:
    # images in [-1, 1]: an MSE of 0.04 is 0.01 on the [0, 1] scale, i.e. 20 dB
    assert abs(psnr(0.04) - 20.0) < 1e-9 and isinstance(psnr(0.04), float)
    t = psnr(torch.tensor([0.04, 4.0, 0.0]))
    assert torch.allclose(t, torch.tensor([20.0, 0.0, PSNR_CAP]))
    assert psnr(0.0) == PSNR_CAP
