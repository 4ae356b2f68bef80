"""Pixel-value statistics, plus the input checks and 1-D Wasserstein distance the other metrics share.

Every metric takes two image batches ``real`` and ``fake``: torch tensors (N, C, H, W), C = 1
(grayscale) or 3 (RGB), values nominally in [-1, 1]. The two sets may hold different numbers
of images but must agree in C, H and W. Values slightly outside [-1, 1] (a sampler's overshoot)
are accepted and measured as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError


def check_images(images: object, name: str = "images") -> Tensor:
    """Validate one batch and return it as a detached float64 CPU tensor (N, C, H, W)."""
    if not isinstance(images, Tensor):
        raise UserError(f"{name} must be a torch tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise UserError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}; add the missing axes")
    if images.shape[1] not in (1, 3):
        raise UserError(f"{name} must have 1 or 3 channels on axis 1, got shape {tuple(images.shape)}")
    if images.shape[0] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
        raise UserError(f"{name} is empty (shape {tuple(images.shape)}); pass at least one image")
    if images.dtype == torch.uint8:
        raise UserError(f"{name} is uint8; convert it to float in [-1, 1] first (x / 127.5 - 1)")
    if not images.is_floating_point():
        raise UserError(f"{name} must be a float tensor with values in [-1, 1], got dtype {images.dtype}")
    images = images.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(images).all():
        raise UserError(f"{name} contains NaN or infinite values; fix the images before measuring them")
    return images


def check_image_pair(real: object, fake: object) -> tuple[Tensor, Tensor]:
    """Validate both batches (float64, CPU) and that they agree in channels and size."""
    real_t, fake_t = check_images(real, "real"), check_images(fake, "fake")
    if real_t.shape[1:] != fake_t.shape[1:]:
        raise UserError(
            f"real and fake must agree in (C, H, W), got {tuple(real_t.shape[1:])} and {tuple(fake_t.shape[1:])}; "
            "resize or convert one set"
        )
    return real_t, fake_t


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """Exact Wasserstein-1 distance between the empirical distributions of samples a and b.

    a: (..., n), b: (..., m), same leading shape; the distance is taken along the last axis and
    returned (float64) with the leading shape, in the units of the samples. n and m may differ:
    W1 = ∫₀¹ |Q_a(t) − Q_b(t)| dt with the quantile functions Q piecewise constant between the
    levels i/n and j/m, which for n = m is mean |sort(a) − sort(b)|.
    """
    n, m = a.shape[-1], b.shape[-1]
    if n == 0 or m == 0 or a.shape[:-1] != b.shape[:-1]:
        raise UserError(
            f"wasserstein_1d needs samples (..., n) and (..., m) with n, m >= 1 and equal leading axes, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    # numpy's SIMD sort is several times faster than torch.sort on CPU, and sorting is the whole cost.
    sorted_a = np.sort(a.detach().cpu().to(torch.float64).numpy(), axis=-1)
    sorted_b = np.sort(b.detach().cpu().to(torch.float64).numpy(), axis=-1)
    # Quantile levels where either Q_a or Q_b steps, as exact integers in units of 1 / (n·m).
    levels = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)
    widths = np.diff(levels, prepend=0) / (n * m)
    twice_midpoints = levels + np.concatenate([[0], levels[:-1]])
    # On the interval around level t, Q_a takes sample floor(t·n) of the sorted a (likewise for b).
    index_a, index_b = twice_midpoints // (2 * m), twice_midpoints // (2 * n)
    gaps = np.abs(sorted_a[..., index_a] - sorted_b[..., index_b])
    return torch.from_numpy(np.asarray(gaps @ widths))


def pixel_histogram_w1(real: Tensor, fake: Tensor) -> float:
    """Wasserstein-1 distance between the pixel-value distributions of the two sets.

    Exact (no histogram binning), computed per channel over all pixels of all images and averaged
    over channels; in pixel-value units (images in [-1, 1], so 0.01 is half a percent of the range).
    """
    real_t, fake_t = check_image_pair(real, fake)
    per_channel_real = real_t.transpose(0, 1).reshape(real_t.shape[1], -1)
    per_channel_fake = fake_t.transpose(0, 1).reshape(fake_t.shape[1], -1)
    return float(wasserstein_1d(per_channel_real, per_channel_fake).mean())


def tiling_seam_ratio(images: Tensor) -> float:
    """How visible the seam is when each image is tiled: the mean |difference| across the wrap-around
    edges (last column to first, last row to first) over the mean |difference| between neighbouring
    pixels inside the image. About 1 for seamlessly tileable images; larger when the edges do not meet.
    """
    images = torch.as_tensor(images, dtype=torch.float64)
    if images.dim() != 4 or min(images.shape[-2:]) < 2:
        raise UserError(f"tiling_seam_ratio needs images (N, C, H, W) with H, W ≥ 2, got {tuple(images.shape)}")
    across = torch.cat(
        [(images[..., :, 0] - images[..., :, -1]).flatten(), (images[..., 0, :] - images[..., -1, :]).flatten()]
    )
    inside = torch.cat([images.diff(dim=-1).flatten(), images.diff(dim=-2).flatten()])
    return float(across.abs().mean() / inside.abs().mean().clamp_min(1e-12))
