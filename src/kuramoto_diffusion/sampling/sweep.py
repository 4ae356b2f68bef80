"""The reverse sweep (SPEC §5): reverse SDE, probability-flow ODE (Euler, Heun), predictor–corrector.

A sweep walks a decreasing grid of steps t_0 = start > t_1 > … > t_n = 0 (``grids.py``). Each interval
[s, t] (stride h = t − s) merges the schedule over its fine steps (summed K and σ², or the exact VP
factors), so NFE < T works; the step taken on it is the sampler's entry of the registry ``steps.REVERSE_STEPS``
(``steps.py`` gives every formula). The process owns its own formulas (``reverse_sde_mean``,
``probability_flow``): the Euclidean baseline uses DDPM's ancestral step and DDIM / EDM-Heun, its standard
integrators, so that comparisons are against a well-sampled baseline.

A ``Constraint`` (inpainting, ``inpainting.py``) may overwrite part of the state after each interval and
have each interval run several times.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..circular import IMAGE_PHASE_RANGE, order_parameter
from ..errors import UserError
from ..processes import ForwardProcess
from ..processes.base import ScoreFn
from .grids import GRIDS
from .steps import SAMPLERS, Sampler, as_sampler, intervals_for_nfe, reverse_interval

__all__ = ["SAMPLERS", "Constraint", "SampleResult", "Sampler", "reverse_sweep", "run_sweep", "sweep_grid"]


@dataclass
class SampleResult:
    """Final states; with ``record_trajectory`` also the states and order parameter R at every grid point."""

    states: Tensor
    steps: list[int]
    trajectory: list[Tensor] | None
    order_parameter: list[float]
    function_evaluations: int  # network evaluations per sample (the NFE of the sweep)
    # Per interval of the grid: phase values that crossed the seam at ±π (all samples together;
    # empty for a process without phases). A crossing is a move |Δθ| > π after wrapping, which a
    # step of size < π only makes by passing ±π: the black–white "salt" of decoded images.
    seam_crossings: list[int] = dataclasses.field(default_factory=list)


class Constraint(Protocol):
    """Part of the state held to known values during a sweep (``inpainting.KnownRegion``)."""

    @property
    def resample(self) -> int:
        """Runs of each interval (1: no resampling); read-only, as a frozen dataclass's field is."""
        ...

    def paste(self, x: Tensor, step: int) -> Tensor:
        """x at grid step ``step`` with the constrained part overwritten."""
        ...

    def back_up(self, x: Tensor, lower: int, upper: int, generator: torch.Generator | None) -> Tensor:
        """States at ``upper`` given x at ``lower``, before an interval runs again."""
        ...


def sweep_grid(
    process: ForwardProcess, sampler: str | Sampler, nfe: int | None = None, start_step: int | None = None
) -> list[int]:
    """The decreasing grid start_step (default T) … 0 of a sweep with ``nfe`` network evaluations (default: one per step)."""
    sampler = as_sampler(sampler)
    start = process.steps if start_step is None else start_step
    if not 1 <= start <= process.steps:
        raise UserError(f"start step must be in 1…{process.steps}, got {start}")
    intervals = intervals_for_nfe(sampler, nfe if nfe is not None else start)
    return GRIDS[sampler.grid](process, start, intervals, sampler.rho)


@torch.no_grad()
def reverse_sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    *,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    start_step: int | None = None,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
) -> SampleResult:
    """Run the reverse process from states ``x_start`` at ``start_step`` (default T) down to t = 0."""
    sampler = as_sampler(sampler)
    grid = sweep_grid(process, sampler, nfe, start_step)
    return run_sweep(
        process, score_fn, x_start, grid, sampler=sampler, generator=generator, record_trajectory=record_trajectory
    )


def run_sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    grid: list[int],
    *,
    sampler: Sampler,
    generator: torch.Generator | None,
    record_trajectory: bool,
    constraint: Constraint | None = None,
) -> SampleResult:
    """The loop shared by ``reverse_sweep`` and ``inpainting.inpaint_sweep`` over the decreasing ``grid``."""
    x = x_start if constraint is None else constraint.paste(x_start, grid[0])
    trajectory = [x.cpu()] if record_trajectory else None
    # R(t) costs a device synchronisation per step, so it is only tracked with the trajectory.
    order = [_mean_order(process, x)] if record_trajectory else []
    evaluations = 0
    crossings: list[Tensor] = []  # counted on the device, read once at the end
    runs = 1 if constraint is None else constraint.resample
    for upper, lower in zip(grid[:-1], grid[1:]):
        before = x
        for repeat in range(runs):
            if constraint is not None and repeat > 0:  # back up to `upper` and redo the interval
                x = constraint.back_up(x, lower, upper, generator)
            x, used = reverse_interval(process, score_fn, x, upper, lower, sampler, generator)
            evaluations += used
            if constraint is not None:
                x = constraint.paste(x, lower)
        if process.periodic_channels(x.shape[1]):
            crossings.append(((order_phases(process, x) - order_phases(process, before)).abs() > math.pi).sum())
        if trajectory is not None:
            trajectory.append(x.cpu())
            order.append(_mean_order(process, x))
    seam = torch.stack(crossings).tolist() if crossings else []
    return SampleResult(x, grid, trajectory, order, evaluations, seam)


def order_phases(process: ForwardProcess, x: Tensor) -> Tensor:
    """The phases whose order parameter R(t) and seam crossings the sweep records: the process's periodic channels;
    states without phases (Euclidean) read as image phases (the default a·x), still a useful coarse-to-fine indicator."""
    periodic = process.periodic_channels(x.shape[1])
    return x[:, :periodic] if periodic else x * IMAGE_PHASE_RANGE


def _mean_order(process: ForwardProcess, x: Tensor) -> float:
    return float(order_parameter(order_phases(process, x))[0].mean())
