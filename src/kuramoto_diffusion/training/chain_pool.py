"""Where training states x_t come from, at O(1) forward cost per example (SPEC §3).

``ChainPool`` keeps N forward chains staggered in t. Every training step advances all of
them by one step (one elementwise/convolution update) and chains that reach T restart from
fresh data at t = 0, so the pool's steps stay a fixed multiset: with N a multiple of T, t
is exactly uniform over 0 … T−1. Each chain is an exact forward simulation, so a state at
step t has the distribution of direct simulation to t.

``resimulate_states`` is the authors' reference: every batch is simulated from t = 0 up to
the largest sampled t, with masks (O(T) sequential steps per batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..processes import ForwardProcess

# batch size -> (encoded states at t = 0, their conditions: class labels (B,), forecasting context (B, K, H, W), or None)
DataFn = Callable[[int], tuple[Tensor, Tensor | None]]


class ChainPool:
    """N staggered forward chains; ``advance`` steps them all, ``draw`` samples a batch of (x_t, t, conditions).

    Conditions (class labels, or the previous frames a forecasting model sees) travel with their chain:
    a chain keeps the condition of the example it started from until it restarts.
    """

    def __init__(self, process: ForwardProcess, size: int, data_fn: DataFn, generator: torch.Generator) -> None:
        if size < 1:
            raise ValueError(f"pool size must be ≥ 1, got {size}")
        self.process = process
        self.data_fn = data_fn
        self.generator = generator
        self.size = size
        # Chain i starts at step i·T/N (rounded down): a staggered, uniform spread.
        self.t = (torch.arange(size) * process.steps) // size
        x0, self.conditions = data_fn(size)
        self.states = resimulate_states(process, x0, self.t, generator)

    def advance(self) -> None:
        """Move every chain one step forward; chains that reach T restart from fresh data at t = 0."""
        t = self.t.to(self.states.device)
        self.states = self.process.step(self.states, t, generator=self.generator)
        self.t = self.t + 1
        finished = self.t >= self.process.steps
        count = int(finished.sum())
        if count:
            index = finished.nonzero().squeeze(1).to(self.states.device)
            fresh, conditions = self.data_fn(count)
            self.states[index] = fresh.to(self.states)
            if self.conditions is not None and conditions is not None:
                self.conditions[index] = conditions.to(self.conditions)
            self.t[finished] = 0

    def draw(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """A batch of (states, steps, conditions or None) sampled from the pool without replacement (with, if larger)."""
        if batch_size <= self.size:
            index = torch.randperm(self.size, generator=self.generator)[:batch_size]
        else:
            index = torch.randint(0, self.size, (batch_size,), generator=self.generator)
        device_index = index.to(self.states.device)
        conditions = self.conditions[device_index] if self.conditions is not None else None
        return self.states[device_index], self.t[index].to(self.states.device), conditions

    def state_dict(self) -> dict[str, Tensor]:
        state = {"states": self.states.detach().cpu(), "t": self.t.clone()}
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
        self.states = state["states"].to(self.states)
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
