"""Samplers: reverse SDE, probability-flow ODE (Euler, Heun), forward-then-reverse (SPEC §5).

A sweep walks a decreasing grid of steps t_0 = start > t_1 > … > t_n = 0. Each interval
[s, t] (stride h = t − s) merges the schedule over its fine steps (summed K and σ², or the
exact VP factors), so NFE < T works. With drift D = drift(x, s, h), variance v = σ²(s, h)
and the score s(x, t) = F(x, t)/c(t) of the network, on the torus:

    reverse SDE:  θ ← wrap( θ − D + v·s(θ, t) + √v·z )     (no noise on the last interval)
    ODE (Euler):  θ ← wrap( θ − D + ½v·s(θ, t) )
    ODE (Heun):   θ̃ = Euler step;  θ̂ = Euler step from θ̃ with s(θ̃, s);
                  θ ← wrap( θ + ½(wrap(θ̃ − θ) + wrap(θ̂ − θ̃)) )   (Euler on the last interval)

The process owns the step formulas (``reverse_sde_mean``, ``reverse_ode_step``): the
Euclidean baseline uses DDPM's ancestral step and DDIM / EDM-Heun, its standard
integrators, so that comparisons are against a well-sampled baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .circular import order_parameter
from .errors import UserError
from .processes import ForwardProcess
from .processes.base import ScoreFn

SAMPLERS = ("sde", "ode", "ode-heun")


@dataclass
class SampleResult:
    """Final states; with ``record_trajectory`` also the states and order parameter R at every grid point."""

    states: Tensor
    steps: list[int]
    trajectory: list[Tensor] | None
    order_parameter: list[float]
    function_evaluations: int  # network evaluations per sample (the NFE of the sweep)


def step_grid(start: int, intervals: int) -> list[int]:
    """Decreasing integer steps from ``start`` to 0 with at most ``intervals`` intervals, evenly spread."""
    if start < 1:
        raise UserError(f"the reverse sweep needs a start step ≥ 1, got {start}")
    if intervals < 1:
        raise UserError(f"need at least one sampling step, got {intervals}")
    intervals = min(intervals, start)
    grid = torch.linspace(start, 0, intervals + 1, dtype=torch.float64).round().long().tolist()
    return sorted(set(grid), reverse=True)


def intervals_for_nfe(sampler: str, nfe: int) -> int:
    """How many grid intervals a sampler can afford with ``nfe`` network evaluations."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; valid values are {', '.join(SAMPLERS)}")
    if nfe < 1:
        raise UserError(f"--nfe must be ≥ 1, got {nfe}")
    # Heun spends two evaluations per interval except the last, which is an Euler step.
    return (nfe + 1) // 2 if sampler == "ode-heun" else nfe


@torch.no_grad()
def reverse_sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    *,
    sampler: str = "sde",
    nfe: int | None = None,
    start_step: int | None = None,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
) -> SampleResult:
    """Run the reverse process from states ``x_start`` at ``start_step`` (default T) down to t = 0."""
    start = process.steps if start_step is None else start_step
    if not 1 <= start <= process.steps:
        raise UserError(f"start step must be in 1…{process.steps}, got {start}")
    grid = step_grid(start, intervals_for_nfe(sampler, nfe if nfe is not None else start))
    x = x_start
    trajectory = [x.cpu()] if record_trajectory else None
    # R(t) costs a device synchronisation per step, so it is only tracked with the trajectory.
    order = [_mean_order(process, x)] if record_trajectory else []
    evaluations = 0
    for upper, lower in zip(grid[:-1], grid[1:]):
        stride = upper - lower
        if sampler == "sde":
            x = process.reverse_sde_mean(x, score_fn(x, upper), lower, stride)
            evaluations += 1
            if lower > 0:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = process.project(x + process.transition_scale(lower, stride, like=x) * noise)
        else:
            x, used = process.reverse_ode_step(x, score_fn, upper, lower, heun=sampler == "ode-heun")
            evaluations += used
        if trajectory is not None:
            trajectory.append(x.cpu())
            order.append(_mean_order(process, x))
    return SampleResult(x, grid, trajectory, order, evaluations)


def _mean_order(process: ForwardProcess, x: Tensor) -> float:
    # R(t) of the state; for Euclidean states the order parameter of x read as phases is still a
    # useful coarse-to-fine indicator, so it is reported for both.
    state = x if process.periodic else x * (0.9 * torch.pi)
    return float(order_parameter(state)[0].mean())
