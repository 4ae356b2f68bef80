"""Sliced Wasserstein distance (SWD) between Laplacian-pyramid patches (Karras et al. 2018, ProGAN).

Per image, a Laplacian pyramid is built with the 5-tap binomial blur [1, 4, 6, 4, 1] / 16 and 2×
downsampling, from the full size down to the last level whose side is still ≥ ``min_size`` (16 px
as in the paper); the last level is the low-pass residual. From every level of every image
``patches_per_image`` random 7×7 patches are cut. As in the paper, each set's descriptors are
normalised per level and per channel by their own mean and standard deviation (so the metric
compares local structure, not global brightness or contrast). The SWD between the two descriptor
sets is the mean, over ``num_projections`` random unit directions, of the exact 1-D Wasserstein-1
distance between the projected sets.

Sets of different sizes are compared exactly: the 1-D distance integrates |F_real − F_fake|
over the merged samples (see pixels.wasserstein_1d) instead of resampling to equal counts.

Reported values are SWD × 1e3, the scale of the paper's tables.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .pixels import check_image_pair, wasserstein_1d

PATCH_SIZE = 7
REPORT_SCALE = 1e3  # the paper reports SWD × 10³

# Projected descriptors are processed a few directions at a time so that memory stays at
# about this many float64 values (≈ 128 MB), whatever the number of patches.
_PROJECTION_CHUNK_VALUES = 2**24


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one independent random stream of a seeded metric."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _binomial_blur(images: Tensor) -> Tensor:
    """Separable [1, 4, 6, 4, 1] / 16 blur with mirrored borders (needs H, W ≥ 3)."""
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=images.dtype) / 16.0
    channels = images.shape[1]
    padded = F.pad(images, (2, 2, 2, 2), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)


def _downsample(images: Tensor) -> Tensor:
    return _binomial_blur(images)[..., ::2, ::2]


def _upsample(images: Tensor, height: int, width: int) -> Tensor:
    """Zero-insertion 2× upsampling and blur (×4 restores the brightness), cropped to (height, width)."""
    n, c, h, w = images.shape
    spread = images.new_zeros(n, c, 2 * h, 2 * w)
    spread[..., ::2, ::2] = images
    return 4.0 * _binomial_blur(spread)[..., :height, :width]


def pyramid_level_count(height: int, width: int, min_size: int) -> int:
    """Levels from full size down to the last one whose shorter side is still ≥ min_size (at least 1)."""
    count, side = 1, min(height, width)
    while (side + 1) // 2 >= min_size:
        side = (side + 1) // 2
        count += 1
    return count


def laplacian_pyramid(images: Tensor, min_size: int = 16) -> list[Tensor]:
    """Band-pass levels, finest first (full size, then halved), ending with the low-pass residual."""
    gaussian = [images]
    for _ in range(pyramid_level_count(images.shape[2], images.shape[3], min_size) - 1):
        gaussian.append(_downsample(gaussian[-1]))
    bands = [fine - _upsample(coarse, *fine.shape[2:]) for fine, coarse in zip(gaussian, gaussian[1:])]
    return bands + [gaussian[-1]]


def random_patches(level: Tensor, patches_per_image: int, generator: torch.Generator) -> Tensor:
    """(N·patches_per_image, C, 7, 7): patches at uniform random positions, drawn independently per image."""
    n, c, h, w = level.shape
    top = torch.randint(0, h - PATCH_SIZE + 1, (n, patches_per_image, 1, 1), generator=generator)
    left = torch.randint(0, w - PATCH_SIZE + 1, (n, patches_per_image, 1, 1), generator=generator)
    offsets = torch.arange(PATCH_SIZE)
    rows = top + offsets.view(1, 1, PATCH_SIZE, 1)
    cols = left + offsets.view(1, 1, 1, PATCH_SIZE)
    image_index = torch.arange(n).view(n, 1, 1, 1)
    patches = level.permute(0, 2, 3, 1)[image_index, rows, cols]  # (N, P, 7, 7, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(n * patches_per_image, c, PATCH_SIZE, PATCH_SIZE)


def normalized_descriptors(patches: Tensor) -> Tensor:
    """(M, C·49): patches standardised per channel by the set's own mean and std, then flattened."""
    mean = patches.mean(dim=(0, 2, 3), keepdim=True)
    std = patches.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    # A flat level (constant images) has std 0; leave it at zero instead of dividing by zero.
    return ((patches - mean) / std.clamp_min(1e-12)).flatten(1)


