"""KID on random features: unbiased MMD² (cubic polynomial kernel) on a fixed random convolutional network.

The feature network is built from a fixed seed (``FEATURE_SEED``) through an explicit
``torch.Generator``, so it needs no download and gives the same features on every run and machine:
all weights are drawn on the CPU in float64 and every forward pass runs on the CPU in float64.

Network (``RandomFeatureNet``): four 3×3 convolutions with ReLU, widths 16, 32, 64, 64, the last three
with stride 2, zero padding; He-scaled Gaussian weights (variance 2 / fan-in) and zero biases, so each
layer's activations keep roughly the scale of its input. The feature vector is the global average of
every layer's ReLU output (16 + 32 + 64 + 64 = 176 numbers): global pooling makes it work on any image
size ≥ 8 px, and pooling every layer makes it see structure at 1, 2, 4 and 8 px spacing (receptive
fields 3, 7, 15 and 31 px). RGB images get their own first layer (3 input channels), grey ones a
1-channel one; the deeper layers are shared, but the numbers of grey and RGB sets are not comparable.

KID (Bińkowski et al. 2018) is the unbiased estimate of MMD² with the kernel k(x, y) = (xᵀy / d + 1)³,
d = 176. It is about 0 (and can be slightly negative) for two samples of one distribution. The
feature network is untrained, so the values compare only within this project (same network, same set
sizes) and never with published KID numbers computed on Inception features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .pixels import check_image_pair, check_images

FEATURE_SEED = 20240531
"""Seed of the random feature network's weights. Changing it changes every kid_random number."""

FEATURE_WIDTHS = (16, 32, 64, 64)
FEATURE_STRIDES = (1, 2, 2, 2)
MIN_IMAGE_SIZE = 8  # three stride-2 layers take 8 px down to 1 px


class RandomFeatureNet:
    """A fixed, seeded, untrained ConvNet mapping images (N, C, H, W) in [-1, 1] to (N, 176) float64 features.

    Not an ``nn.Module`` on purpose: it has no trainable state, no device and no dtype to change.
    Two instances built with the same ``channels`` and ``seed`` hold bit-identical weights.
    """

    def __init__(self, channels: int, seed: int = FEATURE_SEED) -> None:
        if channels not in (1, 3):
            raise UserError(f"the random feature network takes 1 or 3 channels, got {channels!r}")
        self.channels = channels
        # One generator per input channel count, so the grey and RGB networks share their deeper layers.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        first_layers = {}
        for in_channels in (1, 3):
            fan_in = in_channels * 9
            first_layers[in_channels] = torch.randn(
                (FEATURE_WIDTHS[0], in_channels, 3, 3), generator=generator, dtype=torch.float64
            ) * math.sqrt(2.0 / fan_in)
        self.weights = [first_layers[channels]]
        for in_width, out_width in zip(FEATURE_WIDTHS[:-1], FEATURE_WIDTHS[1:]):
            fan_in = in_width * 9
            self.weights.append(
                torch.randn((out_width, in_width, 3, 3), generator=generator, dtype=torch.float64)
                * math.sqrt(2.0 / fan_in)
            )

    @property
    def dimension(self) -> int:
        return sum(FEATURE_WIDTHS)

    def __call__(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """(N, 176) float64 features of images (N, C, H, W) with C = ``channels`` and H, W ≥ 8."""
        images = check_images(images)
        if images.shape[1] != self.channels:
            raise UserError(
                f"this feature network takes {self.channels}-channel images, got shape {tuple(images.shape)}"
            )
        if min(images.shape[2:]) < MIN_IMAGE_SIZE:
            raise UserError(
                f"kid_random needs images of at least {MIN_IMAGE_SIZE} px per side, got {tuple(images.shape[2:])}"
            )
        features = []
        with torch.inference_mode():
            for batch in images.split(batch_size):
                pooled = []
                hidden = batch
                for weight, stride in zip(self.weights, FEATURE_STRIDES):
                    hidden = F.relu(F.conv2d(hidden, weight, stride=stride, padding=1))
                    pooled.append(hidden.mean(dim=(2, 3)))
                features.append(torch.cat(pooled, dim=1))
        return torch.cat(features)


def unbiased_mmd2(features_x: Tensor | np.ndarray, features_y: Tensor | np.ndarray, block: int = 1024) -> float:
    """Unbiased MMD² between feature sets (n, d) and (m, d), n, m ≥ 2, kernel k(x, y) = (xᵀy / d + 1)³.

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (n(n−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / (nm),
    the U-statistic over all pairs (no random subsets). Computed in float64 in row blocks of ``block``
    so that memory stays O(block · max(n, m)).
    """
    x = torch.as_tensor(np.asarray(features_x) if not isinstance(features_x, Tensor) else features_x).to(torch.float64)
    y = torch.as_tensor(np.asarray(features_y) if not isinstance(features_y, Tensor) else features_y).to(torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise UserError(f"MMD needs (n, d) and (m, d) features, got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m, dim = x.shape[0], y.shape[0], x.shape[1]
    if n < 2 or m < 2:
        raise UserError(f"kid_random needs at least 2 images per set, got {n} and {m}")

    def kernel_sum(a: Tensor, b: Tensor) -> float:
        return float(sum(((rows @ b.T / dim + 1.0) ** 3).sum() for rows in a.split(block)))

    def self_sum(a: Tensor) -> float:
        diagonal = ((a * a).sum(dim=1) / dim + 1.0) ** 3  # k(a_i, a_i), left out of the unbiased sum
        return kernel_sum(a, a) - float(diagonal.sum())

    return self_sum(x) / (n * (n - 1)) + self_sum(y) / (m * (m - 1)) - 2.0 * kernel_sum(x, y) / (n * m)


def kid_random(real: Tensor, fake: Tensor, seed: int = FEATURE_SEED) -> float:
    """Unbiased KID of ``fake`` against ``real`` on the random network's features (kernel units, ≈ 0 when equal).

    Images (N, C, H, W) in [-1, 1], C = 1 or 3, H, W ≥ 8; both sets need ≥ 2 images. ``seed`` picks the
    network; keep the default to compare numbers across runs.
    """
    real_t, fake_t = check_image_pair(real, fake)
    network = RandomFeatureNet(real_t.shape[1], seed=seed)
    return unbiased_mmd2(network(real_t), network(fake_t))
