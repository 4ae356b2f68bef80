"""How data becomes process states and back: one codec per data kind (SPEC §1, §7).

* images: the process's own map (``ForwardProcess.encode``: θ = a·x with the phase range a on the torus,
  the identity for the Euclidean baseline); decoding counts the values clipped to [-1, 1];
* angles: radians as they are, wrapped to [-π, π) (on the torus);
* flows: velocity (v_x, v_y) to (φ, a) with φ = atan2(v_y, v_x) and a = (log(|v| + ε) − μ)/s (phase–amplitude),
  or to v/σ_v (Euclidean), with μ, s, σ_v measured on the training data (``FlowNormalisation``).

Each codec also gives log|det ∂state/∂data|, which the likelihood adds. Decoded images become 8-bit
pixels with ``to_uint8``. Light on purpose: torch and numpy only, so that loading a model does not
import an image library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from .circular import wrap
from .errors import UserError

if TYPE_CHECKING:
    from .config import ModelConfig
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
            log_speed_mean=float(log_speed.mean()), log_speed_std=float(log_speed.std()),
            velocity_std=float(velocity.square().mean().sqrt()), speed_epsilon=speed_epsilon,
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
    """Images in [-1, 1] through the process's map."""

    process: ForwardProcess

    @property
    def phase_range(self) -> float | None:
        """a of θ = a·x on the torus (a periodic image process is Kuramoto); None: the identity (Euclidean)."""
        return self.process.config.phase_range if self.process.periodic else None

    def encode(self, data: Tensor) -> Tensor:
        return self.process.encode(data)

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        return self.process.decode(states)

    def log_jacobian(self, data: Tensor) -> Tensor:
        phase_range = self.phase_range
        log_scale = 0.0 if phase_range is None else math.prod(data.shape[1:]) * math.log(phase_range)
        return torch.full((data.shape[0],), log_scale, dtype=torch.float64)


@dataclass(frozen=True)
class AngleCodec:
    """Angles in radians; on the torus wrapped to [-π, π)."""

    process: ForwardProcess

    def encode(self, data: Tensor) -> Tensor:
        return self.process.project(data)

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        return wrap(states), 0

    def log_jacobian(self, data: Tensor) -> Tensor:
        return torch.zeros(data.shape[0], dtype=torch.float64)


@dataclass(frozen=True)
class FlowCodec:
    """Velocity fields (B, 2, N, N): (direction, normalised log speed) for phase–amplitude, v/σ_v for Euclidean."""

    process: ForwardProcess  # phase–amplitude (periodic) or Euclidean
    normalisation: FlowNormalisation

    def encode(self, data: Tensor) -> Tensor:
        norm = self.normalisation
        if not self.process.periodic:
            return data / norm.velocity_std
        phase, log_speed = velocity_to_phase_amplitude(data, norm.speed_epsilon)
        return self.process.project(torch.cat([phase, (log_speed - norm.log_speed_mean) / norm.log_speed_std], 1))

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        norm = self.normalisation
        if not self.process.periodic:
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
        if not self.process.periodic:
            return torch.full((data.shape[0],), -2.0 * math.prod(data.shape[2:]) * math.log(norm.velocity_std),
                              dtype=torch.float64)
        speed = torch.hypot(data[:, 0], data[:, 1]).to(torch.float64)
        per_pixel = -torch.log(speed) - torch.log(speed + norm.speed_epsilon) - math.log(norm.log_speed_std)
        return per_pixel.flatten(1).sum(1).cpu()


def build_codec(config: ModelConfig, process: ForwardProcess) -> Codec:
    """The codec of a model's data kind."""
    if config.data_kind == "image":
        return ImageCodec(process)
    if config.data_kind == "flow":  # ModelConfig guarantees its normalisation
        return FlowCodec(process, config.flow)  # type: ignore[arg-type]
    return AngleCodec(process)
