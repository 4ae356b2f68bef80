"""Log-likelihood through the probability-flow ODE (SPEC §5), on the torus and in ℝ.

The probability-flow ODE of a process with per-step drift D and noise variance σ² transports p_0
to p_T; in the forward direction, in units of steps,

    dx/dτ = u(x, τ) = D(x, τ) − ½·σ²(τ)·s(x, τ),     log p_0(x_0) = log p_T(x_T) + ∫_0^T div u(x_τ, τ) dτ

Over a grid interval [a, b] (stride h = b − a) the increment is F_q(x) = D(x, a, h) − ½·v(a, h)·s(x, q):
the SDE's drift and g² integrated over the stride (``ForwardProcess.flow_drift``, ``flow_noise_variance``:
the chain's own for Kuramoto, an Euler chain; −½∫β·x and ∫β for VP, whose chain takes exact steps),
with the score at step q. Heun's method integrates x and the log-density together:

    x̃ = project(x + F_a(x)),   x_b = project(x + ½(F_a(x) + F_b(x̃))),   Δ = ½(div F_a(x) + div F_b(x̃))

2 network evaluations per interval; ``score_fn`` is queried at t = 0 too (``DiffusionModel`` answers
with its step-1 score there: training queries t ≥ 1 only). The states are wrapped after each step
on the torus; the divergence is unaffected. The terminal term is ``process.prior_log_prob`` summed
over a sample (von Mises on the wrapped states, N(0, 1) in ℝ, both for phase–amplitude), or the
exact log p_T where it is known (``terminal_log_prob``, for tests against closed forms).

The divergence is exact (one backward pass per dimension) for states of at most
``exact_dimension_limit`` elements, else Hutchinson's estimator div F ≈ εᵀ(∂F/∂x)ε with K Rademacher
probes ε, drawn once per sample and kept along its trajectory: the K integrals give K estimates of
log p_0 whose spread is the reported standard error.

Bits per dimension of 8-bit data (``bits_per_dim``), with uniform dequantisation
w = x + u, u ~ U[0, 1)^D, and the model's data y = (w − ½)/127.5 − 1 (centred on the values
x/127.5 − 1 that training saw):

    log P(x) ≥ E_u[log p_y(y)] − D·log 127.5,      bits/dim = −(log p_y(y) − D·log 127.5) / (D·ln 2)

where p_y is the density of the data in model units: p_y = p_θ·a^D on the torus (θ = a·y, a = the
phase range, 0.5π by default) and p_y itself in ℝ (``DiffusionModel.log_likelihood`` adds log a^D).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError
from ..processes import ForwardProcess
from ..processes.base import ProbabilityFlow, ScoreFn
from .grids import step_grid
from .steps import probability_flow_step

PIXEL_STEP = 127.5  # data units per grey level: y = x/127.5 − 1


@dataclass(frozen=True)
class LikelihoodResult:
    """log p_0 of each sample (nats, in the units of the states given), and how it was computed."""

    log_likelihood: Tensor  # (N,)
    prior_log_likelihood: Tensor  # (N,) the log p_T(x_T) term
    probe_standard_error: Tensor | None  # (N,) Hutchinson's standard error; None when the divergence is exact
    function_evaluations: int  # network evaluations per sample
    steps: list[int]  # the increasing grid 0 … T


def ode_log_likelihood(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x0: Tensor,
    *,
    nfe: int | None = None,
    probes: int = 2,
    exact_dimension_limit: int = 32,
    generator: torch.Generator | None = None,
    terminal_log_prob: Callable[[Tensor], Tensor] | None = None,
) -> LikelihoodResult:
    """log p_0(x0) of states ``x0`` (N, …) by Heun's method on the probability-flow ODE (module docstring).

    ``nfe``: network evaluations per sample, 2 per interval (default 2T: every step); ``probes`` K ≥ 1
    for Hutchinson's estimator, used when a state has more than ``exact_dimension_limit`` elements.
    ``score_fn`` must be differentiable in its states (no ``torch.no_grad`` inside). ``terminal_log_prob``:
    states (N, …) at T -> (N,) log-density, instead of the process's prior.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise UserError(f"probes must be an integer ≥ 1, got {probes!r}")
    if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 2):
        raise UserError(f"nfe must be an even integer ≥ 2 (Heun spends 2 per interval), got {nfe!r}")
    if not bool(torch.isfinite(x0).all()):
        raise UserError("the data hold NaN or infinite values; the log-likelihood needs finite data")
    intervals = process.steps if nfe is None else min(nfe // 2, process.steps)
    grid = step_grid(process.steps, intervals)[::-1]  # 0 … T
    dimension = math.prod(x0.shape[1:])
    exact = dimension <= exact_dimension_limit
    probe_vectors = None
    if not exact:
        signs = torch.randint(0, 2, (probes, *x0.shape), generator=generator, device="cpu")
        probe_vectors = (2.0 * signs - 1.0).to(dtype=x0.dtype, device=x0.device)

    x = x0.detach()
    # One log-density integral per probe (one in all when exact); (K or 1, N).
    integral = torch.zeros((1 if exact else probes, x0.shape[0]), dtype=torch.float64, device=x0.device)
    for lower, upper in zip(grid[:-1], grid[1:]):
        flow = _LikelihoodFlow(process, score_fn, lower, upper - lower, probe_vectors)
        (x, integral), _ = probability_flow_step(flow, (x, integral), lower, upper, second_order=True)
    if terminal_log_prob is None:
        prior = process.prior_log_prob(x).flatten(1).sum(1).to(torch.float64)
    else:
        prior = terminal_log_prob(x).to(torch.float64)
    estimates = prior + integral  # (K or 1, N)
    standard_error = None
    if not exact:
        standard_error = estimates.std(0) / math.sqrt(probes) if probes > 1 else torch.full_like(prior, math.nan)
    return LikelihoodResult(estimates.mean(0), prior, standard_error, 2 * (len(grid) - 1), grid)


@dataclass(frozen=True)
class _SlopeWithDivergence:
    """The increment F of the states over an interval and its divergence (K or 1, N); adds and scales as a pair."""

    increment: Tensor
    divergence: Tensor

    def __add__(self, other: _SlopeWithDivergence) -> _SlopeWithDivergence:
        return _SlopeWithDivergence(self.increment + other.increment, self.divergence + other.divergence)

    def __rmul__(self, factor: float) -> _SlopeWithDivergence:
        return _SlopeWithDivergence(factor * self.increment, factor * self.divergence)


@dataclass(frozen=True)
class _LikelihoodFlow(ProbabilityFlow[tuple[Tensor, Tensor], _SlopeWithDivergence]):
    """The forward probability-flow ODE over [lower, lower + stride] with the log-density integral beside the
    states: the slope at step q is F_q(x) = flow_drift(x) − ½·v·s(x, q) and div F_q (module docstring)."""

    process: ForwardProcess
    score_fn: ScoreFn
    lower: int
    stride: int
    probes: Tensor | None

    def slope(self, x: tuple[Tensor, Tensor], t: int) -> _SlopeWithDivergence:
        process, lower, stride = self.process, self.lower, self.stride
        variance = process.flow_noise_variance(lower, stride, like=x[0])

        def increment(state: Tensor, query: int) -> Tensor:
            return process.flow_drift(state, lower, stride) - 0.5 * variance * self.score_fn(state, query)

        return _SlopeWithDivergence(*_with_divergence(increment, x[0], t, self.probes))

    def advance(self, x: tuple[Tensor, Tensor], slope: _SlopeWithDivergence) -> tuple[Tensor, Tensor]:
        states, integral = x
        return self.process.project(states + slope.increment), integral + slope.divergence


def _with_divergence(
    function,
    x: Tensor,
    query: int,
    probes: Tensor | None,  # noqa: ANN001 - (states, step) -> increment
) -> tuple[Tensor, Tensor]:
    """(F(x), div F(x)): exact over every element when ``probes`` is None, else one Hutchinson estimate per probe (K, N)."""
    with torch.enable_grad():
        state = x.detach().requires_grad_(True)
        value = function(state, query)
        flat = value.flatten(1)
        if probes is None:
            divergence = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            for index in range(flat.shape[1]):
                (gradient,) = torch.autograd.grad(flat[:, index].sum(), state, retain_graph=True)
                divergence += gradient.flatten(1)[:, index].to(torch.float64)
            divergences = divergence[None]
        else:
            rows = []
            for index, probe in enumerate(probes):
                (gradient,) = torch.autograd.grad((value * probe).sum(), state, retain_graph=index < len(probes) - 1)
                rows.append((gradient * probe).flatten(1).sum(1).to(torch.float64))
            divergences = torch.stack(rows)
    return value.detach(), divergences


def bits_per_dim(log_likelihood: Tensor, dimension: int, levels: int = 256) -> Tensor:
    """Bits per dimension of 8-bit data from log p_y (nats, data in model units y = (x + u − ½)/127.5 − 1).

    −(log p_y − D·log(127.5·256/levels))/(D·ln 2): the density of the dequantised pixels w = x + u is
    p_y/127.5^D (module docstring); ``levels`` other than 256 would rescale the grey step.
    """
    step = PIXEL_STEP * 256 / levels
    return -(log_likelihood - dimension * math.log(step)) / (dimension * math.log(2.0))


def dequantise(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """8-bit images given in model units (x/127.5 − 1, x ∈ {0 … 255}) to y = (x + u − ½)/127.5 − 1, u ~ U[0, 1)."""
    pixels = torch.round((images.to(torch.float64) + 1.0) * PIXEL_STEP)
    if bool((pixels < 0).any() or (pixels > 255).any()) or not bool(torch.isfinite(images).all()):
        raise UserError("images for bits per dimension must be 8-bit values scaled as x/127.5 − 1 (in [-1, 1])")
    noise = torch.rand(images.shape, generator=generator, dtype=torch.float64, device="cpu").to(images.device)
    return ((pixels + noise - 0.5) / PIXEL_STEP - 1.0).to(images.dtype)
