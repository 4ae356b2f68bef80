"""Where training states x_t come from, at O(1) forward cost per example (SPEC §3).

``ChainPool`` keeps N forward chains staggered in t. Every training step advances all of
them by one step (one elementwise/convolution update) and chains that reach T restart from
fresh data at t = 0, so the pool's steps stay a fixed multiset: with N a multiple of T, t
is exactly uniform over 0 … T−1. Each chain is an exact forward simulation, so a state at
step t has the distribution of direct simulation to t.

With ``carry_scores`` (the propagated objective, ``loss.py``) every chain also carries its unbiased
score estimate e_t, updated by each step (``loss.propagated_draw``); a chain restarted at t = 0 carries
zeros, which the first step's weight β_0 = 0 ignores.

``resimulate_states`` is the authors' reference: every batch is simulated from t = 0 up to
the largest sampled t, with masks (O(T) sequential steps per batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..processes import ForwardProcess
from .loss import propagated_draw

# batch size -> (encoded states at t = 0, their conditions: class labels (B,), forecasting context (B, K, H, W), or None)
DataFn = Callable[[int], tuple[Tensor, Tensor | None]]


class ChainPool:
    """N staggered forward chains; ``advance`` steps them all, ``draw`` samples a batch of (x_t, t, conditions, e_t).

    Conditions (class labels, or the previous frames a forecasting model sees) travel with their chain:
    a chain keeps the condition of the example it started from until it restarts.
    """

    def __init__(
        self, process: ForwardProcess, size: int, data_fn: DataFn, generator: torch.Generator, *, carry_scores: bool = False
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be ≥ 1, got {size}")
        self.process = process
        self.data_fn = data_fn
        self.generator = generator
        self.size = size
        # Chain i starts at step i·T/N (rounded down): a staggered, uniform spread.
        self.t = (torch.arange(size) * process.steps) // size
        x0, self.conditions = data_fn(size)
        self.estimates: Tensor | None = None
        if carry_scores:
            self.states, self.estimates = resimulate_states_and_scores(process, x0, self.t, generator)
        else:
            self.states = resimulate_states(process, x0, self.t, generator)

    def advance(self) -> None:
        """Move every chain one step forward; chains that reach T restart from fresh data at t = 0."""
        t = self.t.to(self.states.device)
        if self.estimates is None:
            self.states = self.process.step(self.states, t, generator=self.generator)
        else:
            self.states, self.estimates = _propagated_step(self.process, self.states, t, self.estimates, self.generator)
        self.t = self.t + 1
        finished = self.t >= self.process.steps
        count = int(finished.sum())
        if count:
            index = finished.nonzero().squeeze(1).to(self.states.device)
            fresh, conditions = self.data_fn(count)
            self.states[index] = fresh.to(self.states)
            if self.estimates is not None:
                self.estimates[index] = 0.0
            if self.conditions is not None and conditions is not None:
                self.conditions[index] = conditions.to(self.conditions)
            self.t[finished] = 0

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """A batch of (states, steps, conditions or None, carried score estimates or None) sampled from the pool
        without replacement (with, if larger)."""
        if batch_size <= self.size:
            index = torch.randperm(self.size, generator=self.generator)[:batch_size]
        else:
            index = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        device_index = index.to(self.states.device)
        conditions = self.conditions[device_index] if self.conditions is not None else None
        estimates = self.estimates[device_index] if self.estimates is not None else None
        return self.states[device_index], self.t[index].to(self.states.device), conditions, estimates

    def state_dict(self) -> dict[str, Tensor]:
        state = {"states": self.states.detach().cpu(), "t": self.t.clone()}
        if self.estimates is not None:
            state["estimates"] = self.estimates.detach().cpu()
        if self.conditions is not None:
            state["labels"] = self.conditions.detach().cpu()  # key kept from when only class labels travelled
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["states"].shape != self.states.shape:
            raise ValueError(f"pool states of shape {tuple(state['states'].shape)} do not fit {tuple(self.states.shape)}")
        if (self.conditions is None) != ("labels" not in state) or (
            self.conditions is not None and state["labels"].shape != self.conditions.shape
        ):
            raise ValueError("pool conditions do not fit: the checkpoint and the run disagree on class labels or context")
        if (self.estimates is None) != ("estimates" not in state):
            raise ValueError("pool score estimates do not fit: the checkpoint and the run disagree on the objective")
        self.states = state["states"].to(self.states)
        if self.estimates is not None:
            self.estimates = state["estimates"].to(self.estimates)
        self.t = state["t"].clone().long()
        if self.conditions is not None:
            self.conditions = state["labels"].to(self.conditions)


def resimulate_states(process: ForwardProcess, x0: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
    """x_t for each example, simulated from t = 0: max(t) sequential steps, examples that are done are masked."""
    x = x0
    device_t = t.to(x0.device)
    for step in range(int(t.max()) if t.numel() else 0):
        active = (device_t > step).reshape(-1, *([1] * (x.dim() - 1)))
        x = torch.where(active, process.step(x, step, generator=generator), x)
    return x


def _propagated_step(
    process: ForwardProcess, x: Tensor, t: Tensor, estimate: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One exact chain step with the carried score estimate updated (``loss.propagated_draw``)."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_next, estimate_next, _ = propagated_draw(process, x, t, estimate, noise)
    return x_next, estimate_next


def resimulate_states_and_scores(
    process: ForwardProcess, x0: Tensor, t: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """``resimulate_states`` with the propagated objective's score estimates carried along (zeros at t = 0)."""
    x, estimate = x0, torch.zeros_like(x0)
    device_t = t.to(x0.device)
    for step in range(int(t.max()) if t.numel() else 0):
        active = (device_t > step).reshape(-1, *([1] * (x.dim() - 1)))
        x_next, estimate_next = _propagated_step(process, x, torch.full_like(device_t, step), estimate, generator)
        x, estimate = torch.where(active, x_next, x), torch.where(active, estimate_next, estimate)
    return x, estimate
