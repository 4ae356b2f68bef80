"""A residual MLP backbone for low-dimensional data: (B, in_features) x time -> (B, out_features).

Typical use: points on a 2-torus fed as [cos θ1, cos θ2, sin θ1, sin θ2].
Like the UNet it knows nothing about the diffusion process around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .embeddings import ClassEmbedding, TimeEmbedding, broadcast_time


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of an MLP. ``num_layers`` is the number of residual blocks (two linear layers each).

    ``condition_features`` extra inputs are concatenated to ``x``; ``num_classes > 0``
    makes the net class-conditional, label ``num_classes`` meaning "no class".
    """

    kind: Literal["mlp"] = "mlp"  # tags the backbone section of a model config (``config.Backbone``)
    in_features: int = 4
    out_features: int = 4
    hidden_features: int = 256
    num_layers: int = 4
    time_embedding_dim: int = 64
    condition_features: int = 0
    num_classes: int = 0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_features", "out_features", "hidden_features", "num_layers", "time_embedding_dim"):
            value = getattr(self, name)
            if value <= 0:
                raise UserError(f"{name} must be positive, got {value}")
        for name in ("condition_features", "num_classes"):
            value = getattr(self, name)
            if value < 0:
                raise UserError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")


class ResidualMLPBlock(nn.Module):
    """h + W2 dropout(SiLU(W1 SiLU(LN(h)) + A e)) / sqrt(2), where e is the time/class embedding."""

    def __init__(self, features: int, embedding_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.linear1 = nn.Linear(features, features)
        self.embedding_proj = nn.Linear(embedding_dim, features)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(features, features)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        update = self.linear1(F.silu(self.norm(h))) + self.embedding_proj(F.silu(embedding))
        update = self.linear2(self.dropout(F.silu(update)))
        # 1/sqrt(2): keeps the residual stream's variance from growing with depth.
        return (h + update) * math.sqrt(0.5)


class MLP(nn.Module):
    """Input linear -> ``num_layers`` residual blocks -> LayerNorm, SiLU, output linear (zero-initialised)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.time_embedding = TimeEmbedding(cfg.time_embedding_dim)
        self.class_embedding = ClassEmbedding(cfg.num_classes, cfg.time_embedding_dim) if cfg.num_classes > 0 else None
        self.input_layer = nn.Linear(cfg.in_features + cfg.condition_features, cfg.hidden_features)
        self.blocks = nn.ModuleList(
            ResidualMLPBlock(cfg.hidden_features, cfg.time_embedding_dim, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.output_norm = nn.LayerNorm(cfg.hidden_features)
        self.output_layer = nn.Linear(cfg.hidden_features, cfg.out_features)
        # Zero-init: the untrained net outputs exactly 0 (zero score / velocity), see UNet.
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """x: (B, in_features); time: (B,) float (or scalar) in [0, 1];
        condition: (B, condition_features) or None; class_labels: (B,) integer in
        [0, num_classes] or None (= no class). Returns (B, out_features)."""
        cfg = self.config
        if x.ndim != 2 or x.shape[1] != cfg.in_features:
            raise UserError(f"MLP expects x of shape (B, {cfg.in_features}), got {tuple(x.shape)}")
        batch = x.shape[0]
        if cfg.condition_features:
            expected = (batch, cfg.condition_features)
            if condition is None or tuple(condition.shape) != expected:
                got = None if condition is None else tuple(condition.shape)
                raise UserError(f"MLP expects condition of shape {expected}, got {got}")
            x = torch.cat([x, condition.to(x.dtype)], dim=1)
        elif condition is not None:
            raise UserError("MLP was built with condition_features=0 but a condition was passed")
        if class_labels is not None and self.class_embedding is None:
            raise UserError("MLP was built with num_classes=0 but class_labels were passed")

        embedding = self.time_embedding(broadcast_time(time, batch, x.device, x.dtype))
        if self.class_embedding is not None:
            embedding = embedding + self.class_embedding(class_labels, batch, x.device)

        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h, embedding)
        return self.output_layer(F.silu(self.output_norm(h)))
