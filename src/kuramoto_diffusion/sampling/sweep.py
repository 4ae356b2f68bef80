"""Samplers: reverse SDE, probability-flow ODE (Euler, Heun), forward-then-reverse (SPEC §5).

A sweep walks a decreasing grid of steps t_0 = start > t_1 > … > t_n = 0. Each interval
[s, t] (stride h = t − s) merges the schedule over its fine steps (summed K and σ², or the
exact VP factors), so NFE < T works. With drift D = drift(x, s, h), variance v = σ²(s, h)
and the score s(x, t) = F(x, t)/c(t) of the network, on the torus:

    reverse SDE:  θ ← wrap( θ − D + v·s(θ, t) + √v·z )     (no noise on the last interval)
    Euler–Maruyama on the continuous reverse SDE dx = [f − g²·s]dt + g·dw̄, for every process:
                  x ← project( x − F + G·s(x, t) + √G·z ),  F = ∫f, G = ∫g² over the interval
                  (``flow_drift``, ``flow_noise_variance``). A Kuramoto chain is the Euler scheme of
                  its SDE, so there this is the "sde" step itself; for VP it is score_sde's
                  Euler–Maruyama predictor, x + ½B·x + B·s + √B·z with B = ∫β, not DDPM's ancestral step
    ODE (Euler):  θ ← wrap( θ − D + ½v·s(θ, t) )
    ODE (Heun):   θ̃ = Euler step;  θ̂ = Euler step from θ̃ with s(θ̃, s);
                  θ ← wrap( θ + ½(wrap(θ̃ − θ) + wrap(θ̂ − θ̃)) )   (Euler on the last interval)
    PC:           at each grid step t > 0, N Langevin corrector steps at t, then the reverse SDE:
                  ε = 2·r²·mean(z²)/mean(s(θ, t)²),  θ ← wrap( θ + ε·s(θ, t) + √(2ε)·z )
                  (score_sde's corrector with target signal-to-noise ratio r; means over the batch)

Time grids (``Sampler.grid``): "uniform" spreads the grid evenly in t; "rho" carries EDM's
ρ-spacing over to the process's noise level L(t) (``ForwardProcess.noise_level``: √Σσ² of the
chain on the torus, EDM's σ(t) = √((1 − ᾱ_t)/ᾱ_t) for VP): L_i = (L_max^{1/ρ} + i/(k−1)·(L_min^{1/ρ}
− L_max^{1/ρ}))^ρ for i < k between L(start) and L(1), each mapped to the integer step of the nearest
level (kept strictly decreasing), then 0.

The process owns the step formulas (``reverse_sde_mean``, ``reverse_ode_step``): the
Euclidean baseline uses DDPM's ancestral step and DDIM / EDM-Heun, its standard
integrators, so that comparisons are against a well-sampled baseline.

Inpainting (``inpaint_sweep``, RePaint-style): the same sweep, but after each interval that
lands on step t the known region is overwritten by the known data pushed forward to t along a
forward chain drawn before the sweep (there is no closed-form marginal on the torus), and at
t = 0 by the known data itself; optional resampling redoes each interval after going back up
with the forward kernel, so the filled region can adjust to what was pasted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..circular import order_parameter
from ..errors import UserError
from ..processes import ForwardProcess
from ..processes.base import ScoreFn

SAMPLERS = ("sde", "ode", "ode-heun", "pc", "euler-maruyama")
GRIDS = ("uniform", "rho")
DEFAULT_SNR = 0.16  # score_sde's for VP models on CIFAR-10


@dataclass(frozen=True)
class Sampler:
    """How a reverse sweep integrates: the integrator, its time grid and, for "pc", the Langevin corrector.

    ``name``: "sde" (Euler–Maruyama; DDPM's ancestral step for VP), "ode" (probability-flow Euler;
    DDIM for VP), "ode-heun" (second order), "pc" (the reverse SDE as predictor, each grid step
    first corrected by ``corrector_steps`` Langevin steps at target signal-to-noise ratio ``snr``;
    defaults 1 and ``DEFAULT_SNR``) or "euler-maruyama" (Euler–Maruyama on the continuous reverse
    SDE for every process, VP included: the sampler of the paper's Euclidean baseline, as we infer). ``grid``: "uniform" or "rho" with exponent ``rho`` (module
    docstring). Everywhere a sampler is taken, its name alone is short for ``Sampler(name)``.
    """

    name: str = "sde"
    grid: str = "uniform"
    rho: float = 7.0
    corrector_steps: int | None = None
    snr: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise UserError(f"unknown sampler {self.name!r}; valid values are {', '.join(SAMPLERS)}")
        if self.grid not in GRIDS:
            raise UserError(f"unknown time grid {self.grid!r}; valid values are {', '.join(GRIDS)}")
        if not (isinstance(self.rho, (int, float)) and math.isfinite(self.rho) and self.rho > 0):
            raise UserError(f"rho must be a finite number > 0, got {self.rho!r}")
        if self.name != "pc":
            if self.corrector_steps is not None or self.snr is not None:
                raise UserError(
                    f"the {self.name} sampler has no corrector; corrector steps and snr belong to the pc sampler"
                )
            return
        steps = 1 if self.corrector_steps is None else self.corrector_steps
        snr = DEFAULT_SNR if self.snr is None else self.snr
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"corrector steps must be an integer ≥ 1, got {steps!r}")
        if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not math.isfinite(snr) or snr <= 0:
            raise UserError(f"snr must be a finite number > 0, got {snr!r}")
        object.__setattr__(self, "corrector_steps", steps)
        object.__setattr__(self, "snr", float(snr))

    @property
    def label(self) -> str:
        """A short description, e.g. "sde", "pc (1 corrector step, snr 0.16)", "ode-heun, rho 7 grid"."""
        label = self.name
        if self.name == "pc":
            plural = "s" if self.corrector_steps != 1 else ""
            label += f" ({self.corrector_steps} corrector step{plural}, snr {self.snr:g})"
        return label + (f", rho {self.rho:g} grid" if self.grid == "rho" else "")

    @property
    def evaluations_per_interval(self) -> int:
        """Network evaluations of one grid interval, except the last of ode-heun (an Euler step)."""
        if self.name == "ode-heun":
            return 2
        return 1 + (self.corrector_steps or 0)


def as_sampler(sampler: "str | Sampler") -> Sampler:
    """A ``Sampler`` from a sampler or its name."""
    return sampler if isinstance(sampler, Sampler) else Sampler(sampler)


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


def intervals_for_nfe(sampler: "str | Sampler", nfe: int) -> int:
    """How many grid intervals a sampler can afford with ``nfe`` network evaluations (at least one)."""
    sampler = as_sampler(sampler)
    if nfe < 1:
        raise UserError(f"nfe must be ≥ 1, got {nfe}")
    if sampler.name == "ode-heun":
        return (nfe + 1) // 2  # two evaluations per interval except the last, an Euler step
    return max(1, nfe // sampler.evaluations_per_interval)


def sweep_grid(
    process: ForwardProcess, sampler: "str | Sampler", nfe: int | None = None, start_step: int | None = None
) -> list[int]:
    """The decreasing grid start_step (default T) … 0 of a sweep with ``nfe`` network evaluations (default: one per step)."""
    sampler = as_sampler(sampler)
    start = process.steps if start_step is None else start_step
    if not 1 <= start <= process.steps:
        raise UserError(f"start step must be in 1…{process.steps}, got {start}")
    intervals = intervals_for_nfe(sampler, nfe if nfe is not None else start)
    if sampler.grid == "rho":
        return rho_step_grid(process, start, intervals, sampler.rho)
    return step_grid(start, intervals)


@torch.no_grad()
def reverse_sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    *,
    sampler: "str | Sampler" = "sde",
    nfe: int | None = None,
    start_step: int | None = None,
    generator: torch.Generator | None = None,
    record_trajectory: bool = False,
) -> SampleResult:
    """Run the reverse process from states ``x_start`` at ``start_step`` (default T) down to t = 0."""
    sampler = as_sampler(sampler)
    grid = sweep_grid(process, sampler, nfe, start_step)
    return _sweep(process, score_fn, x_start, grid, sampler=sampler, generator=generator, record_trajectory=record_trajectory)


@torch.no_grad()
def inpaint_sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    known: Tensor,
    known_mask: Tensor,
    *,
    sampler: "str | Sampler" = "sde",
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
    region = KnownRegion(known_forward_chain(process, known, grid, independent_generator(generator)), keep)
    return _sweep(
        process, score_fn, x_start, grid, sampler=sampler, generator=generator,
        record_trajectory=record_trajectory, known=region, resample=resample,
    )


@dataclass(frozen=True)
class KnownRegion:
    """The known data's forward chain on the sweep grid, and where it replaces the sampled state."""

    chain: dict[int, Tensor]  # step t -> the known states at t (t = 0: the known states themselves)
    keep: Tensor  # bool, True where the state is known; broadcasts against the states

    def paste(self, x: Tensor, step: int) -> Tensor:
        """x with the known region replaced by the chain at ``step``."""
        return torch.where(self.keep, self.chain[step], x)


