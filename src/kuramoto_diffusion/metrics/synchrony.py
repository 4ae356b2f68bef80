"""Does the coupling shape the chain? Phase correlation at distance and the order parameter along a forward chain.

``forward_synchrony`` runs a process's forward chain from given phases and records, at chosen steps t,
``circular.phase_correlation`` (mean cos of the phase difference of pixels d px apart, vertically and
horizontally) and the order parameter R of each image. Local coupling that orders the field shows as a
correlation that falls with distance (d1 > d8); global coupling and no coupling keep pixels exchangeable, so
the curve stays flat (d1 ≈ d8) whatever R does. ``bench/synchrony.py`` tabulates it per regime; docs/synchrony.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..circular import order_parameter, phase_correlation
from ..errors import UserError
from ..processes import ForwardProcess


@dataclass(frozen=True)
class ChainSynchrony:
    """Statistics of a forward chain at the steps ``times`` (float64, means over the images)."""

    times: tuple[int, ...]
    distances: tuple[int, ...]
    correlation: Tensor  # (len(times), len(distances), 2): mean cos(θ_p − θ_q); [..., 0] vertical, [..., 1] horizontal
    gap_spread: Tensor  # (len(times),): std over images of the per-image d_first − d_last (axes averaged)
    order: Tensor  # (len(times),): mean over images of R
    order_spread: Tensor  # (len(times),): standard deviation over images of R

    def at(self, t: int, distance: int) -> float:
        """The correlation at step t and ``distance`` px, averaged over the two axes."""
        return float(self.correlation[self.times.index(t), self.distances.index(distance)].mean())


def forward_synchrony(
    process: ForwardProcess,
    theta0: Tensor,
    times: Iterable[int],
    distances: tuple[int, ...] = (1, 2, 4, 8),
    generator: torch.Generator | None = None,
) -> ChainSynchrony:
    """Run the forward chain of ``process`` from phases ``theta0`` (batch, channels, height, width) to the last of
    ``times`` (steps in 0 … T) one step at a time, and record the phase correlation and R there."""
    times = tuple(sorted(set(int(t) for t in times)))
    if not times or times[0] < 0 or times[-1] > process.steps:
        raise UserError(f"times must be steps in 0…{process.steps}, got {times}")
    state = theta0
    correlations, gaps, orders = [], [], []
    for t in range(times[-1] + 1):
        if t in times:
            per_image = phase_correlation(state, distances)
            correlations.append(per_image.mean(dim=0))
            gaps.append((per_image[:, 0] - per_image[:, -1]).mean(dim=1).std())
            orders.append(order_parameter(state.detach().to(torch.float64))[0])
        if t < times[-1]:
            state = process.step(state, t, generator=generator)
    order = torch.stack(orders)
    return ChainSynchrony(
        times, tuple(distances), torch.stack(correlations), torch.stack(gaps), order.mean(dim=1), order.std(dim=1)
    )
