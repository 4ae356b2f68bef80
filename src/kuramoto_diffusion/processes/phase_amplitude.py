"""Joint phase–amplitude diffusion of 2-D flows (SPEC §7).

States are (B, 2, N, N): channel 0 the flow direction φ = atan2(v_y, v_x) (a phase), channel 1 the
normalised log speed a = (log(|v| + ε) − μ)/s (a real number; the model does the normalisation).
One step from t, with independent noise per channel, is

    φ_{t+1} = wrap( φ_t + K_t · (w_t(a) · C(φ_t) + κ_ref · sin(ψ_ref − φ_t)) + σ_t · z )
    a_{t+1} = √α_t · (a_t + λ·r(φ_t)) − λ·r(φ_t) + √(1 − α_t) · z',        α_t = exp(−β_t)

* C is the local Kuramoto coupling (M × M neighbourhood, circular padding: the box is periodic),
  and r(φ) = |m| ∈ [0, 1] the local order, the length of the neighbourhood mean phasor m.
* For the first ``amplitude_weighted_fraction`` · T steps (T/6) each oscillator's coupling is scaled
  by its amplitude, w(a) = 2·sigmoid(a) ∈ (0, 2) (w = 1 at the mean log speed), so strong flow
  synchronises first; afterwards w = 1.
* The amplitude is a VP process with β per step linear from ``beta_range`` at the 100-step reference,
  plus the coherence term −½β·λ·r that ties its decay to the local phase order (λ = ``coherence``).
  The step integrates da = −½β(a + λr)dτ exactly with r held at its start value: a VP step of
  b = a + λr. So the amplitude reuses the Euclidean VP process on b (its ancestral SDE step and its
  DDIM/EDM-Heun ODE step), and to first order in β the drift is SPEC's −½β·a − ½β·λ·r.

A stride of h steps sums K (early and late parts separately), σ² and β over the stride. The kernel is a
wrapped normal in φ times a normal in a, so the score-matching target is the pair of their scores.
The prior is von Mises(ψ_ref, κ) in φ, independent per site, and N(−λ·r(φ), 1) in a.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..circular import wrap
from ..errors import UserError
from ..serialization import check_choices
from .base import ChainFlow, ForwardProcess, ScoreFn, Step, resolve_config
from .euclidean import EuclideanConfig, EuclideanVPProcess, VPFlow
from .kuramoto import KuramotoProcess, coupling_from_mean
from .kuramoto_config import Kernel, KuramotoConfig, PriorFit
from .schedules import REFERENCE_STEPS, ScheduleShape

PHASE, AMPLITUDE = 0, 1  # state channels


@dataclass(frozen=True)
class PhaseAmplitudeConfig:
    """Settings of the joint flow process; the phase settings mean what they mean in ``KuramotoConfig``."""

    kind: Literal["phase-amplitude"] = "phase-amplitude"
    steps: int = 100  # T
    neighbourhood: int = 4  # M of the M×M local coupling (SPEC §7: M = 4)
    kernel: Kernel = "box"
    ref_phase: float = 0.0
    ref_strength: float = 1.5
    schedule: ScheduleShape = "linear"
    coupling_range: tuple[float, float] = (3e-5, 0.03)  # K per step at the 100-step reference
    noise_var_range: tuple[float, float] = (1e-4, 0.1)  # phase σ² per step at the 100-step reference
    prior_concentration: float = 1.2
    amplitude_weighted_fraction: float = 1 / 6  # the first T/6 steps couple in proportion to amplitude
    beta_range: tuple[float, float] = (1e-4, 0.15)  # amplitude β per step at the 100-step reference
    coherence: float = 1.0  # λ of the coherence term −½β·λ·r (0: plain VP on the amplitude)

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("coupling_range", "noise_var_range", "beta_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.steps < 1 or self.neighbourhood < 1:
            raise UserError(f"steps and neighbourhood must be ≥ 1, got {self.steps} and {self.neighbourhood}")
        if not 0.0 <= self.amplitude_weighted_fraction <= 1.0:
            raise UserError(f"amplitude_weighted_fraction must be in [0, 1], got {self.amplitude_weighted_fraction}")
        if min(self.noise_var_range) <= 0 or min(self.beta_range) <= 0 or min(self.coupling_range) < 0:
            raise UserError("noise_var_range and beta_range must be > 0 and coupling_range ≥ 0")
        if not math.isfinite(self.prior_concentration) or self.prior_concentration < 0:
            raise UserError(f"prior_concentration must be finite and ≥ 0, got {self.prior_concentration}")
        if not math.isfinite(self.coherence) or self.coherence < 0:
            raise UserError(f"coherence must be finite and ≥ 0, got {self.coherence}")

    def phase_config(self) -> KuramotoConfig:
        """The local Kuramoto process of the phase channel (circular padding: the flow box is periodic)."""
        return KuramotoConfig(
            coupling="local",
            neighbourhood=self.neighbourhood,
            kernel=self.kernel,
            padding="circular",
            ref_phase=self.ref_phase,
            ref_strength=self.ref_strength,
            steps=self.steps,
            schedule=self.schedule,
            coupling_range=self.coupling_range,
            noise_var_range=self.noise_var_range,
            prior_concentration=self.prior_concentration,
        )

    def amplitude_config(self) -> EuclideanConfig:
        """The VP process of b = a + λr: β per step from ``beta_range`` at the 100-step reference, as a VP-SDE β(τ)."""
        start, end = self.beta_range
        return EuclideanConfig(steps=self.steps, beta_min=start * REFERENCE_STEPS, beta_max=end * REFERENCE_STEPS)


class PhaseAmplitudeProcess(ForwardProcess):
    """Local Kuramoto on the flow direction coupled to a VP process on the log speed (module docstring)."""

    fits_prior = True  # the phase prior's κ

    def __init__(self, config: PhaseAmplitudeConfig | None = None, **settings: object) -> None:
        self.config: PhaseAmplitudeConfig = resolve_config(PhaseAmplitudeConfig, config, settings)
        cfg = self.config
        self.steps = cfg.steps
        self.phase = KuramotoProcess(cfg.phase_config())
        self.amplitude = EuclideanVPProcess(cfg.amplitude_config())
        super().__init__(self.phase._cumulative_noise_var)
        # K accumulated over the amplitude-weighted steps only: constant after the first T/6 steps.
        weighted_steps = round(cfg.amplitude_weighted_fraction * cfg.steps)
        coupling = self.phase._cumulative_coupling
        self._cumulative_weighted_coupling = torch.minimum(coupling, coupling[weighted_steps])

    # ----- per-channel schedules --------------------------------------------------------
    def _per_channel(self, phase_value: Tensor, amplitude_value: Tensor) -> Tensor:
        """Stack two per-example (or scalar) values along the channel axis, shaped to broadcast over states."""
        stacked = torch.stack([phase_value.reshape(-1), amplitude_value.reshape(-1)], dim=1)  # (B or 1, 2)
        if phase_value.dim() == 0:
            return stacked.reshape(2, 1, 1)
        return stacked.reshape(-1, 2, 1, 1)

    def noise_variance(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """(σ² of the phase, 1 − exp(−Σβ) of the amplitude) over the stride, along the channel axis."""
        return self._channel_variances(t, stride, like, self.amplitude.noise_variance)

    # ----- geometry and drift -----------------------------------------------------------
    def _check_shape(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 2:
            raise UserError(
                f"phase–amplitude states must be (batch, 2, height, width) with channels (phase, log amplitude), "
                f"got shape {tuple(x.shape)}"
            )

    def check_state(self, x: Tensor) -> None:
        super().check_state(x)
        self._check_shape(x)

    @classmethod
    def periodic_channels(cls, channels: int) -> int:
        return 1  # channel 0, the flow direction; the log speed is a real number

    def project(self, x: Tensor) -> Tensor:
        return torch.cat([wrap(x[:, PHASE : PHASE + 1]), x[:, AMPLITUDE:]], dim=1)

    def local_order(self, phase: Tensor) -> Tensor:
        """r = |m| ∈ [0, 1]: length of the neighbourhood mean of e^{iφ}, (B, 1, N, N)."""
        return torch.hypot(*self.phase.neighbourhood_mean(phase))

    def drift(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        phase_drift, shifted_amplitude = self._phase_drift_and_shifted_amplitude(x, t, stride)
        return torch.cat([phase_drift, self.amplitude.drift(shifted_amplitude, t, stride)], dim=1)

    def flow_drift(self, x: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """The phase's drift (an Euler chain) and the VP SDE's drift −½∫β·(a + λr) of the amplitude."""
        phase_drift, shifted_amplitude = self._phase_drift_and_shifted_amplitude(x, t, stride)
        return torch.cat([phase_drift, self.amplitude.flow_drift(shifted_amplitude, t, stride)], dim=1)

    def flow_noise_variance(self, t: Step, stride: Step = 1, *, like: Tensor | None = None) -> Tensor:
        """(σ² of the phase, ∫β of the amplitude) over the stride, along the channel axis."""
        return self._channel_variances(t, stride, like, self.amplitude.flow_noise_variance)

    def _channel_variances(
        self, t: Step, stride: Step, like: Tensor | None, amplitude_variance: Callable[..., Tensor]
    ) -> Tensor:
        """The phase's σ² over the stride and ``amplitude_variance(t, stride, like=…)``, along the channel axis."""
        like = like if like is not None else torch.zeros((1, 2, 1, 1), dtype=torch.float64)
        phase_variance = self._interval_sum("cumulative_noise_var", t, stride, like)
        return self._per_channel(phase_variance, amplitude_variance(t, stride, like=like))

    def _phase_drift_and_shifted_amplitude(self, x: Tensor, t: Step, stride: Step) -> tuple[Tensor, Tensor]:
        """The phase channel's drift over the stride, and b = a + λr, on which the amplitude is a VP process."""
        self._check_shape(x)
        phase, amplitude = x[:, PHASE : PHASE + 1], x[:, AMPLITUDE:]
        cfg = self.config
        total = self.phase.coupling_strength(t, stride, like=phase)
        weighted = self._interval_sum("cumulative_weighted_coupling", t, stride, phase)
        weight = 2.0 * torch.sigmoid(amplitude)
        # One neighbourhood average serves both the coupling and the local order r = |m|.
        mean_cos, mean_sin = self.phase.neighbourhood_mean(phase)
        coupling = coupling_from_mean(phase, mean_cos, mean_sin)
        phase_drift = ((total - weighted) + weighted * weight) * coupling + total * cfg.ref_strength * torch.sin(
            cfg.ref_phase - phase
        )
        offset = cfg.coherence * torch.hypot(mean_cos, mean_sin)
        return phase_drift, amplitude + offset

    def drift_derivative(self, x: Tensor, t: Step) -> Tensor:
        """Diagonal of the drift's Jacobian: per phase, the amplitude-weighted coupling's and the reference
        pull's derivative; per amplitude, the VP factor √α − 1 (the coherence term depends on φ only)."""
        self._check_shape(x)
        phase, amplitude = x[:, PHASE : PHASE + 1], x[:, AMPLITUDE:]
        cfg = self.config
        total = self.phase.coupling_strength(t, 1, like=phase)
        weighted = self._interval_sum("cumulative_weighted_coupling", t, 1, phase)
        strength = (total - weighted) + weighted * 2.0 * torch.sigmoid(amplitude)
        coupling = self.phase.coupling_derivative(phase, *self.phase.neighbourhood_mean(phase))
        phase_derivative = strength * coupling - total * cfg.ref_strength * torch.cos(cfg.ref_phase - phase)
        return torch.cat([phase_derivative, self.amplitude.drift_derivative(amplitude, t)], dim=1)

    def coherence_offset(self, phase: Tensor) -> Tensor:
        """λ·r(φ): the shift b = a + λr that makes the amplitude step a plain VP step."""
        return self.config.coherence * self.local_order(phase)

    def reverse_sde_mean(self, x: Tensor, score: Tensor, t: Step, stride: Step = 1) -> Tensor:
        """Euler–Maruyama on the phase (as Kuramoto); on the amplitude the VP process's ancestral step of
        b = a + λr (r at the later state), which inverts the forward mean exactly when r is unchanged."""
        variance = self.noise_variance(t, stride, like=x)
        phase = self.project(x - self.drift(x, t, stride) + variance * score)[:, PHASE : PHASE + 1]
        offset = self.coherence_offset(x[:, PHASE : PHASE + 1])
        amplitude = self.amplitude.reverse_sde_mean(x[:, AMPLITUDE:] + offset, score[:, AMPLITUDE:], t, stride) - offset
        return torch.cat([phase, amplitude], dim=1)

    def probability_flow(self, score_fn: ScoreFn, upper: int, lower: int) -> PhaseAmplitudeFlow:
        return PhaseAmplitudeFlow(self, score_fn, lower, upper - lower, upper)

    # ----- kernel ------------------------------------------------------------------------
    def kernel_log_prob(self, x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        """Per channel: the phase process's wrapped normal and the amplitude process's normal."""
        phase_scale, amplitude_scale = _split_scale(scale)
        return torch.cat(
            [
                self.phase.kernel_log_prob(x[:, PHASE : PHASE + 1], mean[:, PHASE : PHASE + 1], phase_scale),
                self.amplitude.kernel_log_prob(x[:, AMPLITUDE:], mean[:, AMPLITUDE:], amplitude_scale),
            ],
            dim=1,
        )

    def kernel_score(self, x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
        phase_scale, amplitude_scale = _split_scale(scale)
        return torch.cat(
            [
                self.phase.kernel_score(x[:, PHASE : PHASE + 1], mean[:, PHASE : PHASE + 1], phase_scale),
                self.amplitude.kernel_score(x[:, AMPLITUDE:], mean[:, AMPLITUDE:], amplitude_scale),
            ],
            dim=1,
        )

    # ----- prior -----------------------------------------------------------------------
    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != 2:
            raise UserError(f"phase–amplitude states have shape (batch, 2, height, width), got {shape}")
        channel_shape = (shape[0], 1, *shape[2:])
        phase = self.phase.prior_sample(channel_shape, generator=generator, dtype=dtype, device=device)
        noise = self.amplitude.prior_sample(channel_shape, generator=generator, dtype=dtype, device=device)
        return torch.cat([phase, noise - self.coherence_offset(phase)], dim=1)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        phase = x[:, PHASE : PHASE + 1]
        amplitude = self.amplitude.prior_log_prob(x[:, AMPLITUDE:] + self.coherence_offset(phase))
        return torch.cat([self.phase.prior_log_prob(phase), amplitude], dim=1)

    def fit_prior(self, x0: Tensor, generator: torch.Generator | None = None) -> tuple[PhaseAmplitudeProcess, PriorFit]:
        """Simulate ``x0`` to t = T and fit the phase prior's κ by maximum likelihood (mean fixed at ψ_ref)."""
        terminal = self.simulate(x0, self.steps, generator=generator)
        _, report = self.phase.with_prior_from_terminal(terminal[:, PHASE : PHASE + 1])
        return PhaseAmplitudeProcess(dataclasses.replace(self.config, prior_concentration=report.concentration)), report


def _split_scale(scale: Tensor) -> tuple[Tensor, Tensor]:
    """(phase, amplitude) parts of a per-channel scale shaped (2, 1, 1) or (B, 2, 1, 1)."""
    if scale.dim() == 3:
        return scale[PHASE : PHASE + 1], scale[AMPLITUDE:]
    return scale[:, PHASE : PHASE + 1], scale[:, AMPLITUDE:]


@dataclass(frozen=True)
class PhaseAmplitudeFlow(ChainFlow):
    """The probability-flow ODE of the phase–amplitude process, per channel in its own variables.

    Phase: as for Kuramoto (``ChainFlow``), the wrapped displacement of the half-noise Euler step. Amplitude:
    the VP process's slope dy/dσ of b = a + λr, y = b/√ᾱ, σ = √((1 − ᾱ)/ᾱ), with r held at the interval's
    start (so Euler is DDIM and Heun is EDM's; plain Euler in a is stiff at T = 100, as for the Euclidean
    VP ODE). The slope holds both along the channel axis.
    """

    process: PhaseAmplitudeProcess
    upper: int

    def _phase_step(self, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(The phase channel of the Euler step from x, the slope of both channels) at step t."""
        score = self.score_fn(x, t)
        end, displacement = self.step(x, score)
        slope = self._amplitude_flow.slope_from_score(score[:, AMPLITUDE:], t)
        return end[:, PHASE : PHASE + 1], torch.cat([displacement[:, PHASE : PHASE + 1], slope], dim=1)

    @property
    def _amplitude_flow(self) -> VPFlow:
        """The VP flow of b = a + λr, for its formulas only (``slope_from_score``, ``advance``): b is a shift of a, so
        its score is the amplitude channel's, which this flow's ``score_fn`` (both channels) does not give alone."""
        return VPFlow(self.process.amplitude, self.score_fn, self.upper, self.lower)

    def _amplitude_advance(self, x: Tensor, slope: Tensor) -> Tensor:
        offset = self.process.coherence_offset(x[:, PHASE : PHASE + 1])
        return self._amplitude_flow.advance(x[:, AMPLITUDE:] + offset, slope[:, AMPLITUDE:]) - offset

    def euler(self, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        phase, slope = self._phase_step(x, t)
        return torch.cat([phase, self._amplitude_advance(x, slope)], dim=1), slope

    def slope(self, x: Tensor, t: int) -> Tensor:
        return self._phase_step(x, t)[1]

    def advance(self, x: Tensor, slope: Tensor) -> Tensor:
        phase = wrap(x[:, PHASE : PHASE + 1] + slope[:, PHASE : PHASE + 1])
        return torch.cat([phase, self._amplitude_advance(x, slope)], dim=1)