def random_unit_directions(
    dim: int, count: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """(count, dim) directions drawn uniformly on the unit sphere (normalised Gaussian vectors)."""
    directions = torch.randn(count, dim, generator=generator, dtype=dtype)
    return directions / directions.norm(dim=1, keepdim=True)


def sliced_wasserstein(
    a: Tensor, b: Tensor, num_projections: int = 512, generator: torch.Generator | None = None
) -> float:
    """Mean over random unit directions of the exact 1-D Wasserstein-1 distance of the projections.

    a: (n, d) and b: (m, d) descriptor sets (n ≠ m allowed); in the units of the descriptors.
    The directions are ``random_unit_directions(d, num_projections, generator)``; generator None = seed 0.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise UserError(f"sliced_wasserstein needs (n, d) and (m, d) sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
        raise UserError(f"num_projections must be a positive integer, got {num_projections!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    a, b = a.to(torch.float64), b.to(torch.float64)
    directions = random_unit_directions(a.shape[1], num_projections, generator)
    chunk = max(1, _PROJECTION_CHUNK_VALUES // (a.shape[0] + b.shape[0]))
    total = 0.0
    for start in range(0, num_projections, chunk):
        block = directions[start : start + chunk].T  # (d, k)
        total += float(wasserstein_1d((a @ block).T, (b @ block).T).sum())
    return total / num_projections


def _check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def laplacian_swd(
    real: Tensor,
    fake: Tensor,
    *,
    patches_per_image: int = 128,
    num_projections: int = 512,
    min_size: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """SWD × 1e3 per pyramid level and their mean: {"swd_level_<side>": ..., "swd_mean": ...}.

    <side> is the level's shorter side in pixels (e.g. 32 and 16 for 32-px images). Symmetric in
    real and fake and 0 for a set against itself: both sets draw their patch positions from the
    same seeded stream, and the projection directions (shared by both sets) from another.
    """
    real_t, fake_t = check_image_pair(real, fake)
    _check_positive_int(patches_per_image, "patches_per_image")
    _check_positive_int(min_size, f"min_size (at least the {PATCH_SIZE}-px patch)", PATCH_SIZE)
    if min(real_t.shape[2:]) < PATCH_SIZE:
        raise UserError(f"SWD needs images of at least {PATCH_SIZE}x{PATCH_SIZE} px, got {tuple(real_t.shape[2:])}")
    real_levels, fake_levels = laplacian_pyramid(real_t, min_size), laplacian_pyramid(fake_t, min_size)
    real_patch_stream, fake_patch_stream = seeded_generator(seed, 0), seeded_generator(seed, 0)
    direction_stream = seeded_generator(seed, 1)

    result: dict[str, float] = {}
    for real_level, fake_level in zip(real_levels, fake_levels):
        real_descriptors = normalized_descriptors(random_patches(real_level, patches_per_image, real_patch_stream))
        fake_descriptors = normalized_descriptors(random_patches(fake_level, patches_per_image, fake_patch_stream))
        distance = sliced_wasserstein(real_descriptors, fake_descriptors, num_projections, direction_stream)
        result[f"swd_level_{min(real_level.shape[2:])}"] = REPORT_SCALE * distance
    result["swd_mean"] = float(np.mean(list(result.values())))
    return result
