"""The propagated objective: exact one-step draws from chain states that carry an unbiased estimate of their own
score (SPEC §3, §11).

Each chain state x_s carries e_s with E[e_s | x_s] = ∇ log p_s(x_s), so the target keeps the chain's history
instead of one step of it. With u = x_s + drift(x_s) and x' = project(u + σ_s z),

    e' = (1 − β_s) · ∂/∂x' log p(x' | x_s)  +  β_s · M⁻ᵀ (e_s − ∇ log |det M|)      (M = ∂u/∂x_s)

Both terms are unbiased for ∇ log p_{s+1}(x'): the first is the one-step DSM identity; the second is the score
of u's density (``ForwardProcess.propagate_score``, a change of variables), and adding the kernel's Gaussian
noise to u keeps E[∇_u log q(u) | x'] = ∇ log p_{s+1}(x'). So any fixed weights β_s give an unbiased target,
with the chain's true marginal at every query (no merged-window bias). The weights follow the linear-noise
variance of a pattern contracting at the process's bound a_s,

    v_0 = 0,   v_{s+1} = (1 − a_s)² v_s + σ_s²,   β_s = (1 − a_s)² v_s / v_{s+1},

which for a linear process makes e exactly the data-anchored score −(x − m(x_0))/v, DDPM's target, and keeps
the carried noise from growing in the fastest-contracting patterns. The loss scale is √v. The chain pool
carries e (``ChainPool(..., carry=propagated_chain_step)``); β_0 = 0 starts it at the data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ...processes import ForwardProcess
from .base import Objective, StartingStates


@dataclass(frozen=True)
class PropagationSchedule:
    """The propagated objective's weights: β_s (s = 0 … T−1) and the variance v_s (s = 0 … T), float64."""

    weight: Tensor
    variance: Tensor


@functools.lru_cache(maxsize=16)
def propagation_schedule(process: ForwardProcess) -> PropagationSchedule:
    """β_s and v_s (see the module docstring), from the process's noise and its ``contraction_bound``."""
    variance, weight = [0.0], []
    for step in range(process.steps):
        carried = (1.0 - process.contraction_bound(step)) ** 2 * variance[-1]
        variance.append(carried + float(process.noise_variance(step, 1)))
        weight.append(carried / variance[-1])
    return PropagationSchedule(torch.tensor(weight, dtype=torch.float64), torch.tensor(variance, dtype=torch.float64))


def propagated_draw(
    process: ForwardProcess, x_start: Tensor, t_start: Tensor, estimate: Tensor, noise: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One exact step from each row's state, with the propagated target: (x', e', the loss scale √v_{s+1}).

    ``estimate`` is e_s, the unbiased score estimate each state carries (any finite value where s = 0,
    whose weight β_0 is 0). Computed in the states' own precision, outside autocast; through ``torch.compile``
    once ``compile_propagated_steps`` was called for the process.
    """
    schedule = propagation_schedule(process)
    shape = (-1, *([1] * (x_start.dim() - 1)))
    index = t_start.cpu()
    weight = schedule.weight[index].to(x_start).reshape(shape)
    carries = bool((index > 0).any())
    compiled = _COMPILED_DRAWS.get(process)
    with torch.autocast(device_type=x_start.device.type, enabled=False):
        if compiled is None:
            x_next, target = draw_and_target(process, x_start, t_start, estimate, noise, weight, carries)
        else:
            # The compiled arithmetic skips the input checks (ForwardProcess.check_state, check_steps): run here.
            process.check_state(x_start)
            process.check_steps(t_start)
            x_next, target = compiled(process, x_start, t_start, estimate, noise, weight, carries)
    return x_next, target, schedule.variance[index + 1].to(x_start).reshape(shape).sqrt()


def draw_and_target(
    process: ForwardProcess,
    x_start: Tensor,
    t_start: Tensor,
    estimate: Tensor,
    noise: Tensor,
    weight: Tensor,
    carries: bool,
) -> tuple[Tensor, Tensor]:
    """The arithmetic of ``propagated_draw`` (the module docstring's equations): x' and e', with β_s = ``weight``
    per row; ``carries`` False when every row starts at s = 0 (β_0 = 0: the carried term is not computed)."""
    mean = process.transition_mean(x_start, t_start, 1)
    scale = process.transition_scale(t_start, 1, like=x_start)
    x_next = process.project(mean + scale * noise)
    fresh = process.kernel_score(x_next, mean, scale)
    if not carries:
        return x_next, fresh
    carried = process.propagate_score(x_start, t_start, estimate)
    return x_next, (1.0 - weight) * fresh + weight * carried


# process -> ``draw_and_target`` through torch.compile (``compile_propagated_steps``).
_COMPILED_DRAWS: dict[ForwardProcess, Callable[..., tuple[Tensor, Tensor]]] = {}


def compile_propagated_steps(process: ForwardProcess) -> None:
    """From now on, run ``propagated_draw`` on ``process`` through ``torch.compile`` (``TrainConfig.compile``).

    The ~100 eager passes over the images of one step become a few fused kernels (docs/performance.md: 1.2 × per
    call at 32 images, 1.8–2.0 × at 500, on one CPU thread). The schedule look-ups and the input checks stay
    eager, so one compile (dynamic batch; ≈ 7–10 s on one CPU thread, at the first call) serves every step t and
    batch size."""
    _COMPILED_DRAWS[process] = torch.compile(draw_and_target, dynamic=True)


def propagated_chain_step(
    process: ForwardProcess, x: Tensor, t: Tensor, estimate: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One exact chain step with the carried score estimate updated (a ``chain_pool.CarriedStep``)."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_next, estimate_next, _ = propagated_draw(process, x, t, estimate, noise)
    return x_next, estimate_next


class PropagatedObjective(Objective):
    """One exact step from chain states carrying their score estimates; window 1, no anchor."""

    corrects_chain_kernel = True
    needs_contraction_bound = True
    takes_window = False
    takes_anchor = False
    carry = propagated_chain_step  # read through the class (Objective.carry), so never bound

    def default_window(self, window: int) -> int:
        return 1

    def chain_strides(
        self, x: Tensor, t: Tensor, conditions: Tensor | None, estimates: Tensor | None, generator: torch.Generator
    ) -> StartingStates:
        return StartingStates(x, t, torch.ones_like(t), conditions, estimates)  # the history is in the estimate

    def prepare(self, generator: torch.Generator, *, fill: bool = True) -> None:
        if self.training.compile:
            compile_propagated_steps(self.process)  # the pool's chain step, before it fills
        super().prepare(generator, fill=fill)

    def draw(self, start: StartingStates, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if start.estimates is None or bool((start.stride != 1).any()):
            raise ValueError("the propagated objective needs the states' score estimates and strides of 1")
        return propagated_draw(self.process, start.x, start.t, start.estimates, noise)
