"""What every DSM objective shares (SPEC §3): the example it hands the trainer, the loss, and the draws.

From a state x_s at step s an objective draws x' from a kernel across a stride of h steps and regresses the
network at the query step s + h on the kernel's score s* (its target):

    loss = E ‖ (F(x', s+h) − c·s*) · σ / |c| ‖²

where F predicts c(t)·score (``ForwardProcess.output_scale``) and σ is the kernel's scale, so that the
regression target σ·s* has unit variance whatever the stride. The subclasses say where x_s comes from and which
kernel and target they use; ``Objective.examples`` draws a batch and ``Objective.loss`` scores a network on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

from ...config import TrainConfig
from ...errors import UserError
from ...processes import ForwardProcess
from ..chain_pool import (
    CarriedStep,
    ChainPool,
    default_pool_advance,
    default_pool_size,
    resimulate_states,
    resimulate_states_and_scores,
)

# (count, rows this process uses or None) -> (encoded states at t = 0, their conditions or None). ``rows``: a source
# that can (a lazy folder) decodes just those; the random draws are always the whole count's.
DataFn = Callable[..., tuple[Tensor, Tensor | None]]


class DSMExample(NamedTuple):
    """A batch of DSM examples, one row per kernel draw: the network sees (x, t_query, condition) and is regressed
    on c·target with weight scale/|c| (``dsm_loss``)."""

    x: Tensor  # x', the states at the query step (B·draws, …)
    t_query: Tensor  # the query steps s + h, 1 … T (B·draws,)
    target: Tensor  # the kernel's score ∂/∂x' log p(x' | x_s), or an unbiased estimate of the marginal score
    scale: Tensor  # the kernel's scale σ (per row, broadcastable, or per element)
    condition: Tensor | None  # class labels (B·draws,) or context features, after dropout; None: unconditional

    def rows(self, start: int, stop: int) -> DSMExample:
        """Rows start … stop − 1 (a micro-batch)."""
        scale = self.scale[start:stop] if self.scale.shape[0] == self.x.shape[0] else self.scale
        condition = None if self.condition is None else self.condition[start:stop]
        return DSMExample(self.x[start:stop], self.t_query[start:stop], self.target[start:stop], scale, condition)


class StartingStates(NamedTuple):
    """One batch of DSM starting points, before the kernel draw (``Objective.starting_states``)."""

    x: Tensor  # states x_s
    t: Tensor  # their steps s (B,)
    stride: Tensor  # the kernel's stride h to the query step (B,)
    conditions: Tensor | None  # class labels or forecasting context, before dropout
    estimates: Tensor | None  # the propagated objective's carried score estimates e_s


@dataclass(frozen=True)
class Conditioning:
    """What the network is conditioned on: nothing, class labels 0 … classes − 1 (label ``classes`` is "no
    class"), or the context features of previous frames (all zeros is "no context")."""

    kind: Literal["none", "labels", "context"] = "none"
    classes: int = 0


NO_CONDITIONING = Conditioning()


def dsm_loss(
    network: torch.nn.Module,
    process: ForwardProcess,
    example: DSMExample,
    *,
    context: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """The mean weighted DSM loss of ``network`` on ``example`` (a scalar tensor in the target's dtype).

    ``context``: the example's condition is context features (else class labels). With ``autocast_dtype``
    (bfloat16, float16) only the network runs in mixed precision; the target and the loss stay as drawn.
    """
    x, t_query = example.x, example.t_query
    c = process.output_scale(t_query, like=x)
    labels, features = (None, example.condition) if context else (example.condition, None)
    with torch.autocast(
        device_type=x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        prediction = network(x, process.network_time(t_query).to(x.device), features, labels)
    # A mixed-precision prediction is compared in the target's precision (float32, or float64 in tests).
    return (((prediction.to(example.target.dtype) - c * example.target) * (example.scale / c.abs())) ** 2).mean()


def kernel_noise(
    shape: tuple[int, ...],
    draws: int,
    antithetic: bool,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The standard normal z of every kernel draw, rows ordered (state 0: draws 0 … d−1, state 1: …).

    ``shape`` is (starting states × draws, …). With ``antithetic`` the second half of each state's
    draws is the negated first half: unbiased, and for a symmetric kernel the part of the gradient that is
    linear in z, the O(1/σ) noise of the target, cancels within each pair.
    """
    if not antithetic:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if draws % 2:
        raise UserError(f"antithetic draws come in ±z pairs: the number of draws must be even, got {draws}")
    states = shape[0] // draws
    half = torch.randn((states, draws // 2, *shape[1:]), generator=generator, dtype=dtype, device=device)
    return torch.cat([half, -half], dim=1).reshape(shape)


def kernel_draw(
    process: ForwardProcess,
    x_start: Tensor,
    t_start: Tensor,
    stride: Tensor,
    noise: Tensor,
    *,
    linearised: bool | Tensor = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DSM example per row: (x', the target s* = ∂/∂x' log p(x' | x_s), the kernel scale σ).

    The merged-stride kernel x' = project(μ + σ z), μ = transition_mean(x_s, s, h), σ = transition_scale(s, h)
    (σ per example); or with ``linearised`` (every row, or the rows of a boolean mask) the kernel of
    ``ForwardProcess.linearised_kernel`` (σ per element). Always computed in the states' own precision, also
    inside an autocast region: the coupling's convolution and the wrapped-normal score lose their accuracy at
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


def kernel_example(
    process: ForwardProcess,
    x_start: Tensor,
    t_start: Tensor,
    stride: Tensor,
    noise: Tensor,
    condition: Tensor | None = None,
) -> DSMExample:
    """The merged-stride kernel's example from given states, strides and noise (one draw per state): what the
    validation probe scores."""
    x_next, target, scale = kernel_draw(process, x_start, t_start, stride, noise)
    return DSMExample(x_next, t_start + stride, target, scale, condition)


class Objective:
    """A DSM objective: where the starting states come from, which kernel and target, and the loss.

    It owns what it needs: the process, its window and anchor, the number of draws and whether they are
    antithetic, the chain pool (built by ``prepare``), the data and the condition dropout. The trainer calls
    ``examples`` then ``loss``; it knows nothing of the kernel.

    Capabilities are class attributes, read by the constructor and by ``objectives.resolve_objective``.
    """

    corrects_chain_kernel: ClassVar[bool] = False  # refuses processes whose strides are exact (nothing to correct)
    needs_contraction_bound: ClassVar[bool] = False  # needs ``ForwardProcess.contraction_bounded``
    takes_window: ClassVar[bool] = True  # strides of more than one step (a DSM window)
    takes_anchor: ClassVar[bool] = True  # early queries from the data (the anchor horizon)
    # The chain step that also carries score estimates (``ChainPool(carry=...)``), or None: plain chains.
    carry: ClassVar[CarriedStep | None] = None
    supports_conditioning: ClassVar[bool] = True  # class labels and forecasting context

    def __init__(
        self,
        process: ForwardProcess,
        training: TrainConfig,
        *,
        antithetic: bool = False,
        data: DataFn | None = None,
        rows: slice | None = None,
        conditioning: Conditioning = NO_CONDITIONING,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        """``training``: the window, anchor, draws, forward states, pool and class dropout settings (its
        ``objective`` name is the registry's business, not read here). ``data``: fresh encoded data (a
        ``DataFn``); ``rows``: the rows of each batch this process trains on (all of them: None)."""
        steps = process.steps
        name = type(self).__name__
        if self.corrects_chain_kernel and process.closed_form_marginal:
            raise UserError(
                f"the {name} corrects a chain's kernel, but the {type(process).__name__}'s strides are "
                "already exact; use objective 'markov' or 'antithetic'"
            )
        if training.window > steps:
            raise UserError(
                f"the DSM window {training.window} is longer than the process's T = {steps}; use at most {steps}"
            )
        if training.window > 1 and not self.takes_window:
            raise UserError(
                f"the {name} takes exact one-step draws and carries the chain's history in its target; "
                "use window 1 (or 0), or objective 'markov' for a merged window"
            )
        if self.needs_contraction_bound and not process.contraction_bounded:
            raise UserError(f"the {type(process).__name__} has no contraction bound; the {name} needs one")
        if training.anchor > steps:
            raise UserError(
                f"the anchor horizon {training.anchor} is longer than the process's T = {steps}; use at most {steps}"
            )
        if training.anchor and not self.takes_anchor:
            raise UserError(f"the {name} is anchored at the data through its carried estimate; use anchor 0")
        if conditioning.kind != "none" and not self.supports_conditioning:
            raise UserError(f"the {name} does not train conditional models; choose another objective")
        if antithetic and training.draws % 2:
            raise UserError(
                f"antithetic draws come in ±z pairs: the number of draws must be even, got {training.draws}"
            )
        self.process = process
        self.training = training
        self.antithetic = antithetic
        self.draws = training.draws
        self.data = data
        self.rows = rows
        self.conditioning = conditioning
        self.autocast_dtype = autocast_dtype
        self.window = self.default_window(training.window)
        self.anchor = self.anchor_horizon(training.anchor)
        self.pool: ChainPool | None = None

    # ----- settings (the subclasses' hooks) ---------------------------------------------------------------
    def default_window(self, window: int) -> int:
        """The DSM window h in fine steps, from the setting (0: this objective's default)."""
        return window or self.process.steps

    def anchor_horizon(self, anchor: int) -> int:
        """Queries at t ≤ this start from the data (s = 0, stride t) with the linearised kernel."""
        return anchor

    # ----- where the starting states come from ------------------------------------------------------------
    @property
    def anchored_at_data(self) -> bool:
        """Every example starts from the data at s = 0 (no chains): exact strides (VP), or an anchor of T."""
        return self.process.closed_form_marginal or self.anchor >= self.process.steps

    @property
    def needs_pool(self) -> bool:
        """Starting states come from a chain pool (not the data, not resimulation)."""
        return not self.anchored_at_data and self.training.forward_states == "pool"

    @property
    def pool_size(self) -> int:
        """Chains in the pool: the configured number, or ``default_pool_size``."""
        return self.training.pool_size or default_pool_size(self.process.steps, self.training.batch_size)

    @property
    def pool_advance(self) -> int:
        """Chains the pool advances per training step: the configured number, or ``default_pool_advance``."""
        return min(
            self.pool_size, self.training.pool_advance or default_pool_advance(self.pool_size, self.training.batch_size)
        )

    def prepare(self, generator: torch.Generator, *, fill: bool = True) -> None:
        """Build the chain pool if this objective needs one, its chains drawing from ``generator``; ``fill=False``
        when a checkpoint's pool is loaded next (no chains simulated)."""
        if not self.needs_pool:
            return
        self.pool = ChainPool(
            self.process,
            self.pool_size,
            self._data,
            generator,
            carry=type(self).carry,
            advance_count=self.pool_advance,
            fill_trajectories=self.training.pool_fill_trajectories,
            fill=fill,
        )

    def _data(self, count: int, rows: slice | None = None) -> tuple[Tensor, Tensor | None]:
        if self.data is None:
            raise ValueError("this objective was built without data; pass data= to draw examples")
        return self.data(count, rows) if rows is not None else self.data(count)

    def chain_states(
        self, batch: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(x_s, s, conditions, carried estimates) of ``batch`` chain states: from the pool (advanced first), or
        resimulated from fresh data with s uniform in 0 … T − 1."""
        if self.pool is not None:
            self.pool.advance()
            x, t, conditions, estimates = self.pool.draw(batch)
            return x, t, conditions, estimates
        device = generator.device
        t = torch.randint(0, self.process.steps, (batch,), generator=generator, device=device)
        x0, conditions = self._data(batch, self.rows)
        carry = type(self).carry  # through the class: a plain function there, never bound to the objective
        if carry is not None:
            x, estimates = resimulate_states_and_scores(self.process, x0, t, generator, carry)
            return x, t, conditions, estimates
        return resimulate_states(self.process, x0, t, generator), t, conditions, None

    def starting_states(self, batch: int, generator: torch.Generator) -> StartingStates:
        """One batch of starting points: from the data with stride uniform in 1 … T when ``anchored_at_data``
        (DDPM's draws), else from the chains (``chain_states``) with the subclass's strides (``chain_strides``)."""
        if self.anchored_at_data:
            x0, conditions = self._data(batch, self.rows)
            stride = torch.randint(1, self.process.steps + 1, (batch,), generator=generator, device=generator.device)
            return StartingStates(x0, torch.zeros_like(stride), stride, conditions, None)
        return self.chain_strides(*self.chain_states(batch, generator), generator)

    def chain_strides(
        self, x: Tensor, t: Tensor, conditions: Tensor | None, estimates: Tensor | None, generator: torch.Generator
    ) -> StartingStates:
        """The strides (and any re-anchored rows) of chain states; see the subclasses."""
        raise NotImplementedError

    # ----- the draws ------------------------------------------------------------------------------------
    def drop_conditions(self, conditions: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        """Each row's condition replaced, with the class dropout probability, by "no condition": the label
        ``classes`` for class labels (B,), all zeros for context features. So the same network also learns the
        unconditional score that classifier-free guidance needs."""
        if conditions is None:
            return None
        rows = conditions.shape[0]
        dropped = torch.rand((rows,), generator=generator, device=conditions.device) < self.training.class_dropout
        if self.conditioning.kind == "context":
            return torch.where(dropped.reshape(rows, *([1] * (conditions.dim() - 1))), 0.0, conditions)
        return torch.where(dropped, self.conditioning.classes, conditions)

    def draw(self, start: StartingStates, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(x', target, σ) for starting states already repeated per draw, with the kernel noise z."""
        raise NotImplementedError

    def examples(self, batch: int, generator: torch.Generator) -> DSMExample:
        """``batch`` starting states × ``draws`` kernel draws: this process's rows of them (``rows``).

        All randomness of the whole batch is drawn from ``generator`` in a fixed order (starting states,
        condition dropout, kernel noise), identically on every process of a distributed run; the kernel draws
        are computed for this process's rows only.
        """
        start = self.starting_states(batch, generator)
        start = start._replace(conditions=self.drop_conditions(start.conditions, generator))
        return self.examples_from(start, generator)

    def examples_from(self, start: StartingStates, generator: torch.Generator | None) -> DSMExample:
        """The kernel draws (``draws`` per state, z from ``generator``) from given starting states: this process's
        rows of them. The conditions are used as given (no dropout)."""
        x = start.x
        noise = kernel_noise(
            (x.shape[0] * self.draws, *x.shape[1:]), self.draws, self.antithetic, generator, x.device, x.dtype
        )
        own = self.rows or slice(0, x.shape[0])
        draws = self.draws

        def repeated(value: Tensor) -> Tensor:  # this process's rows, each repeated for its draws
            return value[own].repeat_interleave(draws, 0) if draws > 1 else value[own]

        mine = StartingStates(
            repeated(x),
            repeated(start.t),
            repeated(start.stride),
            None if start.conditions is None else repeated(start.conditions),
            None if start.estimates is None else repeated(start.estimates),
        )
        x_next, target, scale = self.draw(mine, noise[own.start * draws : own.stop * draws])
        return DSMExample(x_next, mine.t + mine.stride, target, scale, mine.conditions)

    def loss(self, network: torch.nn.Module, example: DSMExample) -> Tensor:
        """The mean weighted DSM loss of ``network`` on ``example`` (``dsm_loss``; the network in this
        objective's mixed precision, if any)."""
        return dsm_loss(
            network,
            self.process,
            example,
            context=self.conditioning.kind == "context",
            autocast_dtype=self.autocast_dtype,
        )
