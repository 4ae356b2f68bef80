"""Where training states x_t come from, at O(1) forward cost per example (SPEC §3).

``ChainPool`` keeps N forward chains staggered in t. Every training step advances n of them
(all by default) by one step, in turn (round-robin), and chains that reach T restart from fresh
data at t = 0. With n = N the pool's steps stay a fixed multiset: with N a multiple of T, t is
exactly uniform over 0 … T−1; with n < N each chain moves once every N/n training steps and the
multiset is that of n = N to within one step per chain. Each chain is an exact forward
simulation, so a state at step t has the distribution of direct simulation to t, whatever n.
n sets the forward cost of a training step (n chain steps) and the rate at which fresh data
enters (n/T examples per step); at T = 1000 all N ≥ T chains cost more than the network.

With ``carry`` (a ``CarriedStep``: the propagated objective's, ``objectives/propagated.py``) every chain also
carries an unbiased score estimate e_t, which ``carry`` updates with each step; a chain restarted at t = 0
carries zeros, which the first step's weight β_0 = 0 ignores.

``resimulate_states`` is the authors' reference: every batch is simulated from t = 0 up to
the largest sampled t (O(T) sequential steps per batch); each step only touches the rows that
have not reached their t. The pool's initial fill uses it too: Σ_i t_i ≈ N·T/2 chain steps, all
unfinished chains advanced together in one batched step per t.

``fill_trajectories`` G > 0 fills the pool more cheaply: G chains are simulated once each, to the
largest t among the chains they stand for, and chain i is trajectory (i mod G)'s state (and estimate)
at t_i, a snapshot on the way: ≈ G·T chain steps instead of N·T/2. Each chain is still an exact
simulation to its t (the same marginal), but the chains of one trajectory are dependent (chain i + G
continues chain i's state, T·G/N steps later) until they restart from fresh data, so a batch drawn
early holds correlated examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..processes import ForwardProcess

# batch size -> (encoded states at t = 0, their conditions: class labels (B,), forecasting context (B, K, H, W), or None)
DataFn = Callable[[int], tuple[Tensor, Tensor | None]]
# (process, states x, their steps t, carried estimates e, generator) -> (states at t + 1, estimates at t + 1): one exact
# chain step that also updates the score estimate each chain carries.
CarriedStep = Callable[[ForwardProcess, Tensor, Tensor, Tensor, torch.Generator | None], tuple[Tensor, Tensor]]


class ChainPool:
    """N staggered forward chains; ``advance`` steps n of them in turn, ``draw`` samples a batch of (x_t, t, conditions, e_t).

    ``fill=False`` skips simulating the chains to their starting steps, for a pool whose state is loaded next.

    Conditions (class labels, or the previous frames a forecasting model sees) travel with their chain:
    a chain keeps the condition of the example it started from until it restarts.
    """

    def __init__(
        self,
        process: ForwardProcess,
        size: int,
        data_fn: DataFn,
        generator: torch.Generator,
        *,
        carry: CarriedStep | None = None,
        advance_count: int | None = None,
        fill_trajectories: int = 0,
        fill: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be ≥ 1, got {size}")
        if advance_count is not None and advance_count < 1:
            raise ValueError(f"chains advanced per step must be ≥ 1, got {advance_count}")
        if fill_trajectories < 0:
            raise ValueError(f"fill trajectories must be ≥ 0 (0: one per chain), got {fill_trajectories}")
        self.process = process
        self.carry = carry
        self.data_fn = data_fn
        self.generator = generator
        self.size = size
        self.advance_count = size if advance_count is None else min(advance_count, size)
        self.cursor = 0  # the first chain of the next round-robin block
        # Chain i starts at step i·T/N (rounded down): a staggered, uniform spread.
        self.t = (torch.arange(size) * process.steps) // size
        self.estimates: Tensor | None = None
        if not fill:  # the states are about to be loaded (resume): the data's shape, unsimulated
            self.states, self.conditions = data_fn(size)
            self.estimates = torch.zeros_like(self.states) if carry is not None else None
            return
        if 0 < fill_trajectories < size:
            x0, conditions = data_fn(fill_trajectories)
            owner = torch.arange(size) % fill_trajectories
            self.conditions = None if conditions is None else conditions[owner.to(conditions.device)]
            self.states, self.estimates = snapshot_states(process, x0, self.t, owner, generator, carry=carry)
            return
        x0, self.conditions = data_fn(size)
        if carry is not None:
            self.states, self.estimates = resimulate_states_and_scores(process, x0, self.t, generator, carry)
        else:
            self.states = resimulate_states(process, x0, self.t, generator)

    def advance(self) -> None:
        """Move the next ``advance_count`` chains one step forward; chains that reach T restart from fresh data at t = 0."""
        if self.advance_count == self.size:
            self.states, self.estimates = self._step(self.states, self.t, self.estimates)
            self.t = self.t + 1
        else:
            chosen = (self.cursor + torch.arange(self.advance_count)) % self.size
            self.cursor = (self.cursor + self.advance_count) % self.size
            index = chosen.to(self.states.device)
            estimates = None if self.estimates is None else self.estimates[index]
            states, estimates = self._step(self.states[index], self.t[chosen], estimates)
            self.states[index] = states
            if self.estimates is not None and estimates is not None:  # _step returns estimates when given them
                self.estimates[index] = estimates
            self.t[chosen] += 1
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

    def _step(self, states: Tensor, t: Tensor, estimates: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One chain step of ``states`` at steps ``t`` (with their carried estimates, if any)."""
        device_t = t.to(states.device)
        if estimates is None or self.carry is None:
            return self.process.step(states, device_t, generator=self.generator), None
        return self.carry(self.process, states, device_t, estimates, self.generator)

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
        state = {"states": self.states.detach().cpu(), "t": self.t.clone(), "cursor": torch.tensor([self.cursor])}
        if self.estimates is not None:
            state["estimates"] = self.estimates.detach().cpu()
        if self.conditions is not None:
            state["labels"] = self.conditions.detach().cpu()  # key kept from when only class labels travelled
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["states"].shape != self.states.shape:
            raise ValueError(
                f"pool states of shape {tuple(state['states'].shape)} do not fit {tuple(self.states.shape)}"
            )
        if (self.conditions is None) != ("labels" not in state) or (
            self.conditions is not None and state["labels"].shape != self.conditions.shape
        ):
            raise ValueError(
                "pool conditions do not fit: the checkpoint and the run disagree on class labels or context"
            )
        if (self.estimates is None) != ("estimates" not in state):
            raise ValueError("pool score estimates do not fit: the checkpoint and the run disagree on the objective")
        self.states = state["states"].to(self.states)
        if self.estimates is not None:
            self.estimates = state["estimates"].to(self.estimates)
        self.t = state["t"].clone().long()
        # Checkpoints from before round-robin advancing have no cursor; they advanced every chain.
        self.cursor = int(state["cursor"][0]) % self.size if "cursor" in state else 0
        if self.conditions is not None:
            self.conditions = state["labels"].to(self.conditions)


