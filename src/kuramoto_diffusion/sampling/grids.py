"""Time grids of a reverse sweep: decreasing integer steps t_0 = start > t_1 > … > t_n = 0 (SPEC §5).

``GRIDS`` maps a grid name to its function (process, start, intervals, rho) -> grid:

* "uniform" spreads the grid evenly in t (``step_grid``);
* "rho" carries EDM's ρ-spacing over to the process's noise level L(t) (``ForwardProcess.noise_level``:
  √Σσ² of the chain on the torus, EDM's σ(t) = √((1 − ᾱ_t)/ᾱ_t) for VP): L_i = (L_max^{1/ρ} + i/(k−1)·(L_min^{1/ρ}
  − L_max^{1/ρ}))^ρ for i < k between L(start) and L(1), each mapped to the integer step of the nearest
  level (kept strictly decreasing), then 0 (``rho_step_grid``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UserError
from ..processes import ForwardProcess


def step_grid(start: int, intervals: int) -> list[int]:
    """Decreasing integer steps from ``start`` to 0 with at most ``intervals`` intervals, evenly spread."""
    if start < 1:
        raise UserError(f"the reverse sweep needs a start step ≥ 1, got {start}")
    if intervals < 1:
        raise UserError(f"need at least one sampling step, got {intervals}")
    intervals = min(intervals, start)
    grid = torch.linspace(start, 0, intervals + 1, dtype=torch.float64).round().long().tolist()
    return sorted(set(grid), reverse=True)


def rho_step_grid(process: ForwardProcess, start: int, intervals: int, rho: float) -> list[int]:
    """Decreasing integer steps from ``start`` to 0, ``intervals`` of them (at most ``start``), ρ-spaced in the
    process's noise level (module docstring)."""
    intervals = min(intervals, start)
    if intervals == start:
        return list(range(start, -1, -1))
    levels = torch.tensor([process.noise_level(t) for t in range(start + 1)], dtype=torch.float64)
    high, low = levels[start] ** (1.0 / rho), levels[1] ** (1.0 / rho)
    grid = [start]
    for index in range(1, intervals):
        target = (high + index / (intervals - 1) * (low - high)) ** rho
        nearest = int(torch.argmin((levels[1 : start + 1] - target).abs())) + 1
        # Strictly decreasing, leaving one step for each interval still to come.
        grid.append(max(min(nearest, grid[-1] - 1), intervals - index))
    return [*grid, 0]


def _uniform(process: ForwardProcess, start: int, intervals: int, rho: float) -> list[int]:
    return step_grid(start, intervals)


# name -> (process, start step, intervals, ρ) -> the decreasing grid start … 0
GRIDS: dict[str, Callable[[ForwardProcess, int, int, float], list[int]]] = {
    "uniform": _uniform,
    "rho": rho_step_grid,
}
