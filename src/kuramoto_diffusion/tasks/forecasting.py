"""Forecasting of flow models trained with previous frames as context (``context_frames`` F): the next frame
after each run of frames (``forecast``), and autoregressive rollouts (``rollout``). ``DiffusionModel.forecast``
and ``.rollout`` call these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import UserError
from ..sampling.steps import Sampler

if TYPE_CHECKING:
    from ..model import DiffusionModel


@torch.no_grad()
def forecast(
    model: DiffusionModel,
    previous: Tensor,
    *,
    guidance: float = 1.0,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> Tensor:
    """The next velocity field (B, 2, N, N) after each run of previous frames (B, ≥F, 2, N, N) (the last F are
    used), sampled with classifier-free ``guidance`` w on the context (w = 0: unconditional, 1: conditional)."""
    condition = model.context_features(previous.to(device=model.device, dtype=torch.float32))
    result = model.sample(
        previous.shape[0],
        sampler=sampler,
        nfe=nfe,
        generator=generator,
        batch_size=batch_size,
        condition=condition,
        guidance=guidance,
    )
    return model.decode(result.states)[0]


@torch.no_grad()
def rollout(model: DiffusionModel, previous: Tensor, frames: int, **options: Any) -> Tensor:
    """``frames`` frames forecast autoregressively after ``previous`` (B, ≥F, 2, N, N): (B, frames, 2, N, N).

    Each forecast (``model.forecast``) joins the context of the next; ``options`` are those of ``forecast``.
    """
    if frames < 1:
        raise UserError(f"a rollout needs at least 1 frame, got {frames}")
    history, forecasts = previous.to(device=model.device, dtype=torch.float32), []
    for _ in range(frames):
        forecasts.append(model.forecast(history, **options))
        history = torch.cat([history[:, 1:], forecasts[-1][:, None]], dim=1)
    return torch.stack(forecasts, dim=1)
