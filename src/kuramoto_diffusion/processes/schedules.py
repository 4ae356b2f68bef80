"""Noise and coupling schedules in continuous time.

A schedule is a non-negative rate r(τ) on diffusion time τ ∈ [0, 1]. A process with
T steps uses, for step t (covering τ ∈ [t/T, (t+1)/T]), the integral of the rate over
that step. Totals over [0, 1] therefore do not depend on T: a chain discretised with
1000 steps ends where the same chain with 100 steps ends, and a stride of h steps is
the integral over h steps (what samplers with NFE < T use).

Two shapes:

* ``linear``: r(τ) linear from ``start·R`` to ``end·R`` with R = 100 reference steps,
  so that at T = 100 the per-step values run from ≈ start to ≈ end.
* ``paper-100``: the authors' per-step values ``linspace(start, end, 100)`` held
  constant over each of 100 equal bins (a staircase rate). At T = 100 it reproduces
  their numbers exactly; at T = 1000 each step gets a tenth of a bin.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ..serialization import choice_check

ScheduleShape = Literal["linear", "paper-100"]
SCHEDULE_SHAPES: tuple[str, ...] = get_args(ScheduleShape)
REFERENCE_STEPS = 100


def cumulative_schedule(shape: ScheduleShape, start: float, end: float, steps: int) -> torch.Tensor:
    """Integral of the rate from τ = 0 to τ = t/T for t = 0 … T, float64 of length T + 1.

    ``start``/``end`` are per-step values at the 100-step reference.
    """
    choice_check("schedule", shape, SCHEDULE_SHAPES)
    tau = torch.arange(steps + 1, dtype=torch.float64) / steps
    if shape == "linear":
        rate_start, rate_end = start * REFERENCE_STEPS, end * REFERENCE_STEPS
        return rate_start * tau + 0.5 * (rate_end - rate_start) * tau**2
    per_bin = torch.linspace(start, end, REFERENCE_STEPS, dtype=torch.float64)
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(per_bin, 0)])
    position = tau * REFERENCE_STEPS
    bin_index = position.floor().long().clamp(max=REFERENCE_STEPS - 1)
    return edges[bin_index] + (position - bin_index) * per_bin[bin_index]


def vp_cumulative_beta(beta_min: float, beta_max: float, steps: int) -> torch.Tensor:
    """∫₀^{t/T} β(τ) dτ for the VP-SDE β(τ) = β_min + τ(β_max − β_min), t = 0 … T (float64).

    β_min = 0.1, β_max = 20 is DDPM's linear schedule (1e-4 … 0.02 per step at T = 1000).
    """
    tau = torch.arange(steps + 1, dtype=torch.float64) / steps
    return beta_min * tau + 0.5 * (beta_max - beta_min) * tau**2
