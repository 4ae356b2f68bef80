"""Network backbones: plain functions of (x, time, condition, class label).

They know nothing about diffusion processes or phases; the caller feeds them
[cos θ, sin θ] features and post-processes their output.
"""

from __future__ import annotations

from torch import nn

from .embeddings import sinusoidal_embedding
from .mlp import MLP, MLPConfig
from .unet import UNET_PRESETS, UNet, UNetConfig, unet_config_from_preset


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module`` (only those with requires_grad if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MLP",
    "MLPConfig",
    "UNET_PRESETS",
    "UNet",
    "UNetConfig",
    "count_parameters",
    "sinusoidal_embedding",
    "unet_config_from_preset",
]
