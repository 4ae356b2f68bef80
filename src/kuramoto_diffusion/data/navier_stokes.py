"""Pseudo-spectral solver for 2-D incompressible Navier–Stokes in vorticity form on the periodic box [0, 2π)².

Equations (dimensionless; box side 2π, so wavenumbers are integers):

    ∂ω/∂t + u·∇ω = ν ∇²ω − α ω + F(x, y)
    ∇²ψ = −ω,   u = ∂ψ/∂y,   v = −∂ψ/∂x

so that ω = ∂v/∂x − ∂u/∂y (the usual counter-clockwise vorticity) and ∇·(u, v) = 0 exactly.
ν is the kinematic viscosity, α ≥ 0 a linear (Ekman) drag and F a steady vorticity forcing.

Grid: N × N points x_j = 2πj/N, y_i = 2πi/N. Arrays are indexed ``[..., i, j] = [..., y, x]``
(rows are y, columns are x, as in an image), and a velocity field is ``(..., 2, N, N)`` with
channels (u, v) = (vx, vy). Spectra come from ``torch.fft.rfft2`` over the last two axes: the
half-spectrum axis is k_x ∈ {0 … N/2}, the full axis k_y ∈ {−N/2 … N/2 − 1}.

Forcing (``forcing_field``), with amplitude A and wavenumber k_f:

- ``"kolmogorov"``: the body force f = (A sin(k_f y), 0) in the momentum equation. Its curl is
  what enters the vorticity equation: F = ∂f_y/∂x − ∂f_x/∂y = −A k_f cos(k_f y). The laminar
  steady state is u = A sin(k_f y) / (ν k_f² + α), v = 0.
- ``"random"``: a steady random vorticity forcing on the shell k_f − 1 ≤ |k| ≤ k_f + 1, drawn once per
  trajectory, scaled to the RMS of the Kolmogorov one (A k_f / √2).
- ``"none"``: decaying flow.

Time stepping: integrating-factor RK4 (Lawson's method). The linear terms (viscosity, drag) are
integrated exactly through exp(L dt) with L = −ν|k|² − α; the advection and the forcing go through
classical RK4. The product u·∇ω is computed pseudo-spectrally and dealiased with the 2/3 rule
(modes with |k_x| or |k_y| ≥ N/3 are zero at all times), which makes the spatial discretisation a
Galerkin truncation: without viscosity, drag and forcing it conserves energy and enstrophy, and
only the time stepping (error O(dt⁴)) changes them. The step size follows the CFL condition
dt · max(|u| + |v|) / Δx ≤ cfl with Δx = 2π/N, re-evaluated every ``max_chunk`` of simulated time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError

FORCINGS = ("kolmogorov", "random", "none")
MIN_SIZE = 8


@dataclass(frozen=True)
class SpectralGrid:
    """Wavenumbers of an N × N periodic grid on [0, 2π)², in rfft2 layout (N, N // 2 + 1)."""

    size: int
    kx: Tensor  # (1, N//2 + 1) float: k_x for derivatives (the Nyquist column N/2 set to 0)
    ky: Tensor  # (N, 1) float: k_y for derivatives (the Nyquist row −N/2 set to 0)
    k_squared: Tensor  # (N, N//2 + 1) float: |k|² (the Nyquist modes keep their true value)
    dealias: Tensor  # (N, N//2 + 1) float 0/1: 1 where |k_x| < N/3 and |k_y| < N/3 (2/3 rule)

    @property
    def spacing(self) -> float:
        """Grid spacing Δx = 2π/N."""
        return 2.0 * math.pi / self.size


def spectral_grid(
    size: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> SpectralGrid:
    """The wavenumbers of an N × N grid (N even, ≥ 8) as real tensors of ``dtype`` on ``device``."""
    check_grid_size(size)
    kx = torch.fft.rfftfreq(size, d=1.0 / size, dtype=dtype, device=device)  # 0 … N/2
    ky = torch.fft.fftfreq(size, d=1.0 / size, dtype=dtype, device=device)  # 0 … N/2−1, −N/2 … −1
    k_squared = ky[:, None] ** 2 + kx[None, :] ** 2
    cutoff = size / 3.0
    dealias = ((kx[None, :].abs() < cutoff) & (ky[:, None].abs() < cutoff)).to(dtype)
    kx_derivative, ky_derivative = kx.clone(), ky.clone()
    kx_derivative[size // 2] = 0.0  # the Nyquist mode has no odd derivative on a real grid
    ky_derivative[size // 2] = 0.0
    return SpectralGrid(size, kx_derivative[None, :], ky_derivative[:, None], k_squared, dealias)


def check_grid_size(size: object) -> int:
    """Return ``size`` if it is an even integer ≥ 8; otherwise raise a one-line UserError."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE or size % 2:
        raise UserError(f"grid size must be an even whole number ≥ {MIN_SIZE} (64 or 128 intended), got {size!r}")
    return size


def _grid_for(field: Tensor) -> SpectralGrid:
    if field.shape[-1] != field.shape[-2]:
        raise UserError(f"fields must be square N × N grids, got {field.shape[-2]} × {field.shape[-1]}")
    return spectral_grid(field.shape[-1], dtype=_real_dtype(field), device=field.device)


def _real_dtype(field: Tensor) -> torch.dtype:
    return field.dtype if field.dtype in (torch.float32, torch.float64) else torch.float64


# ----- vorticity, stream function and velocity ------------------------------------------------------
def velocity_from_vorticity(vorticity: Tensor, grid: SpectralGrid | None = None) -> Tensor:
    """(..., N, N) vorticity ω -> (..., 2, N, N) velocity (u, v) = (∂ψ/∂y, −∂ψ/∂x) with ∇²ψ = −ω.

    The mean of ω (which a periodic velocity cannot carry) and its Nyquist modes are ignored.
    """
    grid = grid or _grid_for(vorticity)
    vorticity_hat = torch.fft.rfft2(vorticity)
    velocity_hat = torch.stack(_velocity_hat(vorticity_hat, grid), dim=-3)
    return torch.fft.irfft2(velocity_hat, s=(grid.size, grid.size))


def _inverse_laplacian(grid: SpectralGrid) -> Tensor:
    """1/|k|² with the mean mode set to 0: ψ̂ = ω̂ · this."""
    inverse = torch.zeros_like(grid.k_squared)
    nonzero = grid.k_squared > 0
    inverse[nonzero] = 1.0 / grid.k_squared[nonzero]
    return inverse


def _velocity_hat(vorticity_hat: Tensor, grid: SpectralGrid) -> tuple[Tensor, Tensor]:
    stream_hat = vorticity_hat * _inverse_laplacian(grid)
    return 1j * grid.ky * stream_hat, -1j * grid.kx * stream_hat


def vorticity_from_velocity(velocity: Tensor) -> Tensor:
    """(..., 2, N, N) velocity (u, v) -> (..., N, N) vorticity ω = ∂v/∂x − ∂u/∂y (spectral derivatives)."""
    grid = _grid_for(velocity)
    velocity_hat = torch.fft.rfft2(velocity)
    curl_hat = 1j * grid.kx * velocity_hat[..., 1, :, :] - 1j * grid.ky * velocity_hat[..., 0, :, :]
    return torch.fft.irfft2(curl_hat, s=(grid.size, grid.size))


def divergence(velocity: Tensor) -> Tensor:
    """(..., 2, N, N) velocity (u, v) -> (..., N, N) ∂u/∂x + ∂v/∂y (spectral derivatives)."""
    grid = _grid_for(velocity)
    velocity_hat = torch.fft.rfft2(velocity)
    divergence_hat = 1j * grid.kx * velocity_hat[..., 0, :, :] + 1j * grid.ky * velocity_hat[..., 1, :, :]
    return torch.fft.irfft2(divergence_hat, s=(grid.size, grid.size))


def kinetic_energy(velocity: Tensor) -> Tensor:
    """(..., 2, N, N) velocity -> (...) mean kinetic energy ½⟨u² + v²⟩ over the box."""
    return 0.5 * velocity.square().sum(dim=-3).mean(dim=(-2, -1))


def enstrophy(vorticity: Tensor) -> Tensor:
    """(..., N, N) vorticity -> (...) mean enstrophy ½⟨ω²⟩ over the box."""
    return 0.5 * vorticity.square().mean(dim=(-2, -1))


# ----- forcing and initial conditions -----------------------------------------------------------------
def grid_coordinates(
    size: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """(x, y) as (N, N) tensors indexed [i, j] = (y_i, x_j), with x_j = 2πj/N and y_i = 2πi/N."""
    points = torch.arange(size, dtype=dtype, device=device) * (2.0 * math.pi / size)
    y, x = torch.meshgrid(points, points, indexing="ij")
    return x, y


def forcing_field(
    kind: str,
    size: int,
    *,
    amplitude: float = 1.0,
    wavenumber: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor | None:
    """The (N, N) vorticity forcing F of ``kind`` (see the module docstring), or None for "none".

    ``"random"`` draws from ``generator`` (CPU), which it then needs.
    """
    if kind == "none":
        return None
    if kind == "kolmogorov":
        _, y = grid_coordinates(size, dtype=dtype)
        return -amplitude * wavenumber * torch.cos(wavenumber * y)
    if kind == "random":
        if generator is None:
            raise ValueError("random forcing needs a generator")
        grid = spectral_grid(size, dtype=dtype)
        shell = (grid.k_squared.sqrt() - wavenumber).abs() <= 1.0
        noise_hat = torch.fft.rfft2(torch.randn((size, size), generator=generator, dtype=dtype))
        field = torch.fft.irfft2(noise_hat * shell * grid.dealias, s=(size, size))
        rms = field.square().mean().sqrt()
        if not rms > 0:
            raise UserError(
                f"forcing wavenumber {wavenumber} has no modes on a {size} × {size} grid; use a smaller one"
            )
        return field * (amplitude * wavenumber / math.sqrt(2.0) / rms)
    raise UserError(f"unknown forcing {kind!r}; valid values are {', '.join(FORCINGS)}")


def random_vorticity(
    size: int,
    generator: torch.Generator,
    *,
    peak_wavenumber: float = 4.0,
    velocity_rms: float = 1.0,
    batch_shape: tuple[int, ...] = (),
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """A smooth random vorticity field (*batch_shape, N, N), dealiased, with zero mean.

    Gaussian with the energy spectrum E(k) ∝ (k/k_p)⁴ exp(−2 (k/k_p)²), k_p = ``peak_wavenumber``,
    scaled so that the velocity's RMS sqrt(⟨u² + v²⟩) equals ``velocity_rms``. Draws from
    ``generator`` (CPU) only: the same generator state gives the same field.
    """
    grid = spectral_grid(size, dtype=dtype)
    noise_hat = torch.fft.rfft2(torch.randn((*batch_shape, size, size), generator=generator, dtype=dtype))
    k = grid.k_squared.sqrt()
    # E(k) ~ 2πk |û|² and |ω̂|² = k² |û|², so |ω̂| ∝ sqrt(k E(k)) for white noise of unit modulus.
    ratio = k / peak_wavenumber
    amplitude = torch.sqrt(k * ratio**4 * torch.exp(-2.0 * ratio**2)) * grid.dealias
    amplitude[0, 0] = 0.0
    vorticity = torch.fft.irfft2(noise_hat * amplitude, s=(size, size))
    rms = kinetic_energy(velocity_from_vorticity(vorticity, grid)).mul(2.0).sqrt()
    return vorticity * (velocity_rms / rms)[..., None, None]


# ----- the solver -------------------------------------------------------------------------------------
@dataclass
class _Workspace:
    spectral: Tensor  # (..., 4, N, N//2+1) complex: û, v̂, (∂ω/∂x)^, (∂ω/∂y)^
    fields: Tensor  # (..., 4, N, N) real: the same in physical space
    advection: Tensor  # (..., N, N) real: u ∂ω/∂x + v ∂ω/∂y
    stages: Tensor  # (4, ..., N, N//2+1) complex: k1 … k4
    stage: Tensor  # (..., N, N//2+1) complex: the argument of the next tendency


class NavierStokes2D:
    """Integrating-factor RK4 solver for ∂ω/∂t + u·∇ω = ν∇²ω − αω + F on [0, 2π)² (module docstring).

    ``viscosity`` ν ≥ 0, ``drag`` α ≥ 0, ``forcing`` an (N, N) vorticity forcing F or None, ``cfl``
    in (0, 1.2] the CFL number (RK4 with the 2/3 rule is stable up to about 1.3). States are
    spectral: ``to_spectral`` (..., N, N) ω -> its dealiased rfft2; ``to_vorticity`` and
    ``to_velocity`` go back. Works on any leading batch shape, in ``dtype`` on ``device``.
    """

    def __init__(
        self,
        size: int,
        *,
        viscosity: float,
        drag: float = 0.0,
        forcing: Tensor | None = None,
        cfl: float = 0.5,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if not (isinstance(viscosity, (int, float)) and math.isfinite(viscosity) and viscosity >= 0):
            raise UserError(f"viscosity must be a finite number ≥ 0, got {viscosity!r}")
        if not (isinstance(drag, (int, float)) and math.isfinite(drag) and drag >= 0):
            raise UserError(f"drag must be a finite number ≥ 0, got {drag!r}")
        if not (isinstance(cfl, (int, float)) and 0 < cfl <= 1.2):
            raise UserError(f"cfl must be a number in (0, 1.2], got {cfl!r}")
        self.grid = spectral_grid(size, dtype=dtype, device=device)
        self.size, self.viscosity, self.drag, self.cfl = size, float(viscosity), float(drag), float(cfl)
        self.linear = -self.viscosity * self.grid.k_squared - self.drag  # L in exp(L dt)
        if forcing is None:
            self.forcing_hat: Tensor | None = None
        else:
            if tuple(forcing.shape) != (size, size):
                raise ValueError(f"forcing must be ({size}, {size}), got {tuple(forcing.shape)}")
            self.forcing_hat = (
                torch.fft.rfft2(forcing.to(dtype=dtype, device=self.grid.k_squared.device)) * self.grid.dealias
            )
        grid = self.grid
        inverse = _inverse_laplacian(grid)
        # ω̂ -> (û, v̂, ∂ω/∂x ^, ∂ω/∂y ^) in one multiplication, so that one batched irfft2 gives all four.
        self._to_fields = (
            torch.stack(
                [
                    1j * grid.ky * inverse,
                    -1j * grid.kx * inverse,
                    1j * grid.kx + 0 * inverse,
                    1j * grid.ky + 0 * inverse,
                ]
            )
            * grid.dealias
        )
        self._minus_dealias = -grid.dealias
        self._work: _Workspace | None = None
        self._exponentials: tuple[float, Tensor, Tensor] | None = None
        self.steps_taken = 0
        self.largest_dt = 0.0

    def to_spectral(self, vorticity: Tensor) -> Tensor:
        """(..., N, N) physical ω -> dealiased spectral state (..., N, N//2 + 1) complex."""
        return torch.fft.rfft2(vorticity.to(self.grid.k_squared)) * self.grid.dealias

    def to_vorticity(self, state: Tensor) -> Tensor:
        """Spectral state -> (..., N, N) physical ω."""
        return torch.fft.irfft2(state, s=(self.size, self.size))

    def to_velocity(self, state: Tensor) -> Tensor:
        """Spectral state -> (..., 2, N, N) physical velocity (u, v)."""
        return torch.fft.irfft2(state[..., None, :, :] * self._to_fields[:2], s=(self.size, self.size))

    def tendency(self, state: Tensor, out: Tensor | None = None) -> Tensor:
        """The non-stiff right-hand side F̂ − P(u·∇ω)^ (P: the 2/3-rule truncation), spectral (into ``out`` if given)."""
        work = self._workspace(state)
        torch.mul(state[..., None, :, :], self._to_fields, out=work.spectral)
        torch.fft.irfft2(work.spectral, s=(self.size, self.size), out=work.fields)
        torch.mul(work.fields[..., 0, :, :], work.fields[..., 2, :, :], out=work.advection)
        work.advection.addcmul_(work.fields[..., 1, :, :], work.fields[..., 3, :, :])
        result = torch.fft.rfft2(work.advection, out=out).mul_(self._minus_dealias)
        if self.forcing_hat is not None:
            result.add_(self.forcing_hat)
        return result

    def _workspace(self, state: Tensor) -> _Workspace:
        """Scratch tensors reused between steps. Fresh tensors of 0.1–1 MB (128² and up) cost more than
        the FFTs themselves, because glibc hands each one out as newly mapped, zero-filled pages."""
        if self._work is None or self._work.stage.shape != state.shape or self._work.stage.device != state.device:
            real: dict[str, Any] = {"dtype": self.grid.k_squared.dtype, "device": state.device}
            batch = tuple(state.shape[:-2])
            self._work = _Workspace(
                spectral=torch.empty((*batch, 4, *state.shape[-2:]), dtype=state.dtype, device=state.device),
                fields=torch.empty((*batch, 4, self.size, self.size), **real),
                advection=torch.empty((*batch, self.size, self.size), **real),
                stages=torch.empty((4, *state.shape), dtype=state.dtype, device=state.device),
                stage=torch.empty_like(state),
            )
        return self._work

    def step(self, state: Tensor, dt: float) -> Tensor:
        """One integrating-factor RK4 (Lawson) step of size ``dt``; returns a new tensor.

        With E = exp(L dt/2) and N the tendency: k1 = dt N(ω), k2 = dt N(E(ω + k1/2)),
        k3 = dt N(Eω + k2/2), k4 = dt N(E²ω + E k3), ω' = E²ω + (E²k1 + 2E(k2 + k3) + k4)/6.
        """
        if self._exponentials is None or self._exponentials[0] != dt:
            half = torch.exp(self.linear * (0.5 * dt))
            self._exponentials = (dt, half, half * half)
        _, half, full = self._exponentials
        work = self._workspace(state)
        k1, k2, k3, k4 = work.stages.unbind(0)
        stage = work.stage
        self.tendency(state, out=k1).mul_(dt)
        torch.add(state, k1, alpha=0.5, out=stage).mul_(half)
        self.tendency(stage, out=k2).mul_(dt)
        torch.mul(state, half, out=stage).add_(k2, alpha=0.5)
        self.tendency(stage, out=k3).mul_(dt)
        torch.mul(state, full, out=stage).addcmul_(half, k3)
        self.tendency(stage, out=k4).mul_(dt)
        increment = k2.add_(k3).mul_(half).mul_(2.0).addcmul_(full, k1).add_(k4).div_(6.0)
        self.steps_taken += 1
        self.largest_dt = max(self.largest_dt, dt)
        return torch.addcmul(increment, full, state)

    def stable_dt(self, state: Tensor) -> float:
        """The CFL step cfl · Δx / max(|u| + |v|) (over the whole batch); inf for a fluid at rest."""
        speed = self.to_velocity(state).abs().sum(dim=-3).max().item()
        return math.inf if speed == 0 else self.cfl * self.grid.spacing / speed

    def advance(
        self, state: Tensor, duration: float, *, max_chunk: float | None = None, max_dt: float | None = None
    ) -> Tensor:
        """Integrate ``state`` over ``duration`` ≥ 0 time units, landing on it exactly.

        The time is cut into chunks of at most ``max_chunk`` (default: all at once); each chunk takes
        equal steps no longer than the CFL step at its start (and ``max_dt`` if given). Raises a
        UserError if the field stops being finite (the flow blew up: lower cfl or raise viscosity).
        """
        remaining = float(duration)
        chunk_length = remaining if max_chunk is None else float(max_chunk)
        while remaining > 1e-12 * max(1.0, float(duration)):
            chunk = min(chunk_length, remaining)
            dt_limit = self.stable_dt(state) if max_dt is None else min(self.stable_dt(state), max_dt)
            steps = max(1, math.ceil(chunk / dt_limit - 1e-9)) if math.isfinite(dt_limit) else 1
            for _ in range(steps):
                state = self.step(state, chunk / steps)
            if not bool(torch.isfinite(torch.view_as_real(state)).all()):
                raise UserError(
                    f"the flow solver blew up (non-finite vorticity) with viscosity {self.viscosity:g} on a "
                    f"{self.size} × {self.size} grid; lower the CFL number, raise the viscosity or the grid size"
                )
            remaining -= chunk
        return state
