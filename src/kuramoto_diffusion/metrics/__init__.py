"""Image-quality metrics that compare a set of generated images with a set of real ones.

All take torch tensors (N, C, H, W), C = 1 or 3, values in [-1, 1]; the sets may differ in N.
Lower is better for every metric, and each is 0 (FID/KID: about 0) for a set against itself.

Weight-free (always available, nothing downloaded):

- swd.laplacian_swd: sliced Wasserstein distance of Laplacian-pyramid patches (×1e3, per level and mean);
- orientation.orientation_distance: structure-tensor orientation histograms (circular W1, radians)
  and the gap in mean coherence;
- spectrum.log_spectral_distance: RMS dB difference of the radially averaged power spectra;
- pixels.pixel_histogram_w1: W1 between pixel-value distributions;
- orientation.ridge_frequency_w1: W1 between per-image ridge frequencies (cycles/px), for fingerprints;
- pixels.tiling_seam_ratio: how visible the wrap-around seam of tiled images is (≈ 1: tileable);
- kid_random.kid_random: unbiased KID (MMD², cubic kernel) on a fixed, seeded, untrained ConvNet's
  features (comparable only within this project);
- fingerprint.singular_points_w1: W1 between per-image counts of cores plus that of deltas (Poincaré index);
- fingerprint.minutiae_w1: W1 between per-image densities of ridge endings plus that of bifurcations
  (per 1000 px², from a skeleton of the binarised dark ridges).

docs/metrics.md describes the structure metrics and how their tests check them.

With a local Inception file (fid.load_inception): FID and KID.
"""

from __future__ import annotations

import os

from torch import Tensor

from .fid import (
    INCEPTION_URL,
    feature_statistics,
    fid_kid,
    frechet_distance,
    inception_features,
    kernel_inception_distance,
    load_inception,
)
from .fingerprint import minutiae, minutiae_w1, singular_point_counts, singular_points, singular_points_w1
from .kid_random import RandomFeatureNet, kid_random, unbiased_mmd2
from .orientation import (
    circular_wasserstein,
    orientation_distance,
    orientation_histogram,
    ridge_frequency,
    ridge_frequency_w1,
    structure_tensor_orientation,
)
from .pixels import check_image_pair, pixel_histogram_w1, tiling_seam_ratio, wasserstein_1d
from .spectrum import log_spectral_distance, radial_power_profiles, radial_power_spectrum
from .swd import laplacian_pyramid, laplacian_swd, sliced_wasserstein

__all__ = [
    "INCEPTION_URL",
    "RandomFeatureNet",
    "check_image_pair",
    "circular_wasserstein",
    "evaluate_images",
    "feature_statistics",
    "fid_kid",
    "frechet_distance",
    "inception_features",
    "kernel_inception_distance",
    "kid_random",
    "laplacian_pyramid",
    "load_inception",
    "log_spectral_distance",
    "minutiae",
    "minutiae_w1",
    "orientation_distance",
    "orientation_histogram",
    "pixel_histogram_w1",
    "radial_power_profiles",
    "radial_power_spectrum",
    "ridge_frequency",
    "ridge_frequency_w1",
    "singular_point_counts",
    "singular_points",
    "singular_points_w1",
    "sliced_wasserstein",
    "structure_tensor_orientation",
    "tiling_seam_ratio",
    "laplacian_swd",
    "unbiased_mmd2",
    "wasserstein_1d",
]


def evaluate_images(
    real: Tensor,
    fake: Tensor,
    *,
    seed: int = 0,
    inception_weights: str | os.PathLike[str] | None = None,
    fingerprints: bool = False,
) -> dict[str, float]:
    """All metrics of fake against real, as one flat dict of floats.

    Keys: "swd_level_<side>" and "swd_mean" (SWD ×1e3), "orientation_w1" (radians, ≤ π/2),
    "coherence_gap" (coherence units, [0, 1]), "log_spectral_distance" (dB), "pixel_w1"
    (pixel-value units), "kid_random" (kernel units, ≈ 0 for equal distributions, can be slightly
    negative; left out when a set has a single image), "singular_points_w1" (points per image) and "minutiae_w1" (minutiae per 1000 px²) —
    the last two on every image set, fingerprint or not (colour is averaged to grey; see
    docs/metrics.md); with ``fingerprints`` also "ridge_frequency_w1" (cycles/px); with
    ``inception_weights`` (path to inception-2015-12-05.pt) also "fid" and "kid".
    Deterministic given ``seed``.
    """
    real, fake = check_image_pair(real, fake)  # validate once, up front, before any slow work
    model = load_inception(inception_weights) if inception_weights is not None else None
    results = dict(laplacian_swd(real, fake, seed=seed))
    results.update(orientation_distance(real, fake))
    results["log_spectral_distance"] = log_spectral_distance(real, fake)
    results["pixel_w1"] = pixel_histogram_w1(real, fake)
    if min(real.shape[0], fake.shape[0]) >= 2:  # the unbiased estimator needs two images per set
        results["kid_random"] = kid_random(real, fake)
    results["singular_points_w1"] = singular_points_w1(real, fake)
    results["minutiae_w1"] = minutiae_w1(real, fake)
    if fingerprints:
        results["ridge_frequency_w1"] = ridge_frequency_w1(real, fake)
    if model is not None:
        results.update(fid_kid(real, fake, model, seed=seed))
    return results
