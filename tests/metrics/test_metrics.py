"""Image-quality metrics: closed forms, brute-force references and behaviour on real texture crops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.optimize
import scipy.stats
import torch

from kuramoto_diffusion.data import FingerprintSource, open_image_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics import (
    circular_wasserstein,
    evaluate_images,
    fid_kid,
    frechet_distance,
    kernel_inception_distance,
    laplacian_pyramid,
    laplacian_swd,
    load_inception,
    log_spectral_distance,
    orientation_distance,
    orientation_histogram,
    pixel_histogram_w1,
    ridge_frequency,
    ridge_frequency_w1,
    sliced_wasserstein,
    structure_tensor_orientation,
    wasserstein_1d,
)
from kuramoto_diffusion.metrics.swd import random_unit_directions

WEIGHT_FREE_KEYS = (
    "swd_level_32",
    "swd_level_16",
    "swd_mean",
    "orientation_w1",
    "coherence_gap",
    "log_spectral_distance",
    "pixel_w1",
    "kid_random",
    "singular_points_w1",
    "minutiae_w1",
)


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def textures() -> torch.Tensor:
    return open_image_source("textures", 32, channels=1).fixed_batch(64, seed=0).double()


@pytest.fixture(scope="module")
def textures_split() -> torch.Tensor:
    """Other crops of the same photos: the same distribution."""
    return open_image_source("textures", 32, channels=1).fixed_batch(64, seed=1).double()


@pytest.fixture(scope="module")
def prints_32() -> torch.Tensor:
    """A clearly different set of the same shape."""
    return FingerprintSource(32, num_prints=64, disk_cache=False).fixed_batch(64, seed=0).double()


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.from_numpy(scipy.ndimage.gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect"))


def noisy(images: torch.Tensor, std: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(5), dtype=images.dtype)
    return (images + std * noise).clamp(-1.0, 1.0)


def grating(angle: float, period: float, size: int = 64, channels: int = 1) -> torch.Tensor:
    """(1, C, size, size) stripes running at ``angle`` (counter-clockwise from +x, y up on screen)."""
    coordinates = torch.arange(size, dtype=torch.float64)
    row, col = torch.meshgrid(coordinates, coordinates, indexing="ij")
    across = -math.sin(angle) * col - math.cos(angle) * row  # coordinate along the stripes' normal, with y = -row
    return torch.cos(2 * math.pi * across / period + 0.3).expand(1, channels, size, size).clone()


def axial_difference(a: float, b: float) -> float:
    difference = abs(a - b) % math.pi
    return min(difference, math.pi - difference)


# ----------------------------------------------------------------------------- all metrics together


@pytest.fixture(scope="module")
def evaluations(textures, textures_split, prints_32) -> dict[str, dict[str, float]]:
    return {
        "self": evaluate_images(textures, textures),
        "split": evaluate_images(textures, textures_split),
        "split_swapped": evaluate_images(textures_split, textures),
        "different": evaluate_images(textures, prints_32),
    }


def test_every_metric_is_zero_for_a_set_against_itself(evaluations):
    assert set(evaluations["self"]) == set(WEIGHT_FREE_KEYS)
    for key, value in evaluations["self"].items():
        assert isinstance(value, float)
        if key == "kid_random":
            # The unbiased MMD² of a set against itself is 2/(n−1)·(mean k − mean diagonal k): ≤ 0 for a PSD
            # kernel (1ᵀK1 ≤ n·tr K), and of order 1/n, far below a real difference.
            assert -1e-3 * evaluations["different"][key] < value <= 0.0
        else:
            assert abs(value) < 1e-9, key


def test_a_same_distribution_split_is_closer_than_a_different_set(evaluations):
    for key in WEIGHT_FREE_KEYS:
        # KID is unbiased, so a same-distribution split may come out slightly negative.
        lower = -0.01 * evaluations["different"][key] if key == "kid_random" else 0.0
        assert lower < evaluations["split"][key] < 0.6 * evaluations["different"][key], key


def test_distances_are_symmetric(evaluations):
    for key in WEIGHT_FREE_KEYS:
        assert evaluations["split_swapped"][key] == pytest.approx(evaluations["split"][key], rel=1e-9), key


# The SWD settings are cut down (the defaults take ~2 s per call) but keep the ordering clear.
METRICS = {
    "swd_mean": lambda real, fake: laplacian_swd(real, fake, patches_per_image=32, num_projections=128)["swd_mean"],
    "orientation_w1": lambda real, fake: orientation_distance(real, fake)["orientation_w1"],
    "coherence_gap": lambda real, fake: orientation_distance(real, fake)["coherence_gap"],
    "log_spectral_distance": log_spectral_distance,
    "pixel_w1": pixel_histogram_w1,
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metrics_grow_with_blur_and_with_noise(name, textures):
    metric = METRICS[name]
    by_blur = [metric(textures, blurred(textures, sigma)) for sigma in (0.5, 1.0, 2.0)]
    by_noise = [metric(textures, noisy(textures, std)) for std in (0.1, 0.3, 0.6)]
    assert 0 < by_blur[0] < by_blur[1] < by_blur[2], by_blur
    assert 0 < by_noise[0] < by_noise[1] < by_noise[2], by_noise


def test_evaluate_images_is_deterministic_and_handles_unequal_sizes_and_rgb(textures, prints_32):
    real_rgb, fake_rgb = textures[:24].expand(-1, 3, -1, -1), prints_32[:17].expand(-1, 3, -1, -1)
    first = evaluate_images(real_rgb, fake_rgb, seed=3)
    assert first == evaluate_images(real_rgb, fake_rgb, seed=3)
    assert first["swd_mean"] != evaluate_images(real_rgb, fake_rgb, seed=4)["swd_mean"]
    # Gray replicated to RGB measures like gray, except for SWD's random draws over more channels.
    gray = evaluate_images(textures[:24], prints_32[:17], seed=3)
    for key in ("orientation_w1", "log_spectral_distance", "pixel_w1"):
        assert first[key] == pytest.approx(gray[key], rel=1e-9)


@pytest.mark.parametrize(
    "bad_fake, fragment",
    [
        (np.zeros((4, 1, 32, 32)), "torch tensor"),
        (torch.zeros(4, 32, 32), "(N, C, H, W)"),
        (torch.zeros(4, 2, 32, 32), "1 or 3 channels"),
        (torch.zeros(4, 1, 16, 16), "agree in (C, H, W)"),
        (torch.full((4, 1, 32, 32), float("nan")), "NaN"),
        (torch.zeros(4, 1, 32, 32, dtype=torch.uint8), "uint8"),
        (torch.zeros(0, 1, 32, 32), "empty"),
    ],
)
def test_bad_input_raises_a_one_line_user_error(textures, bad_fake, fragment):
    with pytest.raises(UserError) as excinfo:
        evaluate_images(textures, bad_fake)
    assert fragment in str(excinfo.value) and "\n" not in str(excinfo.value)


# ----------------------------------------------------------------------------- SWD


def test_sliced_wasserstein_matches_a_plain_loop_over_projections():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.3, 1.2, size=(40, 6))
    directions = random_unit_directions(6, 16, torch.Generator().manual_seed(3)).numpy()
    per_direction = [np.mean(np.abs(np.sort(a @ d) - np.sort(b @ d))) for d in directions]
    ours = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b), 16, torch.Generator().manual_seed(3))
    assert ours == pytest.approx(np.mean(per_direction), rel=1e-12)

    # Unequal set sizes: the exact 1-D distance, as scipy computes it.
    b_small = b[:25]
    per_direction = [scipy.stats.wasserstein_distance(a @ d, b_small @ d) for d in directions]
    ours = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b_small), 16, torch.Generator().manual_seed(3))
    assert ours == pytest.approx(np.mean(per_direction), rel=1e-12)


def test_wasserstein_1d_and_pixel_w1_match_scipy(textures, prints_32):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 50)), rng.exponential(size=(3, 31))
    expected = [scipy.stats.wasserstein_distance(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected, rtol=1e-12)

    real, fake = textures[:10], prints_32[:7]
    expected = scipy.stats.wasserstein_distance(real.flatten().numpy(), fake.flatten().numpy())
    assert pixel_histogram_w1(real, fake) == pytest.approx(expected, rel=1e-12)


def test_laplacian_pyramid_levels_and_swd_keys():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    levels = laplacian_pyramid(images)
    assert [level.shape[-1] for level in levels] == [64, 32, 16]
    # Band-pass levels of a constant image are 0 (the binomial blur keeps constants, borders included).
    flat_levels = laplacian_pyramid(torch.full((1, 1, 32, 32), 0.25, dtype=torch.float64))
    assert flat_levels[0].abs().max() < 1e-15 and (flat_levels[1] - 0.25).abs().max() < 1e-15
    result = laplacian_swd(images, images.flip(-1), patches_per_image=8, num_projections=16)
    assert sorted(result) == ["swd_level_16", "swd_level_32", "swd_level_64", "swd_mean"]
    assert result["swd_mean"] == pytest.approx(np.mean([result[f"swd_level_{side}"] for side in (16, 32, 64)]))
    with pytest.raises(UserError, match="at least 7x7"):
        laplacian_swd(images[..., :6, :6], images[..., :6, :6])


# ----------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("degrees", [0, 20, 45, 70, 90, 135, 170])
def test_structure_tensor_recovers_the_angle_of_gratings(degrees):
    angle = math.radians(degrees)
    for channels in (1, 3):
        orientation, coherence = structure_tensor_orientation(grating(angle, period=8.0, channels=channels))
        interior = (slice(None), slice(8, -8), slice(8, -8))  # mirrored borders bend the stripes
        assert axial_difference(float(orientation[interior].median()), angle) < math.radians(2)
        assert float(coherence[interior].min()) > 0.99
    histogram = orientation_histogram(grating(angle, period=8.0), bins=36)
    assert float(histogram.sum()) == pytest.approx(1.0)
    assert axial_difference((int(histogram.argmax()) + 0.5) * math.pi / 36, angle) <= math.pi / 36


def test_isotropic_noise_has_low_coherence_and_a_flat_image_none():
    noise = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, coherence = structure_tensor_orientation(noise)
    assert float(coherence.mean()) < 0.4
    _, flat_coherence = structure_tensor_orientation(torch.zeros(1, 1, 16, 16))
    assert float(flat_coherence.abs().max()) == 0.0
    flat_histogram = orientation_histogram(torch.zeros(1, 1, 16, 16), bins=4)
    assert torch.allclose(flat_histogram, torch.full((4,), 0.25, dtype=torch.float64))


def circular_w1_by_linear_programming(p: np.ndarray, q: np.ndarray, period: float) -> float:
    """Optimal transport between bin centres with the shorter-arc cost, solved as an LP."""
    bins = p.size
    steps = np.abs(np.arange(bins)[:, None] - np.arange(bins)[None, :])
    cost = np.minimum(steps, bins - steps) * period / bins
    rows = np.kron(np.eye(bins), np.ones(bins))  # sum_j plan[i, j] = p_i
    cols = np.kron(np.ones(bins), np.eye(bins))  # sum_i plan[i, j] = q_j
    result = scipy.optimize.linprog(
        cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([p, q]), bounds=(0, None)
    )
    assert result.success
    return float(result.fun)


def test_circular_wasserstein_equals_the_optimal_transport_cost():
    rng = np.random.default_rng(0)
    for bins in (5, 8, 9):
        for _ in range(4):
            p, q = rng.random(bins), rng.random(bins) ** 3
            p, q = p / p.sum(), q / q.sum()
            expected = circular_w1_by_linear_programming(p, q, math.pi)
            assert circular_wasserstein(p, q) == pytest.approx(expected, rel=1e-7, abs=1e-10)
            assert circular_wasserstein(q, p) == pytest.approx(expected, rel=1e-7, abs=1e-10)
            # Rotating both histograms together changes nothing.
            assert circular_wasserstein(np.roll(p, 3), np.roll(q, 3)) == pytest.approx(expected, rel=1e-9)


def test_circular_wasserstein_of_shifted_deltas_is_the_shorter_arc():
    bins, width = 36, math.pi / 36
    delta = np.eye(bins)[0]
    for shift in range(bins):
        expected = min(shift, bins - shift) * width
        assert circular_wasserstein(delta, np.roll(delta, shift)) == pytest.approx(expected, abs=1e-12)
    assert circular_wasserstein(delta, np.roll(delta, bins // 2)) == pytest.approx(math.pi / 2)
    # Uniform on a full circle of 4 bins to all mass in bin 3: quarters move 1, 2, 1 and 0 bins.
    uniform_to_delta = circular_wasserstein(torch.ones(4), torch.tensor([0.0, 0, 0, 1]), period=2 * math.pi)
    assert uniform_to_delta == pytest.approx(0.25 * (1 + 2 + 1) * (2 * math.pi / 4), rel=1e-12)
    with pytest.raises(UserError, match="same number of bins"):
        circular_wasserstein(np.ones(3), np.ones(4))
    with pytest.raises(UserError, match="non-negative"):
        circular_wasserstein(np.array([1.0, -1.0, 1.0]), np.ones(3))


# ----------------------------------------------------------------------------- ridge frequency


@pytest.mark.parametrize("period", [4.0, 6.3, 9.7, 15.0])
def test_ridge_frequency_recovers_the_frequency_of_gratings(period):
    for degrees in (0, 30, 80):
        estimate = float(ridge_frequency(grating(math.radians(degrees), period))[0])
        assert estimate == pytest.approx(1.0 / period, rel=0.02)


def test_synthetic_fingerprints_have_a_ridge_period_of_7_to_11_px_and_w1_separates_scales():
    def prints(size: int, seed: int = 0) -> torch.Tensor:
        return FingerprintSource(size, num_prints=24, seed=seed, disk_cache=False, split="all").fixed_batch(24).double()

    prints_96 = prints(96)
    periods = 1.0 / ridge_frequency(prints_96)
    assert 7.0 <= float(periods.min()) and float(periods.max()) <= 11.0

    prints_64, other_prints_64 = prints(64), prints(64, seed=1)
    zoomed_64 = prints_96[..., 16:80, 16:80]  # same prints, 1.5x larger ridge period
    same = ridge_frequency_w1(prints_64, other_prints_64)
    assert same == pytest.approx(ridge_frequency_w1(other_prints_64, prints_64), rel=1e-12)
    assert ridge_frequency_w1(prints_64, prints_64) == 0.0
    assert same < 0.3 * ridge_frequency_w1(prints_64, zoomed_64)
    assert "ridge_frequency_w1" in evaluate_images(prints_64, zoomed_64, fingerprints=True)


# ----------------------------------------------------------------------------- spectrum


def test_log_spectral_distance_of_a_rescaled_set_is_six_decibels(textures, textures_split):
    # Halving the amplitude quarters the power at every frequency: 10·log10(4) dB in every bin.
    assert log_spectral_distance(textures, 0.5 * textures) == pytest.approx(10 * math.log10(4), rel=1e-12)
    assert log_spectral_distance(textures[:10], 0.5 * textures[:10]) == pytest.approx(6.0206, abs=1e-4)
    # Adding a constant changes no spectrum (each image's mean is removed).
    assert log_spectral_distance(textures, textures + 0.1) < 1e-9
    assert log_spectral_distance(textures, textures_split[:20]) > 0


# ----------------------------------------------------------------------------- FID / KID


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)
    # The distance does not depend on the basis: rotate both Gaussians.
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))

    def rotate(mean, variances):
        return rotation @ mean, rotation @ np.diag(variances) @ rotation.T

    rotated = frechet_distance(*rotate(mu1, var1), *rotate(mu2, var2))
    assert rotated == pytest.approx(expected, rel=1e-8)
    assert abs(frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1))) < 1e-10


def kid_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel, written out term by term."""
    m, dim = x.shape

    def kernel(u, v):
        return (u @ v / dim + 1.0) ** 3

    within_x = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return within_x + within_y - 2 * across


