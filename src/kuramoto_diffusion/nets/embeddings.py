"""Embeddings of the scalar diffusion time and of class labels.

Both backbones (UNet, MLP) turn ``(time, class_labels)`` into one conditioning
vector per sample, of width ``embedding_dim``, which every residual block then
reads through its own linear projection.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(time: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of a batch of scalars.

    ``time``: (B,) float, in whatever units the caller chooses (the backbones
    pass ``1000 * t`` for diffusion time ``t`` in [0, 1]). Returns (B, dim) in
    ``time``'s dtype: ``[cos(time * f_k), sin(time * f_k)]`` for
    ``dim // 2`` frequencies ``f_k`` spaced geometrically from 1 down to
    ``1 / max_period`` (radians per unit of ``time``). An odd ``dim`` gets one
    trailing zero column.
    """
    if time.ndim != 1:
        raise ValueError(f"time must have shape (B,), got {tuple(time.shape)}")
    if dim <= 0:
        raise ValueError(f"embedding dim must be positive, got {dim}")
    if not time.is_floating_point():
        time = time.float()
    half = dim // 2
    exponent = torch.arange(half, dtype=time.dtype, device=time.device) / max(half, 1)
    frequencies = torch.exp(-math.log(max_period) * exponent)
    angles = time[:, None] * frequencies[None, :]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        features = nn.functional.pad(features, (0, 1))
    return features


class TimeEmbedding(nn.Module):
    """Diffusion time t in [0, 1] -> (B, embedding_dim) vector.

    Sinusoidal features of ``time_scale * t`` followed by a two-layer SiLU MLP.
    The scale (1000 by default, the DDPM step count) stretches [0, 1] so that the
    highest frequency (1 rad per unit) separates times that differ by ~1e-3:
    without it neighbouring sampling steps would get nearly identical features.
    """

    def __init__(self, embedding_dim: int, time_scale: float = 1000.0) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.time_scale = time_scale
        self.mlp = nn.Sequential(
            nn.Linear(embedding_dim, embedding_dim),
            nn.SiLU(),
            nn.Linear(embedding_dim, embedding_dim),
        )

    def forward(self, time: Tensor) -> Tensor:
        features = sinusoidal_embedding(time * self.time_scale, self.embedding_dim)
        return self.mlp(features.to(next(self.mlp.parameters()).dtype))  # the first Linear's weight


class ClassEmbedding(nn.Module):
    """Class label in [0, num_classes] -> (B, embedding_dim) vector.

    Label ``num_classes`` is the "no class" token: it has its own learned row, so
    classifier-free guidance can train the unconditional model by replacing labels
    with it at random, and sample by mixing the two predictions.
    """

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, embedding_dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, class_labels: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
        """``class_labels``: (B,) integer, or None meaning "no class" for the whole batch."""
        if class_labels is None:
            class_labels = torch.full((batch_size,), self.null_label, dtype=torch.long, device=device)
        if class_labels.shape != (batch_size,):
            raise ValueError(f"class_labels must have shape ({batch_size},), got {tuple(class_labels.shape)}")
        if class_labels.is_floating_point() or class_labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be an integer tensor, got {class_labels.dtype}")
        return self.table(class_labels.long())


def broadcast_time(time: Tensor | float, batch_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Accept a scalar or a (B,) tensor of times and return a (B,) tensor of ``dtype``."""
    time = torch.as_tensor(time, device=device)
    if not time.is_floating_point():
        time = time.to(dtype)
    if time.ndim == 0:
        time = time.expand(batch_size)
    if time.shape != (batch_size,):
        raise ValueError(f"time must be a scalar or have shape ({batch_size},), got {tuple(time.shape)}")
    return time.to(dtype)
