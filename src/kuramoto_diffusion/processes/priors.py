"""The Kuramoto process's priors at t = T: one function per choice of ``KuramotoConfig.prior`` (docs/priors.md).

* ``von-mises``: i.i.d. von Mises(ψ_ref, κ) per element, κ = ``prior_concentration``. The only prior with a
  closed-form density (the likelihood needs one).
* ``relaxed``: those draws moved L = ``prior_relax_steps`` steps of the chain at its t = T rates,

      θ ← wrap(θ + K·Δ(θ) + σ·z),   K, σ² of the last step (t = T − 1) held fixed.

  With a symmetric coupling kernel Δ = ∇E for the XY energy E(θ) = ½ Σ_ij A_ij cos(θ_i − θ_j) + κ_ref Σ_i cos(θ_i − ψ_ref),
  so this is the unadjusted Langevin sampler (step h = σ²/2) of the chain's stationary law at those rates,
  p(θ) ∝ exp((2K/σ²)·E(θ)): an XY model in a field, spatially correlated where the coupling orders the chain.
  L steps cost L coupling evaluations, no network pass.
* ``forward-chain``: the forward chain itself run t = 0 … T from a cheap start: a per-image common phase
  ~ von Mises(``prior_start_phase``, ``prior_start_concentration``) plus i.i.d. deviations ~ von Mises(0,
  ``prior_start_deviation``), both fitted to training states by ``fit_chain_start``. Its draws are t = T states of
  the chain, exactly, for data distributed as that start. T coupling evaluations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import Tensor

from ..circular import fit_von_mises, order_parameter, von_mises_sample, wrap
from ..errors import UserError

if TYPE_CHECKING:
    from .kuramoto import KuramotoProcess

PriorKind = Literal["von-mises", "relaxed", "forward-chain"]
PRIOR_KINDS: tuple[PriorKind, ...] = get_args(PriorKind)
Device = torch.device | str | None


def von_mises_prior(
    process: KuramotoProcess,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: Device,
) -> Tensor:
    """i.i.d. von Mises(ψ_ref, prior_concentration) in [-π, π)."""
    cfg = process.config
    return von_mises_sample(
        tuple(shape), cfg.ref_phase, cfg.prior_concentration, generator=generator, dtype=dtype, device=device
    )


def relax(process: KuramotoProcess, theta: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """``steps`` steps θ ← wrap(θ + K·Δ(θ) + σ·z) of the chain at its t = T rates (K and σ² of step T − 1)."""
    if steps < 0:
        raise UserError(f"relaxation steps must be ≥ 0, got {steps}")
    last = process.steps - 1
    strength = process.coupling_strength(last, 1, like=theta)
    scale = process.transition_scale(last, 1, like=theta)
    for _ in range(steps):
        noise = torch.randn(theta.shape, generator=generator, dtype=theta.dtype, device=theta.device)
        theta = wrap(theta + strength * process.direction(theta) + scale * noise)
    return theta


def relaxed_prior(
    process: KuramotoProcess,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: Device,
) -> Tensor:
    """von Mises draws relaxed by ``prior_relax_steps`` terminal-rate chain steps (module docstring)."""
    start = von_mises_prior(process, shape, generator, dtype, device)
    return relax(process, start, process.config.prior_relax_steps, generator)


def chain_start(
    process: KuramotoProcess,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: Device,
) -> Tensor:
    """The forward-chain prior's start: a common phase per example plus i.i.d. deviations (``fit_chain_start``)."""
    cfg = process.config
    common_shape = (shape[0], *([1] * (len(shape) - 1)))
    common = von_mises_sample(
        common_shape,
        cfg.prior_start_phase,
        cfg.prior_start_concentration,
        generator=generator,
        dtype=torch.float64,
        device=device,
    )
    deviation = von_mises_sample(
        tuple(shape), 0.0, cfg.prior_start_deviation, generator=generator, dtype=torch.float64, device=device
    )
    return wrap(common + deviation).to(dtype)


def forward_chain_prior(
    process: KuramotoProcess,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: Device,
) -> Tensor:
    """The forward chain run from ``chain_start`` to t = T."""
    return process.simulate(chain_start(process, shape, generator, dtype, device), process.steps, generator=generator)


PRIOR_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "von-mises": von_mises_prior,
    "relaxed": relaxed_prior,
    "forward-chain": forward_chain_prior,
}


def draw_prior(
    process: KuramotoProcess,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: Device = None,
) -> Tensor:
    """Draws of ``process.config.prior`` of the given shape (radians in [-π, π))."""
    return PRIOR_SAMPLERS[process.config.prior](process, tuple(shape), generator, dtype, device)


def prior_chain_steps(process: KuramotoProcess, prior: str) -> int:
    """What a draw of ``prior`` costs, in chain steps (coupling evaluations): 0, L or T."""
    return {"von-mises": 0, "relaxed": process.config.prior_relax_steps, "forward-chain": process.steps}[prior]


def fit_chain_start(theta0: Tensor) -> tuple[float, float, float]:
    """(ψ_c, κ_c, κ_d) of the forward-chain prior's start, fitted to states ``theta0`` (batch, …) by maximum likelihood:
    each example's circular mean phase ~ von Mises(ψ_c, κ_c) across examples, and the deviations from it
    ~ von Mises(0, κ_d) (radians; κ ≥ 0)."""
    theta0 = theta0.detach().to(torch.float64)
    if theta0.shape[0] < 2 or theta0[0].numel() < 2:
        raise UserError(f"fitting the chain's start needs ≥ 2 examples of ≥ 2 values, got shape {tuple(theta0.shape)}")
    _, common = order_parameter(theta0)  # (batch,)
    phase, common_concentration = fit_von_mises(common)
    deviations = wrap(theta0 - common.reshape(-1, *([1] * (theta0.dim() - 1))))
    _, deviation_concentration = fit_von_mises(deviations, loc=0.0)
    return phase, common_concentration, deviation_concentration
