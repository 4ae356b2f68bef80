"""The gradients of one optimiser step, whatever the loss: the warm-up learning rate, the network wrapped for
data parallelism and compilation, and the backward passes of the micro-batches (``DistributedContext.micro_batches``)
with fp16 loss scaling, and the clipped optimiser step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal, cast

import torch
from torch import Tensor

from ..runtime import DistributedContext, gradient_sync
from .objectives import DSMExample


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a linear ramp to ``lr`` over ``warmup_steps`` steps
    (0: none)."""
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr


def training_network(
    network: torch.nn.Module, context: DistributedContext, device: torch.device, *, compile: bool
) -> torch.nn.Module:
    """The module the loss runs: DistributedDataParallel around ``network`` when there are several processes,
    compiled with ``compile``. It shares the parameters; the EMA and checkpoints see the plain module."""
    if context.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        network = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    if compile:
        # torch.compile is typed as returning a callable; on a Module it returns an OptimizedModule, a Module.
        network = cast(torch.nn.Module, torch.compile(network))
    return network


def backward_micro_batches(
    loss_of: Callable[[torch.nn.Module, DSMExample], Tensor],
    network: torch.nn.Module,
    example: DSMExample,
    pieces: list[slice],
    *,
    batch_size: int,
    draws: int,
    world_size: int,
    scaler: torch.amp.GradScaler,
) -> Tensor:
    """Backpropagate ``loss_of(network, micro-batch)`` for each of this process's micro-batches ``pieces`` (rows
    of the global batch of ``batch_size`` states; ``example`` holds this process's rows, ``draws`` per state),
    each weighted by its share of the batch, so that the averaged gradient is the whole batch's. Gradients are
    all-reduced on the last micro-batch only.

    Returns this process's share of the batch's mean loss (a 0-dim tensor; summed over processes, the mean).
    """
    first = pieces[0].start
    share_sum = torch.zeros((), device=example.x.device)
    for index, rows in enumerate(pieces):
        with gradient_sync(network, synchronise=index == len(pieces) - 1):
            part = example.rows((rows.start - first) * draws, (rows.stop - first) * draws)
            loss = loss_of(network, part)
            share = (rows.stop - rows.start) / batch_size
            # DDP averages gradients over the W processes: scale by W to get the sum of the shares.
            scaler.scale(loss * (share * world_size)).backward()
        share_sum = share_sum + loss.detach() * share
    return share_sum


def optimiser_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    parameters: Iterable[torch.nn.Parameter],
    grad_clip: float,
) -> Literal["stepped", "overflow", "non-finite"]:
    """Unscale the gradients, clip their norm to ``grad_clip`` (0: no clipping) and step ``optimizer``; gradients
    that are NaN/inf are dropped instead: "overflow" under fp16 loss scaling (the scale is lowered, as
    ``GradScaler`` does), else "non-finite"."""
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip if grad_clip > 0 else math.inf)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.update()  # an fp16 overflow: lower the loss scale; the next step draws a new batch
            return "overflow"
        return "non-finite"
    scaler.step(optimizer)
    scaler.update()
    return "stepped"
