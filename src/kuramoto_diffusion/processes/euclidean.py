"""Euclidean variance-preserving diffusion (DDPM / VP-SDE), the paper's "SGM" baseline (SPEC §6).

    x_{t+1} = √α_t · x_t + √(1 − α_t) · z,   α_t = exp(−∫_{t/T}^{(t+1)/T} β(τ) dτ)

with β linear in τ (β_min = 0.1, β_max = 20 is DDPM's 1e-4 … 0.02 per step at T = 1000).
Strides are exact: a stride of h steps multiplies the means and accumulates the variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import UserError
from ..serialization import check_choices
from .base import ForwardProcess, ProbabilityFlow, ScoreFn, Step, resolve_config
from .schedules import vp_cumulative_beta


@dataclass(frozen=True)
class EuclideanConfig:
    """Settings of the VP baseline; states are pixel values in [-1, 1] at t = 0."""

    kind: Literal["euclidean"] = "euclidean"
    steps: int = 100
    beta_min: float = 0.1
    beta_max: float = 20.0
    # Sampling only: clip Tweedie's estimate of x₀ to the data range [-1, 1] at every step, as
    # DDPM's and guided-diffusion's samplers do (score_sde and EDM do not). See constrain_score.
    clip_denoised: bool = False

    def __post_init__(self) -> None:
        check_choices(self)
        if self.steps < 1:
            raise UserError(f"steps must be ≥ 1, got {self.steps}")
        if not 0 < self.beta_min <= self.beta_max:
            raise UserError(f"need 0 < beta_min ≤ beta_max, got {self.beta_min} and {self.beta_max}")


class EuclideanVPProcess(ForwardProcess):
    """Isotropic Gaussian diffusion on ℝⁿ with a standard normal prior."""

    closed_form_marginal = True

    def __init__(self, config: EuclideanConfig | None = None, **settings: object) -> None:
        self.config: EuclideanConfig = resolve_config(EuclideanConfig, config, settings)
        self.steps = self.config.steps
        self._cumulative_beta = vp_cumulative_beta(self.config.beta_min, self.config.beta_max, self.steps)
        super().__init__(self._cumulative_beta)

    def log_signal(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """log of the mean factor over the stride: −½ ∫ β."""
        like = like if like is not None else torch.zeros((), dtype=torch.float64)
        return -0.5 * self._interval_sum("cumulative_beta", t, stride, like)

    def noise_variance(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        return -torch.expm1(2.0 * self.log_signal(t, stride, like=like))

    @classmethod
    def periodic_channels(cls, channels: int) -> int:
        return 0  # states are real numbers

    def project(self, x: Tensor) -> Tensor:
        return x

    def drift(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        return torch.expm1(self.log_signal(t, stride, like=x)) * x

    def flow_drift(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """−½∫β·x over the stride: the VP SDE's drift, whose exact step is the factor exp(−½∫β) − 1 of ``drift``."""
        return self.log_signal(t, stride, like=x) * x

    def flow_noise_variance(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """∫β over the stride (the kernel's variance 1 − exp(−∫β) is its exact integral along the drift)."""
        return -2.0 * self.log_signal(t, stride, like=like)

    def drift_derivative(self, x: Tensor, t: Step) -> Tensor:
        # The drift is linear, so the linearised kernel is the exact stride (the tests use this).
        return torch.expm1(self.log_signal(t, 1, like=x)).expand_as(x)

    def reverse_sde_mean(self, x: Tensor, score: Tensor, t: Step, stride: Step = 1) -> Tensor:
        # DDPM's ancestral form (x + v·s)/a inverts the mean map x ↦ a·x exactly; Euler's
        # (2 − a)·x + v·s is first order in β·dt and visibly biased at T = 100 or with strides.
        variance = self.noise_variance(t, stride, like=x)
        return (x + variance * score) * torch.exp(-self.log_signal(t, stride, like=x))

    def constrain_score(self, x: Tensor, t_query: int, score: Tensor) -> Tensor:
        """With ``clip_denoised``: the score whose Tweedie estimate of x₀ is the clipped one.

        x̂₀ = (x + (1 − ᾱ_t)·s)/√ᾱ_t is clipped to [-1, 1] and mapped back, s' = (√ᾱ_t·x̂₀ − x)/(1 − ᾱ_t).
        The ancestral step with s' is DDPM's posterior mean from the clipped x̂₀, and DDIM's step is
        DDIM with the clipped x̂₀. Without the clip a score learnt from little training pushes
        samples far outside [-1, 1] (ε errors are amplified by 1/√ᾱ_t at large t).
        """
        if not self.config.clip_denoised:
            return score
        abar = math.exp(-float(self._cumulative_beta[t_query]))
        denoised = (x + (1.0 - abar) * score) / math.sqrt(abar)
        return (math.sqrt(abar) * denoised.clamp(-1.0, 1.0) - x) / (1.0 - abar)

    def signal_at(self, t: int) -> float:
        """√ᾱ_t, the mean factor from t = 0 to step t."""
        return math.exp(-0.5 * float(self._cumulative_beta[t]))

    def edm_sigma(self, t: int) -> float:
        """EDM's noise level σ_t = √((1 − ᾱ_t)/ᾱ_t) of y = x/√ᾱ_t."""
        return math.sqrt(max(math.expm1(float(self._cumulative_beta[t])), 0.0))

    def noise_level(self, t: int) -> float:
        """EDM's σ_t (``edm_sigma``): the level that EDM's ρ-spacing is defined on."""
        return self.edm_sigma(t)

    def probability_flow(self, score_fn: ScoreFn, upper: int, lower: int) -> VPFlow:
        return VPFlow(self, score_fn, upper, lower)

    def kernel_log_prob(self, x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        return -0.5 * ((x - mean) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)

    def kernel_score(self, x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        return -(x - mean) / scale**2

    def marginal_variance(self, t: int, data_variance: float) -> float:
        """Var(x_t) for x_0 with variance ``data_variance``: ᾱ_t·Var(x_0) + 1 − ᾱ_t."""
        signal = math.exp(2.0 * float(self.log_signal(0, t))) if t > 0 else 1.0
        return signal * data_variance + 1.0 - signal

    def output_scale(self, t_query: Step, *, like: Tensor) -> Tensor:
        # ε-prediction: score = −ε / √(1 − ᾱ_t), so the network output ε is −√(1 − ᾱ_t)·score.
        return -(-torch.expm1(-self._at("cumulative_beta", t_query, like))).sqrt()

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * x**2 - 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class VPFlow(ProbabilityFlow[Tensor, Tensor]):
    """The VP probability-flow ODE in EDM's variables y = x/√ᾱ, σ = √((1 − ᾱ)/ᾱ): dy/dσ = −σ√ᾱ·s. Euler there is DDIM.

    The VP ODE is stiff in x at T = 100 (Euler in x overshoots the data variance by half); in (y, σ) it is
    nearly linear, which is why DDIM and EDM's Heun integrate it there. The slope is dy/dσ; ``advance`` goes
    from σ(upper) to σ(lower) and back to x.
    """

    process: EuclideanVPProcess
    score_fn: ScoreFn
    upper: int
    lower: int

    def slope(self, x: Tensor, t: int) -> Tensor:
        return self.slope_from_score(self.score_fn(x, t), t)

    def slope_from_score(self, score: Tensor, t: int) -> Tensor:
        """dy/dσ at step t given the score there."""
        return -self.process.edm_sigma(t) * self.process.signal_at(t) * score

    def advance(self, x: Tensor, slope: Tensor) -> Tensor:
        signal, sigma = self.process.signal_at, self.process.edm_sigma
        return (x / signal(self.upper) + (sigma(self.lower) - sigma(self.upper)) * slope) * signal(self.lower)