def test_kernel_inception_distance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.normal(0.5, 1.0, size=(6, 4))
    assert kernel_inception_distance(x, y) == pytest.approx(kid_by_loops(x, y), rel=1e-12)

    features, same_distribution = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    shifted = features + 1.0
    kid_shifted = kernel_inception_distance(features, shifted, subsets=10, subset_size=100)
    assert kid_shifted > 0.5
    assert abs(kernel_inception_distance(features, features, subsets=10, subset_size=100)) < 0.02 * kid_shifted
    assert abs(kernel_inception_distance(features, same_distribution, subsets=10, subset_size=100)) < 0.02 * kid_shifted


def test_load_inception_without_a_file_explains_how_to_get_one(tmp_path):
    for path in (None, tmp_path / "missing.pt"):
        with pytest.raises(UserError) as excinfo:
            load_inception(path)
        message = str(excinfo.value)
        assert "inception-2015-12-05.pt" in message and "inception_weights=PATH" in message and "\n" not in message
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="not a TorchScript model"):
        load_inception(garbage)


class TinyInception(torch.nn.Module):
    """Stand-in for the TorchScript Inception: same call, 0..255 RGB in, 16 features out."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():  # fixed weights without touching the global random state
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
            self.head = torch.nn.Linear(16, 10)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert images.shape[1] == 3
        assert bool(images.min() >= 0.0) and bool(images.max() <= 255.0)
        hidden = torch.relu(self.conv((images - 128.0) / 128.0))
        features = torch.cat([hidden.mean(dim=(2, 3)), hidden.amax(dim=(2, 3))], dim=1)
        return features if return_features else self.head(features)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_fid_and_kid_with_a_tiny_scripted_model(tmp_path, textures, textures_split, prints_32):
    path = tmp_path / "tiny-inception.pt"
    torch.jit.script(TinyInception()).save(str(path))
    model = load_inception(path)
    same = fid_kid(textures, textures, model)
    assert abs(same["fid"]) < 1e-6 and abs(same["kid"]) < 1e-3
    split, different = fid_kid(textures, textures_split, model), fid_kid(textures, prints_32, model)
    assert 0 < split["fid"] < 0.5 * different["fid"]
    assert split["kid"] < 0.5 * different["kid"]

    results = evaluate_images(textures[:16], prints_32[:12], inception_weights=path)
    assert set(results) == set(WEIGHT_FREE_KEYS) | {"fid", "kid"}
    assert results["fid"] > 0
