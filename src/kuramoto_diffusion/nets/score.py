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


class ScoreNetwork(nn.Module):
    """Wraps a backbone ``(x, time, condition, class_labels) -> y`` for periodic or Euclidean states."""

    def __init__(self, backbone: nn.Module, periodic: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.periodic = periodic

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """x: states (B, C, …); time: (B,) diffusion time in [0, 1]. Returns F with the shape of x."""
        if not self.periodic:
            return self.backbone(x, time, condition, class_labels)
        features = torch.cat([torch.cos(x), torch.sin(x)], dim=1)
        a, b = self.backbone(features, time, condition, class_labels).chunk(2, dim=1)
        return -a * torch.sin(x) + b * torch.cos(x)
