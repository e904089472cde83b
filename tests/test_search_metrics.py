"""SSIM/PSNR/latent MSE of ``tmpdiff_core.search.metrics`` against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tmpdiff_core.search.metrics import latent_mse, psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def _sk_ssim(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return [
        skimage_metrics.structural_similarity(
            a[i].numpy().astype(np.float64),
            b[i].numpy().astype(np.float64),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1,
        )
        for i in range(a.shape[0])
    ]


@pytest.mark.parametrize(
    ("shape", "noise"),
    [((3, 3, 32, 32), 0.1), ((2, 1, 11, 11), 0.3), ((2, 3, 24, 40), 0.02), ((1, 4, 17, 13), 0.5)],
)
def test_ssim_matches_skimage(shape, noise):
    gen = torch.Generator().manual_seed(sum(shape))
    a = torch.rand(shape, generator=gen)
    b = (a + noise * torch.randn(shape, generator=gen)).clamp(0, 1)
    ours = ssim(a, b)
    assert ours.shape == (shape[0],)
    np.testing.assert_allclose(ours.numpy(), _sk_ssim(a, b), rtol=0, atol=1e-6)


def test_ssim_on_flat_and_structured_images():
    """Flat regions (where SSIM is most sensitive) and a smooth/sharp mix, as in emoji."""
    a = torch.full((1, 3, 24, 24), 0.9)
    a[..., 6:18, 6:18] = 0.2
    b = a.clone()
    b[..., 10:14, :] += 0.05
    np.testing.assert_allclose(ssim(a, b).numpy(), _sk_ssim(a, b), atol=1e-6)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_rejects_small_images_and_shape_mismatch():
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))


def test_psnr_and_latent_mse():
    a = torch.zeros(2, 3, 16, 16)
    b = a.clone()
    b[1] += 0.1
    p = psnr(a, b)
    assert math.isinf(p[0].item())
    assert p[1].item() == pytest.approx(20.0)
    lat = latent_mse(torch.zeros(2, 5, 7), torch.ones(2, 5, 7) * 0.5)
    assert lat.tolist() == pytest.approx([0.25, 0.25])
