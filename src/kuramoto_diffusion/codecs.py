"""How data becomes process states and back: one codec per data kind (SPEC §1, §7).

* images: θ = a·x with the phase range a (``KuramotoConfig.phase_range``) on the torus, the identity for the
  Euclidean baseline; decoding counts the values clipped to [-1, 1];
* angles: radians as they are, wrapped to [-π, π) (on the torus);
* flows: velocity (v_x, v_y) to (φ, a) with φ = atan2(v_y, v_x) and a = (log(|v| + ε) − μ)/s (phase–amplitude),
  or to v/σ_v (Euclidean), with μ, s, σ_v measured on the training data (``FlowNormalisation``).

Each codec also gives log|det ∂state/∂data|, which the likelihood adds. Decoded images become 8-bit
pixels with ``to_uint8``. The codecs are the only place where data become states: a process knows its states
only (which of their channels are phases: ``ForwardProcess.periodic_channels``). ``model.build_codec`` picks
a model's codec. Light on purpose: torch and numpy only, so that loading a model does not
import an image library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from .circular import image_to_phase, phase_to_image, wrap
from .errors import UserError

if TYPE_CHECKING:
    from .processes import ForwardProcess

MAX_LOG_SPEED_DEVIATIONS = 8.0  # flow decode: normalised log speeds are clipped to ± this


def velocity_to_phase_amplitude(velocity: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """(B, 2, N, N) velocity (vx, vy) -> phase atan2(vy, vx) in (−π, π] and log(|v| + eps), each (B, 1, N, N)."""
    vx, vy = velocity[:, 0:1], velocity[:, 1:2]
    return torch.atan2(vy, vx), torch.log(torch.hypot(vx, vy) + eps)


def phase_amplitude_to_velocity(phase: Tensor, log_amplitude: Tensor, eps: float = 1e-4) -> Tensor:
    """The inverse of ``velocity_to_phase_amplitude``: (B, 1, N, N) each -> (B, 2, N, N) velocity.

    Speeds below ``eps`` come back as 0 (log_amplitude below log(eps) is clipped).
    """
    speed = (torch.exp(log_amplitude) - eps).clamp_min(0.0)
    return torch.cat([speed * torch.cos(phase), speed * torch.sin(phase)], dim=1)


@dataclass(frozen=True)
class FlowNormalisation:
    """How a flow model maps velocities (data units) to states, measured on the training data.

    Phase–amplitude models: a = (log(|v| + speed_epsilon) − log_speed_mean) / log_speed_std.
    Euclidean models: the velocity divided by ``velocity_std`` (the RMS of one component).
    """

    log_speed_mean: float = 0.0
    log_speed_std: float = 1.0
    velocity_std: float = 1.0
    speed_epsilon: float = 1e-4

    @classmethod
    def measure(cls, velocity: torch.Tensor, speed_epsilon: float = 1e-4) -> FlowNormalisation:
        """The normalisation of a (B, 2, N, N) sample of training velocities."""
        velocity = velocity.to(torch.float64)
        _, log_speed = velocity_to_phase_amplitude(velocity, speed_epsilon)
        return cls(
            log_speed_mean=float(log_speed.mean()),
            log_speed_std=float(log_speed.std()),
            velocity_std=float(velocity.square().mean().sqrt()),
            speed_epsilon=speed_epsilon,
        )

    def __post_init__(self) -> None:
        for name in ("log_speed_std", "velocity_std", "speed_epsilon"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"flow normalisation {name} must be finite and > 0, got {value}")
        if not math.isfinite(self.log_speed_mean):
            raise UserError(f"flow normalisation log_speed_mean must be finite, got {self.log_speed_mean}")


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, C, H, W) values in [-1, 1] to (B, H, W, C) uint8."""
    array = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).numpy()


class Codec(Protocol):
    """Data ⇄ process states."""

    def encode(self, data: Tensor) -> Tensor:
        """Data (B, …) in its own units to states."""

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        """States to data, and how many values had to be clipped."""

    def log_jacobian(self, data: Tensor) -> Tensor:
        """log|det ∂state/∂data| per sample (B,), float64 on the CPU."""


