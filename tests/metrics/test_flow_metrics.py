"""Flow metrics: energy spectrum, slope, vorticity W1, divergence (float64, against independent computations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kuramoto_diffusion.data.navier_stokes import random_vorticity, velocity_from_vorticity
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.flows import (
    energy_spectrum,
    evaluate_flows,
    relative_divergence,
    spectral_slope,
    spectrum_log_mse,
    vorticity_w1,
)

N = 32


def grid():
    coordinate = torch.arange(N, dtype=torch.float64) * 2 * math.pi / N
    return torch.meshgrid(coordinate, coordinate, indexing="ij")  # (y, x)


def test_energy_spectrum_is_parseval_and_puts_a_plane_wave_in_its_shell():
    y, x = grid()
    wave = torch.stack([torch.cos(3 * x + 4 * y), 0.5 * torch.sin(3 * x + 4 * y)])[None]  # |k| = 5
    k, spectrum = energy_spectrum(wave)
    mean_energy = 0.5 * (wave**2).sum(dim=1).mean()
    assert float(spectrum.sum()) == pytest.approx(float(mean_energy), rel=1e-12)
    assert int(spectrum.argmax()) == 5 and float(spectrum[5]) == pytest.approx(float(mean_energy), rel=1e-12)
    random_field = torch.randn(3, 2, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, spectrum = energy_spectrum(random_field)
    # Parseval up to the corner modes |k| > N/2 + ½ that no shell holds, computed independently with numpy:
    coefficients = np.fft.fft2(random_field.numpy()) / N**2
    frequencies = np.fft.fftfreq(N, 1.0 / N)
    radius = np.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2)
    energy = 0.5 * (np.abs(coefficients) ** 2).sum(axis=1).mean(axis=0)
    assert float(spectrum.sum()) == pytest.approx(energy[np.round(radius) <= N // 2].sum(), rel=1e-12)


def power_law_field(exponent: float, seed: int) -> torch.Tensor:
    """A solenoidal field whose shell energy is ∝ k^exponent for k = 1 … N/2 (random phases)."""
    generator = torch.Generator().manual_seed(seed)
    frequencies = torch.fft.fftfreq(N, 1.0 / N, dtype=torch.float64)
    radius = torch.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2)
    shells = torch.round(radius)
    counts = torch.bincount(shells.long().flatten()).double()
    amplitude = torch.where(
        (shells >= 1) & (shells <= N // 2),
        torch.sqrt(shells.clamp_min(1) ** exponent / counts[shells.long()]),
        torch.zeros(()),
    )
    phases = torch.rand(N, N, generator=generator, dtype=torch.float64) * 2 * math.pi
    vorticity_hat = amplitude * radius * torch.exp(1j * phases)  # |ω̂| = |k|·|û| for a solenoidal field
    vorticity = torch.fft.ifft2(vorticity_hat).real * N**2
    return velocity_from_vorticity(vorticity)[None]


def test_spectral_slope_recovers_a_power_law():
    field = power_law_field(-3.0, seed=0)
    assert spectral_slope(field, 2, 10) == pytest.approx(-3.0, abs=0.35)
    steeper = power_law_field(-5.0, seed=1)
    assert spectral_slope(steeper, 2, 10) == pytest.approx(-5.0, abs=0.35)
    with pytest.raises(UserError, match="k_low < k_high"):
        spectral_slope(field, 5, 3)


def test_distances_are_zero_for_a_set_against_itself_symmetric_and_grow():
    vorticity = random_vorticity(N, torch.Generator().manual_seed(0), batch_shape=(4,))
    real = velocity_from_vorticity(vorticity)
    assert spectrum_log_mse(real, real) == 0 and vorticity_w1(real, real) == 0
    other = velocity_from_vorticity(random_vorticity(N, torch.Generator().manual_seed(1), batch_shape=(4,)))
    assert vorticity_w1(real, other) == pytest.approx(vorticity_w1(other, real), rel=1e-12)
    assert spectrum_log_mse(real, other) == pytest.approx(spectrum_log_mse(other, real), rel=1e-12)
    previous = 0.0
    for scale in (1.2, 1.5, 2.0):  # a stronger flow is further away on every distance
        metrics = evaluate_flows(real, real * scale)
        assert metrics["spectrum_log_mse"] > previous and metrics["vorticity_w1"] > 0
        previous = metrics["spectrum_log_mse"]
    assert metrics["spectrum_log_mse"] == pytest.approx((2 * math.log(2.0)) ** 2, rel=1e-9)  # E scales by 4


def test_divergence_is_zero_for_solver_fields_and_large_for_unconstrained_noise():
    real = velocity_from_vorticity(random_vorticity(N, torch.Generator().manual_seed(0), batch_shape=(2,)))
    assert relative_divergence(real) < 1e-12
    noise = torch.randn(2, 2, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert 0.5 < relative_divergence(noise) < 2.0
    with pytest.raises(UserError, match=r"\(B, 2, N, N\)"):
        energy_spectrum(torch.zeros(2, 3, N, N))
    with pytest.raises(UserError, match="NaN"):
        relative_divergence(torch.full((1, 2, N, N), float("nan")))
