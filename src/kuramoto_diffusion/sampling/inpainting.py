"""Inpainting (RePaint-style): the reverse sweep with a known region held to the known data.

After each interval that lands on step t the known region is overwritten by the known data pushed forward
to t along a forward chain drawn before the sweep (there is no closed-form marginal on the torus), and at
t = 0 by the known data itself; optional resampling redoes each interval after going back up with the
forward kernel, so the filled region can adjust to what was pasted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError
from ..processes import ForwardProcess
from ..processes.base import ScoreFn
from .steps import Sampler, as_sampler
from .sweep import SampleResult, run_sweep, sweep_grid


@torch.no_grad()
def inpaint_sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    known: Tensor,
    known_mask: Tensor,
    *,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    start_step: int | None = None,
    resample: int = 1,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
) -> SampleResult:
    """``reverse_sweep`` that keeps the region where ``known_mask`` is 1 consistent with the states ``known`` (at t = 0).

    ``known`` has the shape of ``x_start``; ``known_mask`` (1 = known, 0 = to fill) broadcasts against it.
    Before the sweep, ``known`` is pushed forward along one chain through the grid points
    (``forward_transition``: exact kernels, single steps on the torus). At the start and after every
    interval that lands on step t, the known region of the state is replaced by that chain at t; at
    t = 0 by ``known`` itself. With a coupled process (Kuramoto) the chain of the known pixels also
    feels the values of ``known`` under known_mask 0 through the coupling. ``resample`` = r ≥ 1 runs each
    interval r times, going back up with ``forward_transition`` between runs (RePaint's resampling);
    ``function_evaluations`` counts every run. The chain draws its noise from
    ``independent_generator(generator)``, so an all-zero known_mask reproduces ``reverse_sweep`` exactly.
    The chain is held in memory: one state per grid point.
    """
    if known.shape != x_start.shape:
        raise UserError(
            f"known states of size {format_size(known.shape)} differ from the sampled states' {format_size(x_start.shape)}"
        )
    check_inpainting_mask(known_mask, x_start.shape)
    sampler = as_sampler(sampler)
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise UserError(f"resample must be an integer ≥ 1 (1 = no resampling), got {resample!r}")
    grid = sweep_grid(process, sampler, nfe, start_step)
    known = known.to(dtype=x_start.dtype, device=x_start.device)
    keep = known_mask.to(device=x_start.device) != 0
    region = KnownRegion(
        process, known_forward_chain(process, known, grid, independent_generator(generator)), keep, resample
    )
    return run_sweep(
        process,
        score_fn,
        x_start,
        grid,
        sampler=sampler,
        generator=generator,
        record_trajectory=record_trajectory,
        constraint=region,
    )


@dataclass(frozen=True)
class KnownRegion:
    """The known data's forward chain on the sweep grid, where it replaces the sampled state, and how many
    times each interval runs (``sweep.Constraint``)."""

    process: ForwardProcess
    chain: dict[int, Tensor]  # step t -> the known states at t (t = 0: the known states themselves)
    keep: Tensor  # bool, True where the state is known; broadcasts against the states
    resample: int = 1

    def paste(self, x: Tensor, step: int) -> Tensor:
        """x with the known region replaced by the chain at ``step``."""
        return torch.where(self.keep, self.chain[step], x)

    def back_up(self, x: Tensor, lower: int, upper: int, generator: torch.Generator | None) -> Tensor:
        """States at ``upper`` drawn from the forward process given x at ``lower``, to redo the interval."""
        return forward_transition(self.process, x, lower, upper, generator)


def forward_transition(
    process: ForwardProcess, x: Tensor, lower: int, upper: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw states at step ``upper`` given states x at step ``lower`` < ``upper`` from the forward process.

    One exact strided kernel when the process has one (VP); otherwise ``upper − lower`` single steps,
    since a merged Kuramoto stride is only an Euler approximation of the chain the network learnt.
    """
    if process.closed_form_marginal:
        return process.step(x, lower, upper - lower, generator)
    return process.simulate(x, upper, generator=generator, t_start=lower)


def known_forward_chain(
    process: ForwardProcess, known: Tensor, grid: list[int], generator: torch.Generator | None = None
) -> dict[int, Tensor]:
    """``known`` (states at t = 0) pushed forward along one chain: {t: states at t} for every t of ``grid`` and 0."""
    chain = {0: known}
    x = known
    ascending = sorted(set(grid) | {0})
    for lower, upper in zip(ascending[:-1], ascending[1:]):
        x = forward_transition(process, x, lower, upper, generator)
        chain[upper] = x
    return chain


def independent_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A generator on the same device seeded from ``generator``'s current state, which it leaves unchanged.

    Its stream differs from ``generator``'s, and the same state always gives the same seed. None stays None.
    """
    if generator is None:
        return None
    state = generator.get_state().cpu().numpy().tobytes()
    seed = int.from_bytes(hashlib.sha256(b"known-chain" + state).digest()[:8], "little") >> 1
    return torch.Generator(device=generator.device).manual_seed(seed)


def check_inpainting_mask(mask: Tensor, shape: tuple[int, ...] | torch.Size, what: str = "states") -> None:
    """Raise a UserError unless ``mask`` holds only 0 and 1 and each of its axes is 1 or the size of ``shape``'s."""
    if not isinstance(mask, Tensor):
        raise UserError(f"the mask must be a tensor of 0 and 1, got {type(mask).__name__}")
    fits = mask.dim() == len(shape) and all(m in (1, s) for m, s in zip(mask.shape, shape))
    if not fits:
        raise UserError(
            f"mask of size {format_size(mask.shape)} and {what} of size {format_size(shape)} differ; "
            "each mask axis must be 1 or the matching size"
        )
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        value = float(mask[~binary].flatten()[0])
        raise UserError(
            f"mask values must be 0 or 1, found {value:g}; threshold a soft mask first, e.g. (mask > 0.5).float()"
        )


def format_size(shape: tuple[int, ...] | torch.Size) -> str:
    """A shape as "N×C×H×W"."""
    return "×".join(str(n) for n in shape)