@dataclass(frozen=True)
class ImageCodec:
    """Images in [-1, 1]: phases θ = a·x on the torus (a = ``phase_range``, radians in (0, π)), or the values as
    they are (``phase_range`` None: the Euclidean baseline). Decoding clips to [-1, 1] and counts what it clipped."""

    phase_range: float | None = None

    @classmethod
    def for_process(cls, process: ForwardProcess) -> ImageCodec:
        """The image codec of ``process``: θ = a·x with its config's ``phase_range`` a where its states are phases
        (Kuramoto), the identity where they are real numbers (Euclidean)."""
        if not process.periodic_channels(1):
            return cls(None)
        phase_range = getattr(process.config, "phase_range", None)
        if phase_range is None:
            raise UserError(
                f"the {process.config.kind} process has no image encoding (no phase_range); it models other data"
            )
        return cls(float(phase_range))

    def encode(self, data: Tensor) -> Tensor:
        return data if self.phase_range is None else image_to_phase(data, self.phase_range)

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        if self.phase_range is not None:
            return phase_to_image(states, self.phase_range)
        # Values within float rounding of ±1 (e.g. a clipped x₀ estimate) do not count as clipped mass.
        return states.clamp(-1.0, 1.0), int((states.abs() > 1.0 + 1e-6).sum())

    def log_jacobian(self, data: Tensor) -> Tensor:
        phase_range = self.phase_range
        log_scale = 0.0 if phase_range is None else math.prod(data.shape[1:]) * math.log(phase_range)
        return torch.full((data.shape[0],), log_scale, dtype=torch.float64)


@dataclass(frozen=True)
class AngleCodec:
    """Angles in radians: on the torus (``periodic``) wrapped to [-π, π), on ℝ as they are."""

    periodic: bool = True

    def encode(self, data: Tensor) -> Tensor:
        return wrap(data) if self.periodic else data

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        return wrap(states), 0

    def log_jacobian(self, data: Tensor) -> Tensor:
        return torch.zeros(data.shape[0], dtype=torch.float64)


@dataclass(frozen=True)
class FlowCodec:
    """Velocity fields (B, 2, N, N): (direction, normalised log speed) with ``polar`` (the phase–amplitude process,
    whose channel 0 is a phase), else v/σ_v (Euclidean)."""

    normalisation: FlowNormalisation
    polar: bool = True

    def encode(self, data: Tensor) -> Tensor:
        norm = self.normalisation
        if not self.polar:
            return data / norm.velocity_std
        phase, log_speed = velocity_to_phase_amplitude(data, norm.speed_epsilon)
        return torch.cat([wrap(phase), (log_speed - norm.log_speed_mean) / norm.log_speed_std], 1)

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        norm = self.normalisation
        if not self.polar:
            return states * norm.velocity_std, 0
        # Beyond ±MAX_LOG_SPEED_DEVIATIONS standard deviations a log speed is a sampling failure, not a flow;
        # clipping it keeps exp() finite, and the count reports it as clipped values do for images.
        amplitude = states[:, 1:2]
        clipped = int((amplitude.abs() > MAX_LOG_SPEED_DEVIATIONS).sum())
        log_speed = amplitude.clamp(-MAX_LOG_SPEED_DEVIATIONS, MAX_LOG_SPEED_DEVIATIONS) * norm.log_speed_std
        return phase_amplitude_to_velocity(states[:, :1], log_speed + norm.log_speed_mean, norm.speed_epsilon), clipped

    def log_jacobian(self, data: Tensor) -> Tensor:
        # Per pixel −log|v| − log(|v| + ε) − log s (φ = atan2, a = (log(|v| + ε) − μ)/s), or −2·log σ_v.
        norm = self.normalisation
        if not self.polar:
            return torch.full(
                (data.shape[0],), -2.0 * math.prod(data.shape[2:]) * math.log(norm.velocity_std), dtype=torch.float64
            )
        speed = torch.hypot(data[:, 0], data[:, 1]).to(torch.float64)
        per_pixel = -torch.log(speed) - torch.log(speed + norm.speed_epsilon) - math.log(norm.log_speed_std)
        return per_pixel.flatten(1).sum(1).cpu()
