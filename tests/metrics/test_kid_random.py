"""KID on random features: the unbiased MMD² against a brute-force double loop, its expectation under equal and
shifted distributions, and the determinism of the seeded feature network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics import RandomFeatureNet, kid_random, unbiased_mmd2
from kuramoto_diffusion.metrics.kid_random import FEATURE_SEED


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The U-statistic written out pair by pair, in float64."""
    dim = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(np.dot(a, b)) / dim + 1.0) ** 3

    n, m = len(x), len(y)
    within_x = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    within_y = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return within_x + within_y - 2.0 * across


@pytest.mark.parametrize("block", [1024, 3])
def test_unbiased_mmd2_matches_a_double_loop(block):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.4, 1.3, size=(7, 5))
    assert unbiased_mmd2(x, y, block=block) == pytest.approx(brute_force_mmd2(x, y), rel=1e-12, abs=1e-14)
    assert unbiased_mmd2(torch.from_numpy(y), torch.from_numpy(x), block=block) == pytest.approx(
        brute_force_mmd2(y, x), rel=1e-12, abs=1e-14
    )


def textured(count: int, generator: torch.Generator, blur: int = 3, size: int = 16) -> torch.Tensor:
    """Images in [-1, 1]: white noise box-blurred over ``blur`` px, squashed by tanh (a simple texture law)."""
    noise = torch.randn(count, 1, size + blur - 1, size + blur - 1, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(noise, blur, stride=1) * blur
    return torch.tanh(smooth)


def test_expectation_is_zero_for_one_distribution_and_positive_for_a_shifted_one():
    generator = torch.Generator().manual_seed(1)
    draws, size = 24, 24
    same = np.array([kid_random(textured(size, generator), textured(size, generator)) for _ in range(draws)])
    shifted = np.array([kid_random(textured(size, generator), textured(size, generator, blur=5)) for _ in range(draws)])
    # The estimator is unbiased: the mean of independent draws is 0 within its standard error (4σ: fails by
    # chance with probability < 1e-4). The shifted mean lies above 0 by more than 4 of its own standard errors
    # plus 4 of the same-law ones: the two 4σ intervals do not overlap.
    standard_error = same.std(ddof=1) / math.sqrt(draws)
    assert abs(same.mean()) < 4.0 * standard_error
    assert same.min() < 0 < same.max()  # unbiased, so single draws fall on both sides of 0
    assert shifted.mean() - 4.0 * shifted.std(ddof=1) / math.sqrt(draws) > 4.0 * standard_error
    assert (shifted > same.max()).mean() > 0.9


def test_the_feature_network_is_deterministic_and_independent_of_the_global_rng():
    images = textured(6, torch.Generator().manual_seed(2), size=11)
    torch.manual_seed(123)
    first = RandomFeatureNet(1)
    torch.manual_seed(456)
    torch.randn(10)
    second = RandomFeatureNet(1)
    for a, b in zip(first.weights, second.weights):
        assert a.dtype == torch.float64 and torch.equal(a, b)
    features = first(images)
    assert features.shape == (6, first.dimension) and features.dtype == torch.float64
    assert torch.equal(features, second(images))
    # Batching does not change the features, and another seed gives another network.
    assert torch.allclose(first(images, batch_size=4), features, rtol=0, atol=1e-14)
    assert not torch.allclose(RandomFeatureNet(1, seed=FEATURE_SEED + 1)(images), features)


def test_grey_and_rgb_networks_share_the_deeper_layers_and_grey_is_not_rgb():
    grey, rgb = RandomFeatureNet(1), RandomFeatureNet(3)
    assert grey.weights[0].shape[1] == 1 and rgb.weights[0].shape[1] == 3
    for a, b in zip(grey.weights[1:], rgb.weights[1:]):
        assert torch.equal(a, b)


def test_any_size_from_eight_pixels_and_unequal_set_sizes():
    generator = torch.Generator().manual_seed(3)
    real = textured(5, generator, size=8)
    fake = textured(3, generator, size=8).expand(-1, 1, -1, -1)
    assert math.isfinite(kid_random(real, fake))
    assert math.isfinite(
        kid_random(
            textured(4, generator, size=13).expand(-1, 3, -1, -1), textured(2, generator, size=13).repeat(1, 3, 1, 1)
        )
    )


@pytest.mark.parametrize(
    "real, fake, fragment",
    [
        (torch.zeros(4, 1, 7, 7), torch.zeros(4, 1, 7, 7), "at least 8 px"),
        (torch.zeros(1, 1, 8, 8), torch.zeros(4, 1, 8, 8), "at least 2 images"),
    ],
)
def test_bad_input_is_a_user_error(real, fake, fragment):
    with pytest.raises(UserError, match=fragment):
        kid_random(real, fake)


def test_mmd_rejects_mismatched_features():
    with pytest.raises(UserError, match="features"):
        unbiased_mmd2(np.zeros((3, 4)), np.zeros((3, 5)))


def numpy_features(network: RandomFeatureNet, image: np.ndarray) -> np.ndarray:
    """The network's features of one image (C, H, W), written with explicit loops in float64 numpy."""
    from kuramoto_diffusion.metrics.kid_random import FEATURE_STRIDES

    hidden, pooled = image, []
    for weight, stride in zip(network.weights, FEATURE_STRIDES):
        w = weight.numpy()
        padded = np.pad(hidden, ((0, 0), (1, 1), (1, 1)))
        rows = (hidden.shape[1] - 1) // stride + 1
        cols = (hidden.shape[2] - 1) // stride + 1
        out = np.zeros((w.shape[0], rows, cols))
        for r in range(rows):
            for c in range(cols):
                patch = padded[:, r * stride : r * stride + 3, c * stride : c * stride + 3]
                out[:, r, c] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
        hidden = np.maximum(out, 0.0)
        pooled.append(hidden.mean(axis=(1, 2)))
    return np.concatenate(pooled)


def test_features_match_an_explicit_convolution_and_the_weights_come_from_the_documented_seed():
    network = RandomFeatureNet(3)
    images = textured(2, torch.Generator().manual_seed(4), size=9).repeat(1, 3, 1, 1)
    images[:, 1] *= 0.5  # make the channels differ
    features = network(images).numpy()
    for image, row in zip(images.numpy(), features):
        np.testing.assert_allclose(row, numpy_features(network, image), rtol=1e-12, atol=1e-14)
    # The weights are plain draws of torch's CPU generator (platform independent) at FEATURE_SEED:
    # the grey first layer, then the RGB one, then the shared layers.
    generator = torch.Generator().manual_seed(FEATURE_SEED)
    grey_first = torch.randn((16, 1, 3, 3), generator=generator, dtype=torch.float64) * math.sqrt(2.0 / 9)
    rgb_first = torch.randn((16, 3, 3, 3), generator=generator, dtype=torch.float64) * math.sqrt(2.0 / 27)
    assert torch.equal(RandomFeatureNet(1).weights[0], grey_first)
    assert torch.equal(network.weights[0], rgb_first)
