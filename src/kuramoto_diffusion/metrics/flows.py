"""Metrics of 2-D velocity fields on the periodic box [0, 2π)² (SPEC §7): generated against real flows.

Velocity fields are (B, 2, N, N) tensors with channels (u, v) and axes [y, x], as produced by
``data.flows.FlowSource``. Wavenumbers are integers (box side 2π); shell k holds the modes with
k − ½ ≤ |k| < k + ½. Lower is better for every distance, and each is 0 for a set against itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.navier_stokes import divergence, vorticity_from_velocity
from ..errors import UserError
from .pixels import wasserstein_1d


def _check_velocity(velocity: Tensor, what: str = "velocity") -> Tensor:
    velocity = torch.as_tensor(velocity)
    if velocity.dim() != 4 or velocity.shape[1] != 2 or velocity.shape[-1] != velocity.shape[-2]:
        raise UserError(f"{what} must be (B, 2, N, N) fields (u, v) on a square grid, got {tuple(velocity.shape)}")
    if not bool(torch.isfinite(velocity).all()):
        raise UserError(f"{what} holds NaN or infinite values")
    return velocity.to(torch.float64)


def energy_spectrum(velocity: Tensor) -> tuple[Tensor, Tensor]:
    """(k, E(k)) for k = 0 … N/2: kinetic energy ½|û|² summed over each wavenumber shell, averaged over the batch.

    Normalised so that Σ_k E(k) is the mean kinetic energy ½⟨u² + v²⟩ of the box (Parseval), apart
    from the corner modes with |k| > N/2 + ½, which belong to no shell.
    """
    velocity = _check_velocity(velocity)
    size = velocity.shape[-1]
    coefficients = torch.fft.fft2(velocity) / size**2  # û with Σ|û|² = ⟨|u|²⟩
    energy = 0.5 * coefficients.abs().square().sum(dim=1).mean(dim=0)  # (N, N)
    frequencies = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64)
    radius = torch.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2)
    shells = torch.round(radius).long()
    k_max = size // 2
    inside = shells <= k_max
    spectrum = torch.zeros(k_max + 1, dtype=torch.float64).index_add_(0, shells[inside], energy[inside])
    return torch.arange(k_max + 1, dtype=torch.float64), spectrum


def _resolved_shells(size: int) -> slice:
    """Shells 1 … N/3: the range a 2/3-dealiased solver resolves (shell 0 is the mean flow)."""
    return slice(1, size // 3 + 1)


def spectrum_log_mse(real: Tensor, fake: Tensor) -> float:
    """Mean over shells 1 … N/3 of (log E_real(k) − log E_fake(k))² (natural logs)."""
    _, real_spectrum = energy_spectrum(real)
    _, fake_spectrum = energy_spectrum(fake)
    if real_spectrum.shape != fake_spectrum.shape:
        raise UserError(f"real and generated fields differ in size: {tuple(real.shape)} and {tuple(fake.shape)}")
    shells = _resolved_shells(real.shape[-1])
    tiny = torch.finfo(torch.float64).tiny
    difference = torch.log(real_spectrum[shells].clamp_min(tiny)) - torch.log(fake_spectrum[shells].clamp_min(tiny))
    return float(difference.square().mean())


def spectral_slope(velocity: Tensor, k_low: int, k_high: int) -> float:
    """Least-squares slope of log E(k) against log k over the shells k_low … k_high (an inertial range)."""
    k, spectrum = energy_spectrum(velocity)
    if not 1 <= k_low < k_high <= len(k) - 1:
        raise UserError(f"need 1 ≤ k_low < k_high ≤ {len(k) - 1}, got {k_low} and {k_high}")
    x = torch.log(k[k_low : k_high + 1])
    y = torch.log(spectrum[k_low : k_high + 1].clamp_min(torch.finfo(torch.float64).tiny))
    x_centred = x - x.mean()
    return float((x_centred * (y - y.mean())).sum() / x_centred.square().sum())


def vorticity_w1(real: Tensor, fake: Tensor) -> float:
    """Wasserstein-1 distance between the distributions of vorticity values ω = ∂v/∂x − ∂u/∂y (1/time units)."""
    real_vorticity = vorticity_from_velocity(_check_velocity(real, "real"))
    fake_vorticity = vorticity_from_velocity(_check_velocity(fake, "generated"))
    return float(wasserstein_1d(real_vorticity.flatten()[None], fake_vorticity.flatten()[None])[0])


def relative_divergence(velocity: Tensor) -> float:
    """RMS of ∇·u over the RMS of the vorticity: 0 for incompressible flow, ~1 for a field with no constraint."""
    velocity = _check_velocity(velocity)
    rms_divergence = divergence(velocity).square().mean().sqrt()
    rms_vorticity = vorticity_from_velocity(velocity).square().mean().sqrt()
    return float(rms_divergence / rms_vorticity.clamp_min(1e-300))


def evaluate_flows(real: Tensor, fake: Tensor, inertial_range: tuple[int, int] | None = None) -> dict[str, float]:
    """All flow metrics of generated fields against real ones, as one flat dict.

    Keys: "spectrum_log_mse", "slope_difference" (|slope_fake − slope_real| over ``inertial_range``,
    default shells N/16 … N/4), "vorticity_w1", "divergence_fake" and "divergence_real".
    """
    size = _check_velocity(real, "real").shape[-1]
    low, high = inertial_range if inertial_range is not None else (max(1, size // 16), max(2, size // 4))
    return {
        "spectrum_log_mse": spectrum_log_mse(real, fake),
        "slope_difference": abs(spectral_slope(fake, low, high) - spectral_slope(real, low, high)),
        "vorticity_w1": vorticity_w1(real, fake),
        "divergence_fake": relative_divergence(fake),
        "divergence_real": relative_divergence(real),
    }


def forecast_error(forecast: Tensor, truth: Tensor) -> list[float]:
    """Relative L2 error ‖f − g‖/‖g‖ of forecasts (M, K, 2, N, N) (M rollouts) against the true frames (K', 2, N, N),
    per forecast frame (the first min(K, K')), averaged over the rollouts."""
    forecast, truth = torch.as_tensor(forecast, dtype=torch.float64), torch.as_tensor(truth, dtype=torch.float64)
    if forecast.dim() != 5 or truth.dim() != 4 or forecast.shape[2:] != truth.shape[1:]:
        raise UserError(
            f"forecasts (M, K, 2, N, N) and truth (K, 2, N, N) must agree, got {tuple(forecast.shape)} and {tuple(truth.shape)}"
        )
    steps = min(forecast.shape[1], truth.shape[0])
    difference = (forecast[:, :steps] - truth[None, :steps]).flatten(2).norm(dim=2)
    return (difference / truth[:steps].flatten(1).norm(dim=1).clamp_min(1e-300)).mean(dim=0).tolist()


__all__ = [
    "forecast_error",
    "energy_spectrum",
    "evaluate_flows",
    "relative_divergence",
    "spectral_slope",
    "spectrum_log_mse",
    "vorticity_w1",
]
