"""Image and latent quality metrics: SSIM (Wang et al. 2004, Gaussian window), PSNR, latent MSE.

``ssim`` is a torch port of ``skimage.metrics.structural_similarity(a, b, channel_axis=0,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` and is tested
against it to 1e-6 (``tests/test_search_metrics.py``): an 11×11 Gaussian window (σ = 1.5,
truncated at 3.5σ), K1 = 0.01, K2 = 0.03, population covariances, the SSIM map averaged over the
pixels whose window lies fully inside the image (scikit-image crops the 5-pixel border after
filtering with reflect padding; a "valid" convolution gives exactly those pixels), then over
channels. Computed in float64.

Images are ``(B, C, H, W)`` (or ``(C, H, W)``) in ``[0, data_range]``; H and W must be ≥ 11.
Every function returns one value per image so callers can average or keep per-prompt numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "latent_mse", "psnr", "ssim"]

_K1, _K2 = 0.01, 0.03


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The normalized 1-D Gaussian of ``scipy.ndimage.gaussian_filter`` (radius ``int(3.5σ+0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _batched(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def ssim(
    a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, sigma: float = 1.5
) -> torch.Tensor:
    """Mean SSIM of each image pair: shape ``(B,)``, float64.

    Args:
        a, b: images ``(B, C, H, W)`` or ``(C, H, W)`` with values in ``[0, data_range]``.
        data_range: the value range (1 for images in [0, 1]).
        sigma: standard deviation of the Gaussian window, in pixels.

    Raises:
        ValueError: shapes differ or an image side is smaller than the window (11 px).
    """
    a, b = _batched(a, "a"), _batched(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    w1 = gaussian_window(sigma)
    k = w1.numel()
    if min(a.shape[-2:]) < k:
        raise ValueError(
            f"images of {a.shape[-2]}×{a.shape[-1]} px are smaller than the {k}×{k} SSIM window; "
            "compare decoded images, not latents"
        )
    batch, channels = a.shape[:2]
    # One depthwise separable conv over the 5 statistics of every channel.
    x = torch.cat([a, b, a * a, b * b, a * b], dim=1).reshape(
        batch * 5 * channels, 1, *a.shape[-2:]
    )
    x = F.conv2d(x, w1.view(1, 1, k, 1))
    x = F.conv2d(x, w1.view(1, 1, 1, k))
    ux, uy, uxx, uyy, uxy = x.reshape(batch, 5, channels, *x.shape[-2:]).unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-1, -2)).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image pair, shape ``(B,)``; identical images give ``inf``."""
    a, b = _batched(a, "a"), _batched(b, "b")
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    out = 10 * torch.log10(data_range**2 / mse)
    return torch.where(mse > 0, out, torch.full_like(out, math.inf))


def latent_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of each latent pair, shape ``(B,)`` (any trailing shape)."""
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"latent shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).pow(2).reshape(a.shape[0], -1).mean(dim=1)
