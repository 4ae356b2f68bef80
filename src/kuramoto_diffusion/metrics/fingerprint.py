"""Fingerprint structure: singular points (cores, deltas) and minutiae (ridge endings, bifurcations).

Both are per-image counts, and two sets are compared by the Wasserstein-1 distance between their
per-image distributions. They are defined for any image (colour is averaged to grey first): on a
fingerprint they count the features an examiner would; on another texture they count the defects of
its orientation field and the ends and forks of its dark line network. Length parameters default to
fractions of the image side ``S = min(H, W)``, tuned on the synthetic prints (ridge period ≈ 0.09 S,
3 px at 32 px).

**Singular points.** The orientation field is the structure tensor's doubled-angle vector
v = G_w * (g_x² − g_y², 2 g_x g_y) (derivative-of-Gaussian gradients of scale ``gradient_sigma``, a
Gaussian window of S/16 px: the smoothing). The Poincaré index at a pixel is the winding number of v
along a circle of radius S/16 around it (16 bilinear samples), divided by 2 for the orientation
itself: +1/2 at a core (the ridges turn by +π around it), −1/2 at a delta. Loops count only inside
the print (window energy ≥ 0.3 × the image's maximum) where the orientation on the circle is
coherent (mean coherence ≥ 0.4), and that region is eroded by the radius, so that every counted point
is ringed by good loops; noise elsewhere makes spurious pairs.
Connected regions of index +1/2 are cores, of −1/2 deltas; a core and a delta closer than S/8 are a
noise dipole and both are dropped.

**Minutiae.** Ridges (dark) are the pixels below their local Gaussian mean (σ = S/16 px), thinned to a
one-pixel skeleton (scikit-image's ``skeletonize``). On the skeleton the crossing number
CN = ½ Σ |P_{k+1} − P_k| over the 8 neighbours in cyclic order is 1 at a ridge ending and 3 at a
bifurcation. They are counted inside the print (local contrast ≥ 0.3 × the image's maximum, eroded by
S/8 px so that ridges cut off at the print's edge do not count as endings, and S/8 px away from the
image border), and divided by that area: minutiae per 1000 px².

Broken ridges raise the ending count; a well-formed print has few. At 32 px the binarisation is
coarse and many minutiae are artefacts of it, so compare sets only at one image size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import skeletonize
from torch import Tensor

from .orientation import _gaussian_taps, _separable_filter
from .pixels import check_image_pair, check_images, wasserstein_1d

# Tuned on the synthetic prints at 32, 64 and 96 px (see tests/metrics/test_fingerprint.py): at 32 px
# about 70 % of the true cores are found and fewer than 0.1 spurious cores per print appear.
GRADIENT_SIGMA = 0.7  # px; the ridge period is only 3 px at 32 px, so the gradient scale stays small
ENERGY_FRACTION = 0.3  # foreground: window energy (or local contrast) ≥ this × the image's maximum
MIN_COHERENCE = 0.4  # the loop around a singular point must see a clear orientation
LOOP_SAMPLES = 16
MINUTIAE_PER_AREA = 1000.0  # densities are per 1000 px²

# The 8 neighbours of a pixel in cyclic order (row, col offsets), for the crossing number.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _grey(images: Tensor) -> Tensor:
    """(N, 1, H, W) float64: the channel mean of validated images."""
    return check_images(images).mean(dim=1, keepdim=True)


def _default_scale(images: Tensor) -> float:
    return min(images.shape[-2:]) / 16.0


def doubled_angle_field(images: Tensor, window_sigma: float | None = None) -> tuple[Tensor, Tensor]:
    """The smoothed doubled-angle orientation vector (N, 2, H, W) and the window energy (N, H, W), float64.

    The vector is (J_xx − J_yy, 2 J_xy) of the structure tensor in (column, row) pixel coordinates; its
    angle is twice the gradient direction, so it is continuous across the ±π ambiguity of orientation.
    """
    grey = _grey(images)
    sigma = _default_scale(grey) if window_sigma is None else window_sigma
    gaussian, derivative = _gaussian_taps(GRADIENT_SIGMA, grey.dtype)
    window, _ = _gaussian_taps(sigma, grey.dtype)
    grad_col = _separable_filter(grey, derivative, gaussian)
    grad_row = _separable_filter(grey, gaussian, derivative)
    vector = torch.cat(
        [
            _separable_filter(grad_col**2 - grad_row**2, window, window),
            _separable_filter(2.0 * grad_col * grad_row, window, window),
        ],
        dim=1,
    )
    energy = _separable_filter(grad_col**2 + grad_row**2, window, window)[:, 0]
    return vector, energy


def poincare_index(vector: Tensor, radius: float, energy: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Poincaré index (in units of 1/2: integers, +1 core, −1 delta) of a doubled-angle field, and loop coherence.

    ``vector`` (N, 2, H, W) holds a doubled-angle vector per pixel (row, column grid). At each pixel the
    winding number of its angle along a circle of ``radius`` px (``LOOP_SAMPLES`` bilinear samples,
    from +col towards +row) is returned as (N, H, W) int64. The second output (N, H, W) is the
    mean of |vector| / energy on the circle (the coherence, in [0, 1]; 1 where ``energy`` is None).
    """
    batch, _, height, width = vector.shape
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    angles, coherences = [], []
    for k in range(LOOP_SAMPLES):
        turn = 2.0 * math.pi * k / LOOP_SAMPLES
        col, row = cols + radius * math.cos(turn), rows + radius * math.sin(turn)
        grid = torch.stack([2.0 * col / max(width - 1, 1) - 1.0, 2.0 * row / max(height - 1, 1) - 1.0], dim=-1)
        grid = grid.expand(batch, -1, -1, -1)
        sample = F.grid_sample(vector, grid, mode="bilinear", padding_mode="border", align_corners=True)
        angles.append(torch.atan2(sample[:, 1], sample[:, 0]))
        if energy is None:
            coherences.append(torch.ones_like(sample[:, 0]))
        else:
            at = F.grid_sample(energy[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
            coherences.append(
                (torch.sqrt(sample[:, 0] ** 2 + sample[:, 1] ** 2) / at.clamp_min(1e-300)).clamp(0.0, 1.0)
            )
    loop = torch.stack(angles + angles[:1])
    steps = torch.remainder(loop[1:] - loop[:-1] + math.pi, 2.0 * math.pi) - math.pi  # each step wrapped to (−π, π]
    # The field's angle and the loop are both measured in (col, row) coordinates; a mirror flips both the loop's
    # sense and the field's winding, so the index does not depend on which way the rows grow.
    index = torch.round(steps.sum(dim=0) / (2.0 * math.pi)).to(torch.int64)
    return index, torch.stack(coherences).mean(dim=0)


def _points(index: np.ndarray, sign: int) -> list[np.ndarray]:
    """Centroids (row, col) of the connected regions of index·sign > 0, each repeated |index| times."""
    labels, count = ndimage.label(index * sign > 0)
    points = []
    for label in range(1, count + 1):
        region = labels == label
        points += [np.argwhere(region).mean(axis=0)] * int(np.abs(index[region]).max())
    return points


def _drop_dipoles(cores: list[np.ndarray], deltas: list[np.ndarray], distance: float) -> tuple[list, list]:
    """Remove the closest core–delta pairs while they are nearer than ``distance`` px (noise dipoles)."""
    while cores and deltas:
        gaps = np.array([[np.hypot(*(core - delta)) for delta in deltas] for core in cores])
        i, j = np.unravel_index(gaps.argmin(), gaps.shape)
        if gaps[i, j] >= distance:
            break
        cores.pop(i)
        deltas.pop(j)
    return cores, deltas


def singular_points_from_field(
    vector: Tensor, valid: Tensor, radius: float, dipole_distance: float
) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per image, the (cores, deltas) positions (row, col) px of a doubled-angle field (N, 2, H, W).

    ``valid`` (N, H, W) bool marks the pixels where the loop (radius ``radius`` px) may be centred; core–delta
    pairs nearer than ``dipole_distance`` px are dropped. Exposed for tests on analytic fields.
    """
    index, _ = poincare_index(vector, radius)
    return _singular_points_from_index(index, valid, dipole_distance)


def _singular_points_from_index(
    index: Tensor, valid: Tensor, dipole_distance: float
) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    masked = (index * valid).numpy()
    return [_drop_dipoles(_points(image, 1), _points(image, -1), dipole_distance) for image in masked]


def singular_points(images: Tensor) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per image, the positions (row, col) px of its cores and its deltas. Images (N, C, H, W) in [-1, 1]."""
    vector, energy = doubled_angle_field(images)
    scale = _default_scale(vector)
    index, coherence = poincare_index(vector, scale, energy)
    peak = energy.flatten(1).amax(dim=1).clamp_min(1e-300)[:, None, None]
    valid = ((energy >= ENERGY_FRACTION * peak) & (coherence >= MIN_COHERENCE)).numpy()
    # Erode by the loop radius: every loop must lie in the print (the image border counts as outside), and a
    # singular point must be ringed by coherent loops; noise leaves isolated incoherent specks with index ±1.
    cross = ndimage.generate_binary_structure(2, 1)[None]
    valid = ndimage.binary_erosion(valid, structure=cross, iterations=math.ceil(scale), border_value=0)
    return _singular_points_from_index(index, torch.from_numpy(valid), 2.0 * scale)


def singular_point_counts(images: Tensor) -> Tensor:
    """(N, 2) float64: the numbers of cores and of deltas in each image."""
    points = singular_points(images)
    return torch.tensor([[len(cores), len(deltas)] for cores, deltas in points], dtype=torch.float64)


def singular_points_w1(real: Tensor, fake: Tensor) -> float:
    """W1 between the sets' per-image core counts plus W1 between their delta counts (points per image, ≥ 0).

    Cores and deltas are compared separately so that a set which swaps one for the other is not scored 0.
    """
    real_t, fake_t = check_image_pair(real, fake)
    real_counts, fake_counts = singular_point_counts(real_t), singular_point_counts(fake_t)
    return float(wasserstein_1d(real_counts.T, fake_counts.T).sum())


def crossing_numbers(skeleton: np.ndarray) -> np.ndarray:
    """Crossing number ½ Σ |P_{k+1} − P_k| of every skeleton pixel (int, 0 off the skeleton), (H, W)."""
    padded = np.pad(skeleton.astype(np.int64), 1)
    height, width = skeleton.shape
    ring = [padded[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width] for dr, dc in _RING]
    crossings = sum(np.abs(ring[(k + 1) % 8] - ring[k]) for k in range(8)) // 2
    return crossings * skeleton


def minutiae(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, (ridge endings, bifurcations) as densities per 1000 px² of the evaluated area, each (N,) float64.

    An image without any evaluated area (flat, or smaller than the margins) gets density 0.
    """
    grey = _grey(images)
    scale = _default_scale(grey)
    window, _ = _gaussian_taps(scale, grey.dtype)
    local_mean = _separable_filter(grey, window, window)
    contrast = _separable_filter((grey - local_mean) ** 2, window, window).sqrt()[:, 0].numpy()
    ridges = (grey < local_mean)[:, 0].numpy()  # ridges are dark
    margin = max(1, math.ceil(2.0 * scale))
    endings, bifurcations = [], []
    for ridge, local_contrast in zip(ridges, contrast):
        inside = local_contrast >= ENERGY_FRACTION * max(float(local_contrast.max()), 1e-300)
        inside = ndimage.binary_erosion(inside, iterations=margin, border_value=0)
        area = int(inside.sum())
        if area == 0:
            endings.append(0.0)
            bifurcations.append(0.0)
            continue
        crossings = crossing_numbers(skeletonize(ridge)) * inside
        endings.append(MINUTIAE_PER_AREA * float((crossings == 1).sum()) / area)
        bifurcations.append(MINUTIAE_PER_AREA * float((crossings == 3).sum()) / area)
    return torch.tensor(endings, dtype=torch.float64), torch.tensor(bifurcations, dtype=torch.float64)


def minutiae_w1(real: Tensor, fake: Tensor) -> float:
    """W1 between the sets' per-image ending densities plus W1 between their bifurcation densities (per 1000 px²)."""
    real_t, fake_t = check_image_pair(real, fake)
    real_density, fake_density = torch.stack(minutiae(real_t)), torch.stack(minutiae(fake_t))
    return float(wasserstein_1d(real_density, fake_density).sum())
