"""How data becomes states and back, apart from the processes' own image encoding θ = a·x (``circular``):
velocity fields as phase and log-speed, their normalisation, and decoded images as 8-bit pixels.

Light on purpose: torch and numpy only, so that loading a model does not import an image library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import UserError


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
    def measure(cls, velocity: "torch.Tensor", speed_epsilon: float = 1e-4) -> "FlowNormalisation":
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
