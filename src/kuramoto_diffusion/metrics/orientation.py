"""Local orientation statistics (structure tensor) and, for fingerprints, the ridge frequency.

Angle convention: x points right (columns), y points up on screen (against the row index), and
angles run counter-clockwise from +x. Orientation is axial, φ ∈ [0, π): the direction along which
the image is locally constant, so horizontal stripes have φ = 0 and vertical stripes φ = π/2.

The structure tensor J = G_window * (∇I ∇Iᵀ) uses derivative-of-Gaussian gradients (scale
``gradient_sigma`` px) and a Gaussian window (``window_sigma`` px); for RGB the channels' tensors
are summed (Di Zenzo), so colour edges count like gray ones. With eigenvalues λ1 ≥ λ2 of J,
coherence = (λ1 − λ2) / (λ1 + λ2) ∈ [0, 1]: 1 for a perfect line pattern, near 0 for isotropic
texture, and 0 where the image is flat.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .pixels import check_image_pair, check_images, wasserstein_1d
from .spectrum import radial_bin_index

# Below this gradient energy (λ1 + λ2) a pixel counts as flat: coherence 0, no orientation weight.
# One gray level of an 8-bit image (2/255) already gives ≈ 6e-5.
_FLAT_ENERGY = 1e-10

# ridge_frequency averages the frequency radius over ±this many bins around the spectral peak.
_PEAK_HALF_WIDTH = 1.5


def _gaussian_taps(sigma: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Sampled Gaussian (sums to 1) and its derivative (gives slope 1 on a unit ramp), radius ⌈3σ⌉."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    gaussian = torch.exp(-0.5 * (offsets / sigma) ** 2)
    gaussian = gaussian / gaussian.sum()
    derivative = offsets * gaussian
    return gaussian, derivative / (offsets * derivative).sum()


def _separable_filter(images: Tensor, row_taps: Tensor, col_taps: Tensor) -> Tensor:
    """Correlate each channel with row_taps along x and col_taps along y; mirrored borders."""
    channels, radius = images.shape[1], row_taps.numel() // 2
    # Mirroring needs the image to be wider than the kernel radius; tiny images repeat the edge instead.
    mode = "reflect" if radius < min(images.shape[2:]) else "replicate"
    padded = F.pad(images, (radius, radius, radius, radius), mode=mode)
    along_x = F.conv2d(padded, row_taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(along_x, col_taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _check_sigma(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e3:
        raise UserError(f"{name} must be a positive number of pixels, got {value!r}")
    return float(value)


def structure_tensor_orientation(
    images: Tensor, gradient_sigma: float = 1.0, window_sigma: float = 2.0
) -> tuple[Tensor, Tensor]:
    """Per-pixel orientation φ ∈ [0, π) (radians) and coherence ∈ [0, 1], each (N, H, W) float64."""
    images = check_images(images)
    gaussian, derivative = _gaussian_taps(_check_sigma(gradient_sigma, "gradient_sigma"), images.dtype)
    window, _ = _gaussian_taps(_check_sigma(window_sigma, "window_sigma"), images.dtype)
    grad_x = _separable_filter(images, derivative, gaussian)
    grad_y = -_separable_filter(images, gaussian, derivative)  # rows grow downwards, y grows upwards

    def windowed(product: Tensor) -> Tensor:
        return _separable_filter(product, window, window).sum(dim=1)  # sum over channels (Di Zenzo)

    j_xx, j_yy, j_xy = windowed(grad_x * grad_x), windowed(grad_y * grad_y), windowed(grad_x * grad_y)
    energy = j_xx + j_yy
    anisotropy = torch.sqrt((j_xx - j_yy) ** 2 + 4.0 * j_xy**2)  # λ1 − λ2
    coherence = torch.where(energy > _FLAT_ENERGY, anisotropy / energy.clamp_min(_FLAT_ENERGY), 0.0).clamp(0.0, 1.0)
    # The dominant gradient points at 0.5·atan2(2Jxy, Jxx − Jyy); the structure runs across it.
    gradient_angle = 0.5 * torch.atan2(2.0 * j_xy, j_xx - j_yy)
    orientation = torch.remainder(gradient_angle + 0.5 * math.pi, math.pi)
    # remainder can round up to exactly π; fold it back into [0, π).
    orientation = torch.where(orientation >= math.pi, orientation - math.pi, orientation)
    return orientation, coherence


def orientation_histogram(
    images: Tensor, bins: int = 36, gradient_sigma: float = 1.0, window_sigma: float = 2.0
) -> Tensor:
    """(bins,) coherence-weighted histogram of φ over all pixels of all images, summing to 1.

    Bin k covers [k·π/bins, (k+1)·π/bins). A set without any oriented structure (all flat)
    has no preferred orientation and gets the uniform histogram.
    """
    _check_bins(bins)
    return _weighted_histogram(*structure_tensor_orientation(images, gradient_sigma, window_sigma), bins)


def _check_bins(bins: object) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise UserError(f"bins must be an integer >= 2, got {bins!r}")
    return bins


def _weighted_histogram(orientation: Tensor, coherence: Tensor, bins: int) -> Tensor:
    index = (orientation.flatten() * (bins / math.pi)).long().clamp(0, bins - 1)
    histogram = torch.bincount(index, weights=coherence.flatten(), minlength=bins)
    total = histogram.sum()
    return histogram / total if total > 0 else torch.full((bins,), 1.0 / bins, dtype=torch.float64)


def circular_wasserstein(p: Tensor | np.ndarray, q: Tensor | np.ndarray, period: float = math.pi) -> float:
    """Exact Wasserstein-1 distance between two histograms on a circle of circumference ``period``.

    Bins are equal arcs with their mass at the bin centres; both histograms are normalised to sum 1.
    With D the cumulative sum of p − q over the bins, W1 = bin_width · Σ |D − median(D)|: on a circle
    the flow across every bin boundary can be shifted by one constant, and the median minimises the
    total (Rabin, Delon & Gousseau 2011). In the units of ``period`` (radians for axial angles, so at
    most π/2 with the default π).
    """
    p_arr, q_arr = _as_histogram(p, "p"), _as_histogram(q, "q")
    if p_arr.shape != q_arr.shape:
        raise UserError(f"histograms must have the same number of bins, got {p_arr.size} and {q_arr.size}")
    cumulative_difference = np.cumsum(p_arr - q_arr)
    bin_width = float(period) / p_arr.size
    return float(bin_width * np.abs(cumulative_difference - np.median(cumulative_difference)).sum())


def _as_histogram(values: Tensor | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if array.ndim != 1 or array.size < 1:
        raise UserError(f"histogram {name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any() or array.sum() <= 0:
        raise UserError(f"histogram {name} must be finite and non-negative with a positive sum")
    return array / array.sum()


def orientation_distance(
    real: Tensor, fake: Tensor, bins: int = 36, gradient_sigma: float = 1.0, window_sigma: float = 2.0
) -> dict[str, float]:
    """{"orientation_w1": circular W1 between the sets' orientation histograms (radians, ≤ π/2),
    "coherence_gap": |mean coherence of real − mean coherence of fake| (coherence is in [0, 1])}."""
    real_t, fake_t = check_image_pair(real, fake)
    _check_bins(bins)
    real_orientation, real_coherence = structure_tensor_orientation(real_t, gradient_sigma, window_sigma)
    fake_orientation, fake_coherence = structure_tensor_orientation(fake_t, gradient_sigma, window_sigma)
    return {
        "orientation_w1": circular_wasserstein(
            _weighted_histogram(real_orientation, real_coherence, bins),
            _weighted_histogram(fake_orientation, fake_coherence, bins),
        ),
        "coherence_gap": abs(float(real_coherence.mean()) - float(fake_coherence.mean())),
    }


def ridge_frequency(images: Tensor, min_cycles_per_image: float = 3.0) -> Tensor:
    """(N,) dominant spatial frequency of each image in cycles per pixel (1 / ridge period in px).

    Each image (mean removed, channels averaged in power) is tapered by a 2-D Hann window so that
    its borders do not leak power across the spectrum. The peak of the radially averaged power
    (integer radius bins, as in spectrum.py) locates the ridges; the estimate is the power-weighted
    mean of the exact frequency radius over the frequencies within ±1.5 bins of that peak, which
    resolves periods between bins (error below 1 % on clean gratings). Radii below
    ``min_cycles_per_image`` are skipped: the fingertip outline and uneven pressure put power there.
    A flat image has no ridges and gets 0.
    """
    images = check_images(images)
    n, _, height, width = images.shape
    side = min(height, width)
    lowest = max(1, math.ceil(float(min_cycles_per_image)))
    if lowest > side // 2:
        raise UserError(
            f"images of {side} px are too small for min_cycles_per_image={min_cycles_per_image}; "
            "lower it or use larger images"
        )
    hann_y = torch.hann_window(height, periodic=False, dtype=images.dtype)
    hann_x = torch.hann_window(width, periodic=False, dtype=images.dtype)
    taper = hann_y[:, None] * hann_x[None, :]
    centred = images - images.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(centred * taper).abs().square().mean(dim=1).flatten(1)  # (N, H·W)

    bin_index = radial_bin_index(height, width).flatten()
    num_bins = int(bin_index.max()) + 1
    bin_power = power.new_zeros(n, num_bins).index_add_(1, bin_index, power)
    bin_mean = bin_power / torch.bincount(bin_index, minlength=num_bins).clamp_min(1)
    peak = lowest + bin_mean[:, lowest : side // 2 + 1].argmax(dim=1)  # up to Nyquist along the axes

    radius = torch.hypot(
        torch.fft.fftfreq(height, dtype=images.dtype)[:, None] * side,
        torch.fft.fftfreq(width, dtype=images.dtype)[None, :] * side,
    ).flatten()
    near_peak = (radius[None, :] - peak[:, None]).abs() <= _PEAK_HALF_WIDTH
    weights = power * near_peak
    return (weights * radius).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-300) / side


def ridge_frequency_w1(real: Tensor, fake: Tensor, min_cycles_per_image: float = 3.0) -> float:
    """Wasserstein-1 distance between the two sets' per-image ridge frequencies, in cycles per pixel."""
    real_t, fake_t = check_image_pair(real, fake)
    real_frequencies = ridge_frequency(real_t, min_cycles_per_image)
    return float(wasserstein_1d(real_frequencies, ridge_frequency(fake_t, min_cycles_per_image)))
