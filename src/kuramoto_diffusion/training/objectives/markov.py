"""The Markov objective: the merged-stride kernel across a DSM window, from chain states (SPEC §3).

From a chain state x_s at step s, a stride h uniform in 1 … min(window, T − s) and the kernel
x' = project(μ + σ z), μ = transition_mean(x_s, s, h), σ = transition_scale(s, h) (Euler across the window,
exact for h = 1: the paper's loss). In expectation over x_s the target is the marginal score at s + h, biased
O(h) by the merged window. For the Euclidean VP process, whose strides are exact, every example starts from
the data with h uniform in 1 … T: the target c·s* is the noise ε and the loss is DDPM's ε-prediction.

With an anchor horizon, queries at t ≤ anchor start from the data (s = 0, stride t) with the linearised kernel
instead (accurate from the data while the chain is still close to linear, exact for one step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Objective, StartingStates, kernel_draw

DEFAULT_MARKOV_WINDOW = 10  # the best window on the 2-torus benchmark at T = 100 (BENCHMARKS.md)


def window_strides(t_start: Tensor, steps: int, window: int, generator: torch.Generator | None) -> Tensor:
    """The DSM window's strides: h uniform in 1 … min(window, T − s) for each start step s, so that every query
    step 1 … T is trained."""
    room = torch.clamp(steps - t_start, max=window)
    uniform = torch.rand(t_start.shape, generator=generator, device=t_start.device)
    return 1 + (uniform * room).long()


class MarkovObjective(Objective):
    """The merged-stride kernel across the window (default 10 fine steps), anchored early queries optional."""

    linearised: bool = False  # every row takes the linearised kernel (the subclass LinearisedObjective)

    def default_window(self, window: int) -> int:
        return window or min(DEFAULT_MARKOV_WINDOW, self.process.steps)

    def chain_strides(
        self, x: Tensor, t: Tensor, conditions: Tensor | None, estimates: Tensor | None, generator: torch.Generator
    ) -> StartingStates:
        stride = window_strides(t, self.process.steps, self.window, generator)
        if self.anchor:
            return self._anchor_early_queries(x, t, stride, conditions)
        return StartingStates(x, t, stride, conditions, None)

    def _anchor_early_queries(self, x: Tensor, t: Tensor, stride: Tensor, conditions: Tensor | None) -> StartingStates:
        """Rows whose query step s + stride is at most the anchor start from fresh data at s = 0 instead, with the
        same query step: their linearised kernel is then anchored at the data, as DDPM's are."""
        query = t + stride
        early = query <= self.anchor
        count = int(early.sum())
        if not count:
            return StartingStates(x, t, stride, conditions, None)
        fresh, fresh_conditions = self._data(count)
        x, t, stride = x.clone(), t.clone(), stride.clone()
        x[early] = fresh.to(x)
        t[early] = 0
        stride[early] = query[early]
        if conditions is not None and fresh_conditions is not None:
            conditions = conditions.clone()
            conditions[early] = fresh_conditions.to(conditions)
        return StartingStates(x, t, stride, conditions, None)

    def draw(self, start: StartingStates, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Rows from the data (s = 0) take the linearised kernel when anchored, whatever their origin.
        linearised: bool | Tensor = self.linearised or (self.anchor > 0 and start.t == 0)
        return kernel_draw(self.process, start.x, start.t, start.stride, noise, linearised=linearised)
