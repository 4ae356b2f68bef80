"""The score network: a backbone plus the geometry of the state space.

Periodic states θ enter the backbone as [cos θ, sin θ] (so the seam at ±π is invisible),
and the backbone's 2C outputs (a, b) are projected onto the tangent of the circle,

    F = −a · sin θ + b · cos θ,

the derivative of a·cos θ + b·sin θ along θ. Euclidean states enter as they are and F is
the raw output. F is the *preconditioned* output c(t)·score of the process (SPEC §3).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def state_features(x: Tensor, periodic_channels: int) -> Tensor:
    """The network's view of states whose first ``periodic_channels`` channels are phases: [cos θ, sin θ, rest]."""
    if periodic_channels == 0:
        return x
    phase, rest = x[:, :periodic_channels], x[:, periodic_channels:]
    return torch.cat([torch.cos(phase), torch.sin(phase), rest], dim=1)


def tangent_projection(a: Tensor, b: Tensor, phase: Tensor) -> Tensor:
    """F = −a·sin θ + b·cos θ: the derivative of a·cos θ + b·sin θ along θ, a tangent vector of the circle."""
    return -a * torch.sin(phase) + b * torch.cos(phase)


class ScoreNetwork(nn.Module):
    """Wraps a backbone ``(x, time, condition, class_labels) -> y`` for states whose first
    ``periodic_channels`` channels are phases and the rest real numbers (all, none, or a mix such as
    the flows' (phase, log amplitude)).

    The backbone sees [cos θ, sin θ, rest] (P + P + E channels) and returns as many: (a, b) for the
    phases, projected onto the tangent, and the raw output for the rest.
    """

    def __init__(self, backbone: nn.Module, periodic_channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.periodic_channels = periodic_channels

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """x: states (B, C, …); time: (B,) diffusion time in [0, 1]. Returns F with the shape of x."""
        periodic = self.periodic_channels
        if periodic == 0:
            return self.backbone(x, time, condition, class_labels)
        phase = x[:, :periodic]
        output = self.backbone(state_features(x, periodic), time, condition, class_labels)
        a, b, rest_output = output[:, :periodic], output[:, periodic : 2 * periodic], output[:, 2 * periodic :]
        return torch.cat([tangent_projection(a, b, phase), rest_output], dim=1)


class SplitScoreNetwork(nn.Module):
    """Two backbones for states of P phase channels and E real channels (the flows' direction and log speed),
    each conditioned on the other field (SPEC §7's "two score networks").

    The phase backbone sees [cos θ, sin θ] with the real channels (and any external condition) as its
    condition and returns (a, b), projected onto the tangent as in ``ScoreNetwork``; the real backbone sees
    the real channels with [cos θ, sin θ] (and the external condition) as its condition.
    """

    def __init__(self, phase_backbone: nn.Module, real_backbone: nn.Module, periodic_channels: int) -> None:
        super().__init__()
        self.phase_backbone = phase_backbone
        self.real_backbone = real_backbone
        self.periodic_channels = periodic_channels

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        periodic = self.periodic_channels
        phase, rest = x[:, :periodic], x[:, periodic:]
        circle = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
        extra = [] if condition is None else [condition]
        output = self.phase_backbone(circle, time, torch.cat([rest, *extra], dim=1), class_labels)
        a, b = output[:, :periodic], output[:, periodic:]
        rest_output = self.real_backbone(rest, time, torch.cat([circle, *extra], dim=1), class_labels)
        return torch.cat([tangent_projection(a, b, phase), rest_output], dim=1)