def _sweep(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x_start: Tensor,
    grid: list[int],
    *,
    sampler: Sampler,
    generator: torch.Generator | None,
    record_trajectory: bool,
    known: KnownRegion | None = None,
    resample: int = 1,
) -> SampleResult:
    """The loop shared by ``reverse_sweep`` and ``inpaint_sweep`` over the decreasing ``grid``."""
    x = x_start if known is None else known.paste(x_start, grid[0])
    trajectory = [x.cpu()] if record_trajectory else None
    # R(t) costs a device synchronisation per step, so it is only tracked with the trajectory.
    order = [_mean_order(process, x)] if record_trajectory else []
    evaluations = 0
    crossings: list[Tensor] = []  # counted on the device, read once at the end
    for upper, lower in zip(grid[:-1], grid[1:]):
        before = x
        for repeat in range(resample):
            if repeat > 0:  # back up to `upper` with the forward kernel and redo the interval
                x = forward_transition(process, x, lower, upper, generator)
            x, used = reverse_interval(process, score_fn, x, upper, lower, sampler, generator)
            evaluations += used
            if known is not None:
                x = known.paste(x, lower)
        if process.periodic:
            crossings.append(((process.order_phases(x) - process.order_phases(before)).abs() > math.pi).sum())
        if trajectory is not None:
            trajectory.append(x.cpu())
            order.append(_mean_order(process, x))
    seam = torch.stack(crossings).tolist() if crossings else []
    return SampleResult(x, grid, trajectory, order, evaluations, seam)


