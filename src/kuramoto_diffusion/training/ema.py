"""The exponential moving average of the weights that sampling uses: its decay ramp and its update."""

from __future__ import annotations

import torch


def ema_decay_at(step: int, decay: float, warmup_steps: int) -> float:
    """The EMA's decay after ``step`` optimiser steps (0-based): min(decay, (1 + n)/(10 + n)), diffusers' ramp,
    through the whole run (``warmup_steps`` 0) or up to ``warmup_steps`` only."""
    if warmup_steps and step > warmup_steps:
        return decay
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema_network: torch.nn.Module, network: torch.nn.Module, decay: float) -> None:
    """Move each EMA parameter a fraction 1 − ``decay`` (in [0, 1]) of the way to the live one; buffers (norm
    statistics) are copied as they are."""
    for ema, live in zip(ema_network.parameters(), network.parameters()):
        ema.lerp_(live, 1.0 - decay)
    for ema_buffer, live_buffer in zip(ema_network.buffers(), network.buffers()):
        ema_buffer.copy_(live_buffer)
