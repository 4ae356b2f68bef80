"""Markov denoising score matching on the transition kernel (SPEC §3).

From a state x_s at step s, draw x' from the kernel of a stride of h steps,
x' = project(μ + σ z) with μ = transition_mean(x_s, s, h), σ = transition_scale(s, h),
and regress the network at query step s + h on the kernel's score:

    target  s* = ∂/∂x' log p(x' | x_s)
    loss       = E ‖ (F(x', s+h) − c·s*) · σ / |c| ‖²

where F predicts c(t)·score (``ForwardProcess.output_scale``). The factor σ/|c| gives the
regression target σ·s* unit variance whatever the stride. In expectation over x_s the
target is the marginal score at s + h, which is what the samplers need.

* Kuramoto: x_s comes from the chain pool at its step s; h is the DSM window (h = 1 is
  the paper's loss; larger h merges K and σ² over h fine steps, biased O(h)).
* Euclidean VP: strides are exact, so s = 0, x_0 is the data and h is uniform in 1 … T:
  the target c·s* is the noise ε and the loss is DDPM's usual ε-prediction.

The objective (``config.OBJECTIVES``) says which kernel and which draws:

* ``markov``: the merged-stride kernel above (Euler across the window; exact for h = 1).
* ``flow``: ``ForwardProcess.linearised_kernel`` across the window: the mean follows the
  deterministic chain step by step and each element's variance its linearisation. With
  window = T every example starts from the data at s = 0 with h uniform in 1 … T, as in DDPM,
  and no chain pool is needed: its target is anchored at the data, so its useful part is not a
  fraction ≈ h·σ²/Σσ² of a unit-variance noise as the Markov target's is (SPEC §3, §11). But the
  closure is biased late in the chain, where the chain is far from Gaussian around its
  deterministic path (measured: BENCHMARKS.md, "Quality I"); ``resolve_anchor`` uses it only early.
* ``propagated``: exact one-step draws from chain states x_s that carry an unbiased estimate e_s of
  their own marginal score, E[e_s | x_s] = ∇ log p_s(x_s), so the target keeps the chain's history
  instead of one step of it. With u = x_s + drift(x_s) and x' = project(u + σ_s z),

      e' = (1 − β_s) · ∂/∂x' log p(x' | x_s)  +  β_s · M⁻ᵀ (e_s − ∇ log |det M|)      (M = ∂u/∂x_s)

  Both terms are unbiased for ∇ log p_{s+1}(x'): the first is the one-step DSM identity; the second is
  the score of u's density (``ForwardProcess.propagate_score``, a change of variables), and adding the
  kernel's Gaussian noise to u keeps E[∇_u log q(u) | x'] = ∇ log p_{s+1}(x'). So any fixed weights β_s
  give an unbiased target, with the chain's true marginal at every query (no merged-window bias). The
  weights follow the linear-noise variance of a pattern contracting at the process's bound a_s,

      v_0 = 0,   v_{s+1} = (1 − a_s)² v_s + σ_s²,   β_s = (1 − a_s)² v_s / v_{s+1},

  which for a linear process makes e exactly the data-anchored score −(x − m(x_0))/v, DDPM's target,
  and keeps the carried noise from growing in the fastest-contracting patterns. The loss scale is √v.
  The chain pool carries e (``ChainPool(..., carry_scores=True)``); β_0 = 0 starts it at the data.
* ``…-antithetic`` (``antithetic`` is ``markov`` with it): the draws of each starting state come
  in pairs z, −z. Unbiased; for a symmetric kernel the part of the gradient that is linear in z,
  the O(1/σ) noise of the target, cancels within each pair. Needs an even number of draws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError
from ..nets.score import ScoreNetwork
from ..processes import ForwardProcess

DEFAULT_MARKOV_WINDOW = 10  # the best window on the 2-torus benchmark at T = 100 (BENCHMARKS.md)


def uses_linearised_kernel(objective: str) -> bool:
    return objective.startswith("flow")


def uses_antithetic_draws(objective: str) -> bool:
    return objective.endswith("antithetic")


def uses_propagated_scores(objective: str) -> bool:
    return objective.startswith("propagated")


@dataclass(frozen=True)
class PropagationSchedule:
    """The propagated objective's weights: β_s (s = 0 … T−1) and the variance v_s (s = 0 … T), float64."""

    weight: Tensor
    variance: Tensor