def reverse_interval(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """One interval of ``sampler`` from states x at step ``upper`` down to ``lower``; returns (x, network evaluations)."""
    if sampler.name in ("sde", "pc"):
        corrections = sampler.corrector_steps or 0
        for _ in range(corrections):
            x = langevin_corrector_step(process, x, score_fn(x, upper), sampler.snr, generator)
        return reverse_sde_step(process, x, score_fn(x, upper), upper, lower, generator), 1 + corrections
    if sampler.name == "euler-maruyama":
        return euler_maruyama_step(process, x, score_fn(x, upper), upper, lower, generator), 1
    return process.reverse_ode_step(x, score_fn, upper, lower, heun=sampler.name == "ode-heun")


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


def reverse_sde_step(
    process: ForwardProcess,
    x: Tensor,
    score: Tensor,
    upper: int,
    lower: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One reverse-SDE interval from states ``x`` at step ``upper`` to step ``lower``, given the score at (x, upper).

    The process's mean step plus √v·z noise (drawn with ``generator`` on x's device), no noise when lower = 0.
    """
    stride = upper - lower
    x = process.reverse_sde_mean(x, score, lower, stride)
    if lower == 0:
        return x
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return process.project(x + process.transition_scale(lower, stride, like=x) * noise)


def euler_maruyama_step(
    process: ForwardProcess,
    x: Tensor,
    score: Tensor,
    upper: int,
    lower: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One Euler–Maruyama step of the continuous reverse SDE from states ``x`` at ``upper`` to ``lower``.

    x ← project(x − F + G·score + √G·z) with F = ∫f (``flow_drift``) and G = ∫g² (``flow_noise_variance``)
    over the interval, both at x; no noise when lower = 0.
    """
    stride = upper - lower
    variance = process.flow_noise_variance(lower, stride, like=x)
    x = x - process.flow_drift(x, lower, stride) + variance * score
    if lower > 0:
        x = x + variance.sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return process.project(x)


def langevin_corrector_step(
    process: ForwardProcess, x: Tensor, score: Tensor, snr: float, generator: torch.Generator | None = None
) -> Tensor:
    """One Langevin step towards the marginal at the score's step: x ← project(x + ε·score + √(2ε)·z).

    ε = 2·snr²·mean(z²)/mean(score²), the means over the whole batch: the step whose drift is ``snr``
    times its noise in root-mean-square size (score_sde's rule, which averages the per-sample norms
    over the batch). Per sample, the ratio is heavy-tailed in low dimension: a sample at a mode of
    p_t has a score near 0 and would get an unbounded step. score_sde's extra factor α_t = 1 − β_t
    for VP is left out, for every process alike: it only scales ε (by 0.8 at worst, at t = T when
    T = 100), as a smaller ``snr`` would. A zero score leaves x unchanged.
    """
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    score_power = score.square().mean()
    if not bool(score_power > 0):
        return x
    step_size = 2.0 * snr**2 * noise.square().mean() / score_power
    return process.project(x + step_size * score + (2.0 * step_size).sqrt() * noise)


def _mean_order(process: ForwardProcess, x: Tensor) -> float:
    return float(order_parameter(process.order_phases(x))[0].mean())
