"""Radially averaged power spectra and the log-spectral distance between two image sets.

Power is the periodogram |FFT|² / (H·W) of each image after subtracting its own mean (per
channel), averaged over channels; by Parseval its mean over all frequencies equals the image's
pixel variance (image values in [-1, 1]).
Frequencies are binned by integer radius r = round(|f| · S), where f is in cycles per pixel and
S = min(H, W), so for square images bin r holds the frequencies r cycles per image apart from the
origin (frequency r / S cycles/px). All radii up to the corners (≈ S/√2) are kept: the corner
bins are where checkerboard artefacts of up-sampling layers show.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError
from .pixels import check_image_pair, check_images

# Floor on a bin's power before taking logs: only a set of constant images reaches it.
_POWER_FLOOR = 1e-30


def radial_bin_index(height: int, width: int) -> Tensor:
    """(H, W) integer radius of each FFT frequency, in units of 1/min(H, W) cycles per pixel."""
    side = min(height, width)
    freq_y = torch.fft.fftfreq(height, dtype=torch.float64)[:, None] * side
    freq_x = torch.fft.fftfreq(width, dtype=torch.float64)[None, :] * side
    return torch.round(torch.hypot(freq_y, freq_x)).long()


def radial_power_profiles(images: Tensor) -> Tensor:
    """(N, R) radially averaged power of each image; column r is the mean power of radius bin r.

    Bin 0 is the (removed) mean and so is 0. ``images`` must already be a checked float tensor.
    """
    n, _, height, width = images.shape
    centred = images - images.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(centred).abs().square().mean(dim=1) / (height * width)  # (N, H, W)
    index = radial_bin_index(height, width).flatten()
    num_bins = int(index.max()) + 1
    sums = power.new_zeros(n, num_bins).index_add_(1, index, power.flatten(1))
    counts = torch.bincount(index, minlength=num_bins).to(power.dtype)
    # Rounding can leave a radius with no frequency on tiny images; those bins stay 0 and unused.
    return sums / counts.clamp_min(1.0)


def radial_power_spectrum(images: Tensor) -> Tensor:
    """(R,) mean over the images of their radially averaged power (float64)."""
    return radial_power_profiles(check_images(images)).mean(dim=0)


def log_spectral_distance(real: Tensor, fake: Tensor) -> float:
    """RMS over radius bins r ≥ 1 of 10·log10(P_real(r) / P_fake(r)), in decibels.

    P is each set's radially averaged power spectrum. 0 dB means equal spectra; a set against the
    same set scaled by 2 (power ×4) gives 10·log10(4) ≈ 6.02 dB. Symmetric in real and fake.
    """
    real_t, fake_t = check_image_pair(real, fake)
    if max(real_t.shape[2:]) < 2:
        raise UserError("log_spectral_distance needs images of at least 2 pixels; 1x1 images have no spectrum")
    real_power = radial_power_profiles(real_t).mean(dim=0)
    fake_power = radial_power_profiles(fake_t).mean(dim=0)
    counts = torch.bincount(radial_bin_index(*real_t.shape[2:]).flatten())
    used = counts > 0
    used[0] = False  # the DC bin holds only the removed mean
    ratio_db = 10.0 * torch.log10(real_power[used].clamp_min(_POWER_FLOOR) / fake_power[used].clamp_min(_POWER_FLOOR))
    return float(math.sqrt(float(ratio_db.square().mean())))
