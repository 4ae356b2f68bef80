"""The one interface every forward process implements.

A process has T discrete steps t = 0 … T−1 taking x_t to x_{t+1}. One step (or a
stride of ``stride`` steps merged into one, summing the schedule over the stride) is

    x_{t+stride} = project( x_t + drift(x_t, t, stride) + scale(t, stride) · z ),   z ~ N(0, I)

so the transition kernel is a (wrapped) normal around ``transition_mean`` with
``transition_scale``. For a process whose merged stride is only an Euler approximation
(Kuramoto), ``linearised_kernel`` gives a better kernel across a window of h fine steps: the
mean follows the deterministic chain and each element's variance its linearisation,

    μ_{k+1} = project(μ_k + drift(μ_k, t+k)),   v_{k+1} = (1 + j_k)² · v_k + σ²_{t+k},   μ_0 = x_t, v_0 = 0

with j_k = ∂drift_i/∂x_i at μ_k (``drift_derivative``, the diagonal of the drift's Jacobian): a
Gaussian moment closure (linear-noise approximation), exact for h = 1 and for a linear drift. Training, the samplers and the schedulers use only this
interface; Kuramoto (on the torus) and Euclidean VP (on ℝ) differ in ``project``,
``drift``, the kernel's score and the prior.

``t`` is an int (the same step for the whole batch) or a long tensor of shape (B,)
(one step per example, as in the chain pool).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch
from torch import Tensor

from ..errors import UserError

if TYPE_CHECKING:
    from .kuramoto_config import PriorFit

Step = int | Tensor
ScoreFn = Callable[[Tensor, int], Tensor]  # (states, query step t ∈ 1 … T) -> score
State = TypeVar("State")
Slope = TypeVar("Slope")


class ProbabilityFlow(ABC, Generic[State, Slope]):
    """An ODE across one interval, in the variables its process integrates it in (EDM's d = (x − D)/σ idea).

    ``slope(x, t)`` is d at states x and step t (it evaluates the network); ``advance(x, d)`` moves the states x
    at the interval's start along d across the whole interval; ``euler`` is the Euler step and its slope.
    Euler: x̃, d = euler(x, start); Heun: advance(x, ½(d + slope(x̃, end))), ``sampling.steps.probability_flow_step``.
    """

    @abstractmethod
    def slope(self, x: State, t: int) -> Slope:
        """The slope at states x and step t."""

    @abstractmethod
    def advance(self, x: State, slope: Slope) -> State:
        """The states reached from x, at the interval's start, along ``slope`` across the whole interval."""

    def euler(self, x: State, t: int) -> tuple[State, Slope]:
        """(The Euler step from x with the slope at (x, t), that slope)."""
        slope = self.slope(x, t)
        return self.advance(x, slope), slope


@dataclass(frozen=True)
class ChainFlow(ProbabilityFlow[Tensor, Tensor]):
    """The probability-flow ODE of an Euler chain in its own states (the torus for Kuramoto).

    Its Euler step is the chain's reverse mean with half the noise variance, x̃ = project(x − D(x) + ½v·s(x, t))
    (D, v over the stride from ``lower``); the slope is the step's wrapped displacement project(x̃ − x), per
    interval, and ``advance`` adds a slope and wraps.
    """

    process: ForwardProcess
    score_fn: ScoreFn
    lower: int
    stride: int

    def step(self, x: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
        """(The Euler step from x given the score at x, its wrapped displacement)."""
        process = self.process
        variance = process.noise_variance(self.lower, self.stride, like=x)
        end = process.project(x - process.drift(x, self.lower, self.stride) + 0.5 * variance * score)
        return end, process.project(end - x)

    def euler(self, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        return self.step(x, self.score_fn(x, t))

    def slope(self, x: Tensor, t: int) -> Tensor:
        return self.euler(x, t)[1]

    def advance(self, x: Tensor, slope: Tensor) -> Tensor:
        return self.process.project(x + slope)


def resolve_config(config_class: type, config: Any, settings: dict[str, Any]) -> Any:
    """A process's config: the one given, or one built from keyword settings (typos raise TypeError)."""
    if config is not None and settings:
        raise TypeError(f"pass either a {config_class.__name__} or keyword settings, not both")
    return config if config is not None else config_class(**settings)


class ForwardProcess(ABC):
    """A discrete-time forward (noising) process with Gaussian-type one-step kernels.

    The interface, in the order of the sections below: the chain (``project``, ``drift``, ``noise_variance``
    and what is built on them), the kernel (its density and score, and the linearised kernel across a window),
    the reverse-time rates (what the samplers, the likelihood and the network's preconditioning read), and the
    prior at t = T. Data ⇄ states is the codecs' business (``codecs.py``), not the process's.
    """

    config: Any
    steps: int
    # True when any stride from t = 0 is an exact kernel (VP): training then needs no chains.
    closed_form_marginal: bool = False
    # True when ``contraction_bound`` is implemented (the propagated objective's weights need it).
    contraction_bounded: bool = False
    # True when ``fit_prior`` is implemented: the trainer fits the prior's κ to simulated terminal states at start.
    fits_prior: bool = False
    # True when the config offers a choice of prior (``prior``, with "auto") whose candidates
    # ``metrics.prior_gap.compare_priors`` measures against the terminal states (Kuramoto).
    compares_priors: bool = False

    @property
    def prior_has_density(self) -> bool:
        """True when ``prior_log_prob`` has a closed form (the likelihood needs it); a relaxed or forward-chain
        prior (Kuramoto's ``prior``, processes/priors.py) draws samples only."""
        return True

    def __init__(self, cumulative_noise_var: Tensor) -> None:
        # Tables are float64 on the CPU; _table() caches copies per device and dtype.
        self._cumulative_noise_var = cumulative_noise_var
        self._table_cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    @classmethod
    @abstractmethod
    def periodic_channels(cls, channels: int) -> int:
        """How many leading channels of states with ``channels`` channels are phases, which ``project`` wraps to
        [-π, π): all of them on the torus (Kuramoto), none on ℝ (Euclidean), the flow direction alone
        (phase–amplitude). A classmethod, so a model config can ask its process class before building it."""

    # ----- schedule lookup -------------------------------------------------------------
    def _table(self, name: str, like: Tensor) -> Tensor:
        key = (name, like.device, like.dtype)
        if key not in self._table_cache:
            self._table_cache[key] = getattr(self, f"_{name}").to(device=like.device, dtype=like.dtype)
        return self._table_cache[key]

    def check_steps(self, t: Step, stride: Step = 1) -> None:
        """Raise a UserError unless the steps t … t + stride lie in 0 … T and stride ≥ 1 (t, stride: ints or
        per-example tensors)."""
        if torch.compiler.is_compiling():
            return  # a compiled step's caller checked its steps eagerly (objectives/propagated.py)
        start_low = int(t.min()) if isinstance(t, Tensor) else t
        end = t + stride
        end_high = int(end.max()) if isinstance(end, Tensor) else end
        stride_low = int(stride.min()) if isinstance(stride, Tensor) else stride
        if stride_low < 1:
            raise UserError(f"stride must be ≥ 1, got {stride_low}")
        if start_low < 0 or end_high > self.steps:
            raise UserError(f"steps {start_low}…{end_high} are outside 0…{self.steps} of this process")

    def _at(self, name: str, t: Step, like: Tensor) -> Tensor:
        """Entry t of a table, shaped to broadcast against ``like`` when t is per example."""
        table = self._table(name, like)
        if isinstance(t, Tensor):
            return table[t.to(like.device)].reshape(-1, *([1] * (like.dim() - 1)))
        return table[t]

    def _interval_sum(self, name: str, t: Step, stride: Step, like: Tensor) -> Tensor:
        """Σ of a per-step schedule over steps t … t+stride−1, from its cumulative table."""
        self.check_steps(t, stride)
        return self._at(name, t + stride, like) - self._at(name, t, like)

    # ----- the chain: x_{t+stride} = project(x_t + drift + scale·z) --------------------
    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """Return a state to the domain: wrap its ``periodic_channels`` to [-π, π), leave the rest."""

    @abstractmethod
    def drift(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """Deterministic displacement of one step (or a merged stride) from state x at step t."""

    def noise_variance(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """σ² summed over the stride (float64 scalar, or shaped like ``like`` for per-example t)."""
        like = like if like is not None else torch.zeros((), dtype=torch.float64)
        return self._interval_sum("cumulative_noise_var", t, stride, like)

    def transition_scale(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """Standard deviation of the one-step (or merged-stride) kernel."""
        return self.noise_variance(t, stride, like=like).sqrt()

    def check_state(self, x: Tensor) -> None:
        """Raise a UserError for non-finite values or a tensor without a batch axis."""
        if torch.compiler.is_compiling():
            return  # a compiled step's caller checked its states eagerly (objectives/propagated.py)
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise UserError(f"states must be a floating-point tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise UserError(f"states need a batch axis and at least one data axis, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise UserError("states contain NaN or infinite values; check the input data")

    def transition_mean(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """Deterministic part of a step: project(x + drift)."""
        self.check_state(x)
        return self.project(x + self.drift(x, t, stride))

    def step(self, x: Tensor, t: Step, stride: Step = 1, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_{t+stride} given x_t."""
        mean = self.transition_mean(x, t, stride)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return self.project(mean + self.transition_scale(t, stride, like=x) * noise)

    def simulate(
        self,
        x0: Tensor,
        t_end: int,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        t_start: int = 0,
    ) -> Tensor:
        """Run the chain from step ``t_start`` to ``t_end`` one step at a time.

        Returns x at t_end, or the trajectory (t_end − t_start + 1, *x.shape) if asked.
        """
        self.check_state(x0)
        if not 0 <= t_start <= t_end <= self.steps:
            raise UserError(f"need 0 ≤ t_start ≤ t_end ≤ {self.steps}, got {t_start} and {t_end}")
        x = x0
        trajectory = [x0] if return_trajectory else None
        for t in range(t_start, t_end):
            x = self.step(x, t, generator=generator)
            if trajectory is not None:
                trajectory.append(x)
        return torch.stack(trajectory) if trajectory is not None else x

    # ----- the kernel: its density and score (the DSM target), and the linearised kernel -------------
    @abstractmethod
    def kernel_log_prob(self, x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """Elementwise log density of the kernel (wrapped normal or normal) at x."""

    @abstractmethod
    def kernel_score(self, x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """∂/∂x of ``kernel_log_prob``: the denoising score-matching target."""

    def transition_score(self, x_next: Tensor, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """∂/∂x_next log p(x_next | x) for one step (or merged stride) from step t."""
        mean = self.transition_mean(x, t, stride)
        return self.kernel_score(x_next, mean, self.transition_scale(t, stride, like=x))

    def drift_derivative(self, x: Tensor, t: Step) -> Tensor:
        """∂drift_i/∂x_i of one fine step at state x (the diagonal of the drift's Jacobian), shaped like x.

        Used by ``linearised_kernel``."""
        raise UserError(f"the {type(self).__name__} has no linearised kernel")

    def drift_and_derivative(self, x: Tensor, t: Step) -> tuple[Tensor, Tensor]:
        """(``drift(x, t)``, ``drift_derivative(x, t)``) of one fine step; a process may share work between them."""
        return self.drift(x, t), self.drift_derivative(x, t)

    def linearised_kernel(self, x: Tensor, t: Tensor, stride: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance) of the Gaussian moment closure across ``stride`` fine steps from step ``t``.

        Per example: t and stride are long tensors of shape (B,); the window is walked one fine step
        at a time (max(stride) steps for the batch, rows whose window has ended are held).
        """
        self.check_steps(t, stride)
        mean = x
        variance = torch.zeros_like(x)
        shape = (-1, *([1] * (x.dim() - 1)))
        for offset in range(int(stride.max())):
            active = (stride > offset).reshape(shape)
            step = torch.clamp(t + offset, max=self.steps - 1)  # held rows: any valid step, the result is discarded
            drift, derivative = self.drift_and_derivative(mean, step)
            variance = torch.where(
                active, (1.0 + derivative) ** 2 * variance + self.noise_variance(step, 1, like=x), variance
            )
            mean = torch.where(active, self.project(mean + drift), mean)
        return mean, variance

    # ----- reverse time: the SDE and ODE rates, the score's carriage and the network's preconditioning -----
    def flow_drift(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """The continuous-time drift f integrated over the stride, for the probability-flow ODE (``likelihood``).

        ``drift`` is the discrete chain's; where the chain is the Euler scheme of its SDE (Kuramoto),
        the two are the same. A process whose step is an exact kernel (VP) overrides this.
        """
        return self.drift(x, t, stride)

    def flow_noise_variance(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """g² of the continuous-time SDE integrated over the stride (``noise_variance`` for an Euler chain)."""
        return self.noise_variance(t, stride, like=like)

    def reverse_sde_mean(self, x: Tensor, score: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """Deterministic part of a reverse-SDE step from the later state x (at t + stride) to t.

        Euler–Maruyama: project(x − drift(x) + v·score), v = σ²(t, stride).
        """
        variance = self.noise_variance(t, stride, like=x)
        return self.project(x - self.drift(x, t, stride) + variance * score)

    def probability_flow(self, score_fn: ScoreFn, upper: int, lower: int) -> ProbabilityFlow[Tensor, Tensor]:
        """The probability-flow ODE across the reverse interval ``upper`` → ``lower``, in this process's variables
        (``ChainFlow`` here; the samplers' Euler and Heun steps are ``sampling.steps.probability_flow_step``)."""
        return ChainFlow(self, score_fn, lower, upper - lower)

    def noise_level(self, t: int) -> float:
        """The noise accumulated from step 0 to ``t`` as one level (for spacing time grids): √Σ_{s<t} σ_s² here;
        processes with a shrinking signal give the level of their rescaled state instead (VP: EDM's σ)."""
        return math.sqrt(float(self._cumulative_noise_var[t]))

    def contraction_bound(self, t: int) -> float:
        """An upper bound a_t on how much one fine step from step t can shrink a small perturbation
        (1 − a_t ≤ the smallest singular value of the step's Jacobian, to first order), for the
        propagated objective's weights (``training/objectives/propagated.py``); see ``contraction_bounded``."""
        raise UserError(f"the {type(self).__name__} has no contraction bound; the propagated objective needs one")

    def propagate_score(self, x: Tensor, t: Step, estimate: Tensor, *, inverse_terms: int = 2) -> Tensor:
        """An estimate of the score at x_t carried through the deterministic part of the step, to its image
        u = x + drift(x, t) (before the noise):

            ∇_u log q(u) = M⁻ᵀ (∇_x log p_t(x) − ∇_x log |det M(x)|),   M = I + ∂drift/∂x

        for q the density of u (the change of variables of an invertible step). ``estimate`` stands for
        ∇ log p_t(x); M⁻ᵀ is applied by the fixed point w ← v − (∂drift/∂x)ᵀ w (``inverse_terms`` rounds, each
        one vector–Jacobian product, error O(|∂drift/∂x|^(terms+1))), and log |det M| ≈ tr ∂drift/∂x =
        Σ ``drift_derivative``, to first order in the drift. Computed with autograd (no graph is kept).
        """
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            state = x.detach().requires_grad_(True)
            drift, derivative = self.drift_and_derivative(state, t)
            (log_det_gradient,) = torch.autograd.grad(derivative.sum(), state, retain_graph=True)
            carried = estimate - log_det_gradient
            inverse = carried
            for round_ in range(inverse_terms):
                (transposed,) = torch.autograd.grad(
                    drift, state, grad_outputs=inverse, retain_graph=round_ < inverse_terms - 1
                )
                inverse = carried - transposed
        return inverse.detach()

    def network_time(self, t_query: Step) -> Tensor:
        """The network's time input t/T in [0, 1], float32, shape (B,) for per-example steps else (1,)."""
        if isinstance(t_query, Tensor):
            return t_query.to(torch.float32) / self.steps
        return torch.tensor([t_query / self.steps], dtype=torch.float32)

    def output_scale(self, t_query: Step, *, like: Tensor) -> Tensor:
        """c(t): the network predicts c(t)·score at query step t ∈ 1 … T (EDM-style preconditioning).

        By default the scale σ_{t−1} of the one-step kernel into t (per channel where the process has channels):
        predicting σ·score gives the one-step DSM target unit variance (SPEC §3)."""
        return self.transition_scale(t_query - 1, 1, like=like)

    def constrain_score(self, x: Tensor, t_query: int, score: Tensor) -> Tensor:
        """A learned score at (x, t_query) as the samplers should use it; the identity unless a process
        knows its data's range (the Euclidean baseline's optional x₀ clipping)."""
        return score

    # ----- the prior at t = T -----------------------------------------------------------
    @abstractmethod
    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Samples from the terminal distribution at t = T."""

    @abstractmethod
    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Elementwise log density of the prior."""

    def fit_prior(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[ForwardProcess, PriorFit]:
        """Simulate states ``x0`` to t = T and return this process with its prior fitted to them, and a report of
        the fit. Only where ``fits_prior`` says so; the others have a prior with nothing to fit."""
        raise NotImplementedError(f"{type(self).__name__} has no prior to fit (fits_prior is False)")