def resimulate_states(process: ForwardProcess, x0: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
    """x_t for each example, simulated from t = 0: max(t) sequential steps, each over the examples not yet at their t."""
    return _advance_each((x0,), t, lambda rows, step: (process.step(rows[0], step, generator=generator),))[0]


def resimulate_states_and_scores(
    process: ForwardProcess, x0: Tensor, t: Tensor, generator: torch.Generator | None, carry: CarriedStep
) -> tuple[Tensor, Tensor]:
    """``resimulate_states`` with the score estimates ``carry`` updates carried along (zeros at t = 0)."""

    def step_rows(rows: tuple[Tensor, ...], step: int) -> tuple[Tensor, Tensor]:
        x, estimate = rows
        return carry(process, x, torch.full((len(x),), step, device=x.device), estimate, generator)

    x, estimate = _advance_each((x0, torch.zeros_like(x0)), t, step_rows)
    return x, estimate


def snapshot_states(
    process: ForwardProcess,
    x0: Tensor,
    t: Tensor,
    owner: Tensor,
    generator: torch.Generator | None,
    *,
    carry: CarriedStep | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(x_t, the score estimates ``carry`` updates, or None) for each row i: trajectory owner[i]'s state after t_i
    steps, each trajectory (a row of x0) simulated once, to the largest t of its rows (see the module docstring)."""
    if carry is not None:

        def step_rows(rows: tuple[Tensor, ...], step: int) -> tuple[Tensor, ...]:
            x, estimate = rows
            return carry(process, x, torch.full((len(x),), step, device=x.device), estimate, generator)

        x, estimate = _snapshot_each((x0, torch.zeros_like(x0)), t, owner, step_rows)
        return x, estimate
    (x,) = _snapshot_each((x0,), t, owner, lambda rows, step: (process.step(rows[0], step, generator=generator),))
    return x, None


def _snapshot_each(
    tensors: tuple[Tensor, ...],
    t: Tensor,
    owner: Tensor,
    step_rows: Callable[[tuple[Tensor, ...], int], tuple[Tensor, ...]],
) -> tuple[Tensor, ...]:
    """Row i of the results is trajectory owner[i]'s tensors after t_i steps of ``step_rows`` (``_advance_each``'s
    contract): the trajectories are advanced together, those that still have rows ahead of them (a prefix once
    sorted by horizon), and every row is copied out at its step."""
    t, owner = t.cpu(), owner.cpu()
    horizon = torch.full((len(tensors[0]),), -1, dtype=t.dtype).scatter_reduce(0, owner, t, "amax")
    order = torch.argsort(horizon, descending=True, stable=True)
    remaining = horizon[order]
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))  # trajectory -> its row among the sorted ones
    device = tensors[0].device
    rows = [x[order.to(device)] for x in tensors]  # copies, advanced in place
    results = [torch.empty((len(t), *x.shape[1:]), dtype=x.dtype, device=x.device) for x in tensors]
    by_step = torch.argsort(t, stable=True)
    boundaries = torch.searchsorted(t[by_step], torch.arange(int(t.max()) + 2)).tolist()
    for step in range(int(t.max()) + 1):
        due = by_step[boundaries[step] : boundaries[step + 1]]  # the rows whose t is this step
        if len(due):
            source = position[owner[due]].to(device)
            for result, row in zip(results, rows):
                result[due.to(device)] = row[source]
        active = int((remaining > step).sum())
        if active:
            advanced = step_rows(tuple(r[:active] for r in rows), step)
            for row, new in zip(rows, advanced):
                row[:active] = new
    return tuple(results)


def _advance_each(
    tensors: tuple[Tensor, ...], t: Tensor, step_rows: Callable[[tuple[Tensor, ...], int], tuple[Tensor, ...]]
) -> tuple[Tensor, ...]:
    """Row i of every tensor advanced t_i steps by ``step_rows(rows, step)`` (the rows at step + 1).

    Sorted by t (descending), the rows still short of their t are a prefix, so step s touches only the
    #(t > s) rows that need it: Σ t_i row-steps in all instead of N·max(t)."""
    if not len(t):
        return tuple(tensors)
    t = t.cpu()
    order = torch.argsort(t, descending=True, stable=True)
    remaining = t[order]
    device_order = order.to(tensors[0].device)
    rows = [x[device_order] for x in tensors]  # copies, advanced in place
    for step in range(int(remaining[0])):
        active = int((remaining > step).sum())
        advanced = step_rows(tuple(r[:active] for r in rows), step)
        for row, new in zip(rows, advanced):
            row[:active] = new
    results = []
    for x, row in zip(tensors, rows):
        result = torch.empty_like(x)
        result[device_order] = row
        results.append(result)
    return tuple(results)


def default_pool_size(steps: int, batch_size: int) -> int:
    """max(T, 4·batch) rounded up to a multiple of T, so that t is exactly uniform in the pool."""
    wanted = max(steps, 4 * batch_size)
    return math.ceil(wanted / steps) * steps


def default_pool_advance(pool_size: int, batch_size: int) -> int:
    """min(pool size, 8·batch): at most 8 chain steps per starting state and training step.

    With the default pool this advances every chain up to T = 8·batch (T = 100: all 200 chains at batch 32).
    At T = 1000 it is 256 of 1000 chains: the forward state's share of a step stays small (BENCHMARKS.md,
    "Training throughput"), while each chain still walks the exact chain, only more slowly."""
    return min(pool_size, 8 * batch_size)