@functools.lru_cache(maxsize=16)
def propagation_schedule(process: ForwardProcess) -> PropagationSchedule:
    """β_s and v_s of the propagated objective (see the module docstring), from the process's noise and its
    ``contraction_bound``."""
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
    whose weight β_0 is 0). Computed in the states' own precision, outside autocast.
    """
    schedule = propagation_schedule(process)
    shape = (-1, *([1] * (x_start.dim() - 1)))
    index = t_start.cpu()
    weight = schedule.weight[index].to(x_start).reshape(shape)
    with torch.autocast(device_type=x_start.device.type, enabled=False):
        mean = process.transition_mean(x_start, t_start, 1)
        scale = process.transition_scale(t_start, 1, like=x_start)
        x_next = process.project(mean + scale * noise)
        fresh = process.kernel_score(x_next, mean, scale)
        target = fresh
        if bool((index > 0).any()):
            carried = process.propagate_score(x_start, t_start, estimate)
            target = (1.0 - weight) * fresh + weight * carried
    return x_next, target, schedule.variance[index + 1].to(x_start).reshape(shape).sqrt()


def resolve_objective(objective: str, process: ForwardProcess, window: int = 0, anchor: int = 0) -> str:
    """``objective``, or for "auto" the measured best the process supports: ``propagated`` where the process has a
    contraction bound (Kuramoto), ``markov`` elsewhere (DDPM's ε-loss for the Euclidean process, whose strides are
    exact; the phase–amplitude process has no bound yet), and ``markov`` whenever a window above 1 or an anchor is
    set, the settings of the merged-window objective. BENCHMARKS.md, "Quality I"."""
    if objective != "auto":
        return objective
    if process.closed_form_marginal or window > 1 or anchor:
        return "markov"
    try:
        process.contraction_bound(0)
    except UserError:
        return "markov"
    return "propagated"


def resolve_window(objective: str, window: int, process: ForwardProcess) -> int:
    """The DSM window h in fine steps: ``window``, or with 0 the objective's default (markov: 10, flow: T).

    Raises a UserError for a window longer than the process, or an objective the process cannot use.
    """
    if (uses_linearised_kernel(objective) or uses_propagated_scores(objective)) and process.closed_form_marginal:
        raise UserError(
            f"objective {objective!r} corrects a chain's kernel, but the {type(process).__name__}'s strides "
            "are already exact; use objective 'markov' or 'antithetic'"
        )
    if window > process.steps:
        raise UserError(f"the DSM window {window} is longer than the process's T = {process.steps}; use at most {process.steps}")
    if uses_propagated_scores(objective):
        if window > 1:
            raise UserError(
                f"objective {objective!r} takes exact one-step draws and carries the chain's history in its target; "
                "use window 1 (or 0), or objective 'markov' for a merged window"
            )
        process.contraction_bound(0)  # raises for a process without one
        return 1
    if window:
        return window
    return process.steps if uses_linearised_kernel(objective) else min(DEFAULT_MARKOV_WINDOW, process.steps)


def resolve_anchor(objective: str, anchor: int, window: int, process: ForwardProcess) -> int:
    """The anchor horizon: queries at t ≤ anchor start from the data (s = 0, stride t) with the linearised
    kernel, whatever the objective (it is accurate from the data over strides where the chain is still close
    to linear, and exact for one step); later queries come from the chain with the objective's kernel. A flow
    objective with a window of T anchors every query. Raises a UserError for an anchor longer than T.
    """
    if anchor > process.steps:
        raise UserError(f"the anchor horizon {anchor} is longer than the process's T = {process.steps}; use at most {process.steps}")
    if anchor and uses_propagated_scores(objective):
        raise UserError(f"objective {objective!r} is anchored at the data through its carried estimate; use anchor 0")
    if uses_linearised_kernel(objective) and window >= process.steps:
        return process.steps
    return anchor


def window_strides(t_start: Tensor, steps: int, window: int, generator: torch.Generator | None) -> Tensor:
    """The DSM window's strides: h uniform in 1 … min(window, T − s) for each start step s, so that every query
    step 1 … T is trained."""
    room = torch.clamp(steps - t_start, max=window)
    uniform = torch.rand(t_start.shape, generator=generator, device=t_start.device)
    return 1 + (uniform * room).long()


def drop_conditions(
    conditions: Tensor | None, probability: float, generator: torch.Generator | None, *, null_label: int | None
) -> Tensor | None:
    """Each row's condition replaced, with ``probability``, by "no condition": the label ``null_label`` for
    class labels (B,), or all zeros for context features (``null_label=None``). So the same network also learns
    the unconditional score that classifier-free guidance needs."""
    if conditions is None:
        return None
    rows = conditions.shape[0]
    dropped = torch.rand((rows,), generator=generator, device=conditions.device) < probability
    if null_label is None:
        return torch.where(dropped.reshape(rows, *([1] * (conditions.dim() - 1))), 0.0, conditions)
    return torch.where(dropped, null_label, conditions)


def kernel_noise(
    shape: tuple[int, ...], draws: int, antithetic: bool, generator: torch.Generator | None, device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The standard normal z of every kernel draw, rows ordered (state 0: draws 0 … d−1, state 1: …).

    ``shape`` is (starting states × draws, …). With ``antithetic`` the second half of each state's
    draws is the negated first half.
    """
    if not antithetic:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if draws % 2:
        raise UserError(f"antithetic draws come in ±z pairs: the number of draws must be even, got {draws}")
    states = shape[0] // draws
    half = torch.randn((states, draws // 2, *shape[1:]), generator=generator, dtype=dtype, device=device)
    return torch.cat([half, -half], dim=1).reshape(shape)


def kernel_draw(
    process: ForwardProcess, x_start: Tensor, t_start: Tensor, stride: Tensor, noise: Tensor, *,
    linearised: bool | Tensor = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DSM example per row: (x', the target s* = ∂/∂x' log p(x' | x_s), the kernel scale σ).

    ``linearised``: the kernel of ``ForwardProcess.linearised_kernel`` (σ per element) instead of
    the merged stride (σ per example), for every row or for the rows of a boolean mask. Always computed in the states' own precision, also inside an
    autocast region: the coupling's convolution and the wrapped-normal score lose their accuracy at
    small σ in bfloat16/float16.
    """
    with torch.autocast(device_type=x_start.device.type, enabled=False):
        if isinstance(linearised, bool) and linearised:
            mean, variance = process.linearised_kernel(x_start, t_start, stride)
            scale = variance.sqrt()
        else:
            mean = process.transition_mean(x_start, t_start, stride)
            scale = process.transition_scale(t_start, stride, like=x_start)
            if isinstance(linearised, Tensor) and linearised.any():
                rows = linearised.nonzero().squeeze(1)
                row_mean, row_variance = process.linearised_kernel(x_start[rows], t_start[rows], stride[rows])
                mean, scale = mean.clone(), scale.expand_as(x_start).clone()
                mean[rows], scale[rows] = row_mean, row_variance.sqrt()
        x_next = process.project(mean + scale * noise)
        return x_next, process.kernel_score(x_next, mean, scale), scale


def score_matching_loss(
    network: ScoreNetwork,
    process: ForwardProcess,
    x_start: Tensor,
    t_start: Tensor,
    stride: Tensor,
    *,
    draws: int = 1,
    generator: torch.Generator | None = None,
    condition: Tensor | None = None,
    class_labels: Tensor | None = None,
    noise: Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
    objective: str = "markov",
    linearise_from_data: bool = False,
    estimate: Tensor | None = None,
) -> Tensor:
    """Mean weighted DSM loss over ``draws`` kernel samples per starting state (a scalar tensor).

    ``estimate``: the score estimates the starting states carry, for the propagated objective (the stride
    is then 1).

    ``linearise_from_data``: rows that start from the data (s = 0) use the linearised kernel whatever the
    objective (the anchored early queries of a Markov objective; see ``resolve_anchor``).

    ``noise`` (the standard normal z of each kernel draw, shaped like the repeated starting states)
    is drawn with ``generator`` unless given: data-parallel training draws it for the whole batch.
    With ``autocast_dtype`` (bfloat16, float16) only the network runs in mixed precision; the
    kernel draw, its score target and the loss stay in float32.
    """
    propagated = uses_propagated_scores(objective)
    if propagated and (estimate is None or bool((stride != 1).any())):
        raise ValueError("the propagated objective needs the states' score estimates and strides of 1")
    if draws > 1:
        x_start, t_start, stride = (v.repeat_interleave(draws, 0) for v in (x_start, t_start, stride))
        estimate = estimate.repeat_interleave(draws, 0) if estimate is not None else None
        condition = condition.repeat_interleave(draws, 0) if condition is not None else None
        class_labels = class_labels.repeat_interleave(draws, 0) if class_labels is not None else None
    if noise is None:
        noise = kernel_noise(tuple(x_start.shape), draws, uses_antithetic_draws(objective), generator,
                             x_start.device, x_start.dtype)
    if propagated:
        x_next, target, scale = propagated_draw(process, x_start, t_start, estimate, noise)
    else:
        linearised: bool | Tensor = uses_linearised_kernel(objective) or (linearise_from_data and t_start == 0)
        x_next, target, scale = kernel_draw(process, x_start, t_start, stride, noise, linearised=linearised)
    t_query = t_start + stride
    c = process.output_scale(t_query, like=x_next)
    device_type = x_next.device.type
    with torch.autocast(device_type=device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        prediction = network(x_next, process.network_time(t_query).to(x_next.device), condition, class_labels)
    return (((prediction.float() - c * target) * (scale / c.abs())) ** 2).mean()
