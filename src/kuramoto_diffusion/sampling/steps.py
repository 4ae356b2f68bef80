"""The reverse steps: one registry, name -> step, used by the sweep (``sweep.py``) and ``DiffusionScheduler.step``.

A step moves states x from grid step ``upper`` down to ``lower`` (stride h = upper − lower, merging the schedule
over its fine steps) and returns (x, network evaluations). With drift D = drift(x, lower, h), variance
v = σ²(lower, h) and the score s(x, t) = F(x, t)/c(t) of the network:

    sde:             x ← project( x − D + v·s(x, upper) + √v·z )   (the process's ``reverse_sde_mean``: DDPM's
                     ancestral step for VP; no noise on the last interval)
    euler-maruyama:  x ← project( x − F + G·s(x, upper) + √G·z ),  F = ∫f, G = ∫g² over the interval
                     (``flow_drift``, ``flow_noise_variance``): Euler–Maruyama on the continuous reverse SDE, for
                     every process. On the torus a Kuramoto chain is the Euler scheme of its SDE, so this is the
                     "sde" step up to rounding; for VP it is score_sde's predictor x + ½B·x + B·s + √B·z, B = ∫β
    ode, ode-heun:   the probability-flow ODE, Euler or Heun (``probability_flow_step``, below)
    sde-heun:        a stochastic Heun step for few NFE: Heun's average over denoised estimates x + S_t·s
                     (S_t = ∫₀ᵗ g²) at both ends, the noise of a drift-free process's exact reverse kernel
                     (``sde_heun``)
    pc:              N Langevin corrector steps at ``upper``, then the sde step:
                     ε = 2·r²·mean(z²)/mean(s(x, upper)²),  x ← project( x + ε·s + √(2ε)·z )
                     (score_sde's corrector with target signal-to-noise ratio r; means over the batch)

The ODE's Euler/Heun control flow is written once, in ``probability_flow_step``, as in EDM's sampler: Euler
x̃ = x + h·d(x), then (Heun) x ← x + h·½(d(x) + d(x̃)). Each process supplies only its slope, in its own
variables (``ForwardProcess.probability_flow``): the wrapped displacement of its chain's half-noise Euler step
on the torus, dy/dσ in EDM's y = x/√ᾱ for VP (so Euler is DDIM); the likelihood (``likelihood.py``) runs the
same control flow forwards. The score is not defined at t = 0, so the last interval of ode-heun is Euler.

How to add a sampler: write its step function (the signature of ``StepFunction``) and add one line to
``REVERSE_STEPS``. The CLI's ``--sampler`` choices, ``Sampler``'s validation, the NFE accounting and the
scheduler all read the registry; nothing else compares sampler names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..processes import ForwardProcess
from ..processes.base import ProbabilityFlow, ScoreFn
from .grids import GRIDS

DEFAULT_SNR = 0.16  # score_sde's for VP models on CIFAR-10

# (process, score_fn, x at ``upper``, upper, lower, sampler, generator) -> (x at ``lower``, network evaluations)
StepFunction = Callable[
    [ForwardProcess, ScoreFn, Tensor, int, int, "Sampler", "torch.Generator | None"], "tuple[Tensor, int]"
]


@dataclass(frozen=True)
class ReverseStep:
    """A registry entry: the step function and what the rest of the package needs to know about it.

    ``second_order``: it evaluates the score again at the interval's lower end (two evaluations per interval,
    one on the last, whose end t = 0 has no score). ``corrector``: it takes Langevin corrector steps
    (``Sampler.corrector_steps``, ``snr``) before each interval. ``corrected``: the sampler this one becomes
    when corrector settings are given (sde -> pc). ``stepwise``: ``DiffusionScheduler`` offers it, one network
    evaluation per ``step`` call (a stepwise step must draw no noise before its last evaluation of an interval,
    since the scheduler reruns the interval from its start with the scores so far; pc's corrector does).
    """

    run: StepFunction
    second_order: bool = False
    corrector: bool = False
    corrected: str | None = None
    stepwise: bool = False

    def query_steps(self, upper: int, lower: int) -> tuple[int, ...]:
        """The steps at which one interval evaluates the network, in order (corrector evaluations not counted)."""
        return (upper, lower) if self.second_order and lower > 0 else (upper,)


# ----- the probability-flow ODE: Euler and Heun, once for every process ----------------------
def probability_flow_step(
    flow: ProbabilityFlow[Any, Any], x: Any, start: int, end: int, second_order: bool
) -> tuple[Any, int]:
    """One Euler (or, with ``second_order``, Heun) step of ``flow`` from states x at step ``start`` to ``end``.

    Euler: x̃ = advance(x, d(x, start)). Heun: x ← advance(x, ½(d(x, start) + d(x̃, end))).
    Returns (states, network evaluations). ``start`` > ``end`` for the samplers, < for the likelihood.
    """
    x_euler, first = flow.euler(x, start)
    if not second_order:
        return x_euler, 1
    second = flow.slope(x_euler, end)
    return flow.advance(x, 0.5 * (first + second)), 2


# ----- the steps ----------------------------------------------------------------------------
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


def sde(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """The reverse SDE: the process's mean step (``reverse_sde_mean``) plus √v·z noise, v = σ²(lower, upper − lower),
    drawn with ``generator`` on x's device; no noise when lower = 0."""
    stride = upper - lower
    x = process.reverse_sde_mean(x, score_fn(x, upper), lower, stride)
    if lower == 0:
        return x, 1
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return process.project(x + process.transition_scale(lower, stride, like=x) * noise), 1


def predictor_corrector(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """``sampler.corrector_steps`` Langevin corrector steps at ``upper``, then the reverse SDE."""
    corrections = sampler.corrector_steps or 0
    for _ in range(corrections):
        x = langevin_corrector_step(process, x, score_fn(x, upper), sampler.snr or DEFAULT_SNR, generator)
    x, evaluations = sde(process, score_fn, x, upper, lower, sampler, generator)
    return x, evaluations + corrections


def euler_maruyama(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """Euler–Maruyama on the continuous reverse SDE: x ← project(x − F + G·s(x, upper) + √G·z) with F = ∫f
    (``flow_drift``) and G = ∫g² (``flow_noise_variance``) over the interval, both at x; no noise when lower = 0."""
    stride = upper - lower
    variance = process.flow_noise_variance(lower, stride, like=x)
    x = x - process.flow_drift(x, lower, stride) + variance * score_fn(x, upper)
    if lower > 0:
        x = x + variance.sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return process.project(x), 1


def ode_euler(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """The probability-flow ODE, one Euler step (DDIM for VP)."""
    return probability_flow_step(process.probability_flow(score_fn, upper, lower), x, upper, lower, second_order=False)


def ode_heun(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """The probability-flow ODE, one Heun step (EDM's 2nd-order sampler for VP); Euler into t = 0."""
    flow = process.probability_flow(score_fn, upper, lower)
    return probability_flow_step(flow, x, upper, lower, second_order=lower > 0)


def sde_heun(
    process: ForwardProcess,
    score_fn: ScoreFn,
    x: Tensor,
    upper: int,
    lower: int,
    sampler: Sampler,
    generator: torch.Generator | None,
) -> tuple[Tensor, int]:
    """A second-order stochastic step for few NFE: Heun's average taken over denoised estimates, with the noise
    of the exact reverse kernel of a drift-free process.

    With S_t = ∫₀ᵗ g² (``flow_noise_variance(0, t)``, rad² on the torus), G = S_upper − S_lower, F = ∫f over the
    interval (``flow_drift``) and the denoised displacement d(y, t) = (y − x) + S_t·s(y, t) (Tweedie's estimate of
    x₀ − x for a drift-free process):

        w = √(G·S_lower/S_upper)·z                                 (one draw, shared by both stages)
        x̃ = x − F + G·s(x, upper) + w                              (the euler-maruyama predictor)
        x ← project( x − F + (G/S_upper)·½(d(x, upper) + d(project(x̃), lower)) + w )

    Why this form: for a drift-free process (the heat equation on the torus, VE in ℝ) and a point-mass data
    law the step is exact over any stride: both denoised estimates are the data point, the mean is the
    posterior mean and w has the posterior variance G·S_lower/S_upper (DDPM's β̃, smaller than Euler's G). Heun's
    average of the raw slopes G·s instead multiplies the stiff score at ``lower`` (scale 1/S_lower) by the whole
    interval's G and diverges at few NFE. The drift stays an Euler term, so with a drift the step is an
    approximation whose extra error vanishes with the stride (G/S → 0: it becomes euler-maruyama). Two network
    evaluations per interval; the last (into t = 0, no score there) is the noiseless Euler step.
    """
    stride = upper - lower
    variance = process.flow_noise_variance(lower, stride, like=x)
    drift = process.flow_drift(x, lower, stride)
    score = score_fn(x, upper)
    if lower == 0:
        return process.project(x - drift + variance * score), 1
    level_upper = process.flow_noise_variance(0, upper, like=x)
    level_lower = process.flow_noise_variance(0, lower, like=x)
    noise = (variance * level_lower / level_upper).sqrt() * torch.randn(
        x.shape, generator=generator, dtype=x.dtype, device=x.device
    )
    predicted = x - drift + variance * score + noise  # unwrapped, so predicted − x is the displacement
    denoised_upper = level_upper * score
    denoised_lower = (predicted - x) + level_lower * score_fn(process.project(predicted), lower)
    mean_step = (variance / level_upper) * 0.5 * (denoised_upper + denoised_lower)
    return process.project(x - drift + mean_step + noise), 2


REVERSE_STEPS: dict[str, ReverseStep] = {
    "sde": ReverseStep(sde, corrected="pc", stepwise=True),
    "ode": ReverseStep(ode_euler, stepwise=True),
    "ode-heun": ReverseStep(ode_heun, second_order=True, stepwise=True),
    "pc": ReverseStep(predictor_corrector, corrector=True),
    "euler-maruyama": ReverseStep(euler_maruyama),
    "sde-heun": ReverseStep(sde_heun, second_order=True),
}
SAMPLERS = tuple(REVERSE_STEPS)  # the built-in samplers; read REVERSE_STEPS itself for those registered at run time


def corrected_sampler(name: str) -> str | None:
    """The sampler that ``name`` means when corrector settings are given: itself if it has a corrector,
    its ``corrected`` variant (sde -> pc), or None if neither."""
    step = REVERSE_STEPS.get(name)
    if step is None:
        return None
    return name if step.corrector else step.corrected


# ----- the sampler settings -------------------------------------------------------------------
@dataclass(frozen=True)
class Sampler:
    """How a reverse sweep integrates: the step (a name in ``REVERSE_STEPS``), its time grid and, for "pc", the
    Langevin corrector.

    ``name``: "sde" (Euler–Maruyama; DDPM's ancestral step for VP), "ode" (probability-flow Euler;
    DDIM for VP), "ode-heun" (second order), "pc" (the reverse SDE as predictor, each grid step
    first corrected by ``corrector_steps`` Langevin steps at target signal-to-noise ratio ``snr``;
    defaults 1 and ``DEFAULT_SNR``) or "euler-maruyama" (Euler–Maruyama on the continuous reverse
    SDE for every process, VP included: the sampler of the paper's Euclidean baseline, as we infer) or "sde-heun"
    (a second-order stochastic step for few NFE, ``sde_heun``; two evaluations per interval). ``grid``: a
    name in ``grids.GRIDS``, "uniform" or "rho" with exponent ``rho`` (``grids`` module docstring). Everywhere a
    sampler is taken, its name alone is short for ``Sampler(name)``.
    """

    name: str = "sde"
    grid: str = "uniform"
    rho: float = 7.0
    corrector_steps: int | None = None
    snr: float | None = None

    def __post_init__(self) -> None:
        if self.name not in REVERSE_STEPS:
            raise UserError(f"unknown sampler {self.name!r}; valid values are {', '.join(REVERSE_STEPS)}")
        if self.grid not in GRIDS:
            raise UserError(f"unknown time grid {self.grid!r}; valid values are {', '.join(GRIDS)}")
        if not (isinstance(self.rho, (int, float)) and math.isfinite(self.rho) and self.rho > 0):
            raise UserError(f"rho must be a finite number > 0, got {self.rho!r}")
        if not self.step.corrector:
            if self.corrector_steps is not None or self.snr is not None:
                with_corrector = ", ".join(name for name, step in REVERSE_STEPS.items() if step.corrector)
                raise UserError(
                    f"the {self.name} sampler has no corrector; corrector steps and snr belong to the {with_corrector} sampler"
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
    def step(self) -> ReverseStep:
        """The registry entry of ``name``."""
        return REVERSE_STEPS[self.name]

    @property
    def label(self) -> str:
        """A short description, e.g. "sde", "pc (1 corrector step, snr 0.16)", "ode-heun, rho 7 grid"."""
        label = self.name
        if self.step.corrector:
            plural = "s" if self.corrector_steps != 1 else ""
            label += f" ({self.corrector_steps} corrector step{plural}, snr {self.snr:g})"
        return label + (f", rho {self.rho:g} grid" if self.grid == "rho" else "")

    @property
    def evaluations_per_interval(self) -> int:
        """Network evaluations of one grid interval, except the last of a second-order step (an Euler step)."""
        return (2 if self.step.second_order else 1) + (self.corrector_steps or 0)

    @property
    def evaluations_of_last_interval(self) -> int:
        """Network evaluations of the interval into t = 0."""
        return 1 + (self.corrector_steps or 0)  # a second-order step is an Euler step into t = 0


def as_sampler(sampler: str | Sampler) -> Sampler:
    """A ``Sampler`` from a sampler or its name."""
    return sampler if isinstance(sampler, Sampler) else Sampler(sampler)


def intervals_for_nfe(sampler: str | Sampler, nfe: int) -> int:
    """How many grid intervals a sampler can afford with ``nfe`` network evaluations (at least one)."""
    sampler = as_sampler(sampler)
    if nfe < 1:
        raise UserError(f"nfe must be ≥ 1, got {nfe}")
    per_interval, last = sampler.evaluations_per_interval, sampler.evaluations_of_last_interval
    return max(1, (nfe - last) // per_interval + 1)


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
    return sampler.step.run(process, score_fn, x, upper, lower, sampler, generator)
