"""The machinery every generation task shares: the (guided) score function of some rows of a batch, prior
draws in batches of ``batch_size`` (on the CPU, so results do not depend on the device), and one joined result."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import UserError
from ..processes.base import ScoreFn
from ..sampling.sweep import SampleResult

if TYPE_CHECKING:
    from ..model import DiffusionModel

# sweep(starting states, their rows of the batch, the device generator) -> the result of those rows
Sweep = Callable[[Tensor, slice, torch.Generator | None], SampleResult]


def row_scores(
    model: DiffusionModel, class_labels: Tensor | None, guidance: float, condition: Tensor | None = None
) -> Callable[[slice], ScoreFn]:
    """rows -> the (guided) score function of those rows of the batch: ``model.score`` with the rows' class
    labels (num,) or forecasting condition (num, K, H, W) and the guidance weight (see ``DiffusionModel.score``).

    A guidance weight without a class or a forecasting context, or a class for a model without classes, is a
    UserError.
    """
    if class_labels is None and condition is None:
        if guidance != 1.0:
            raise UserError(
                "guidance needs a class (class_name) or a forecasting context; without one the model "
                "samples unconditionally"
            )
        return lambda rows: model.score
    if class_labels is not None and not model.config.class_names:
        raise UserError(
            "this model is not class-conditional (trained without classes=True); drop class_name and guidance"
        )
    if class_labels is None and guidance != 1.0 and not model.config.context_frames:
        raise UserError("guidance needs a class or a forecasting context; a field condition is not guided")

    def for_rows(rows: slice) -> ScoreFn:
        labels = None if class_labels is None else class_labels[rows]
        context = None if condition is None else condition[rows]
        return lambda x, t: model.score(
            x,
            t,
            condition=None if context is None else context.to(x.device),
            class_labels=None if labels is None else labels.to(x.device),
            guidance=guidance,
        )

    return for_rows


def sweep_in_batches(
    model: DiffusionModel,
    num: int,
    batch_size: int,
    x_start: Tensor | None,
    generator: torch.Generator | None,
    sweep: Sweep,
) -> SampleResult:
    """Run ``sweep(states, rows, device generator)`` over batches of ``num`` starting states and join the results.

    The starting states are ``x_start`` rows, or prior samples drawn with ``generator`` on the CPU. The network
    is put in eval mode first.
    """
    if num < 1:
        raise UserError(f"num must be ≥ 1, got {num}")
    if batch_size < 1:
        raise UserError(f"batch_size must be ≥ 1, got {batch_size}")
    model.network.eval()
    device = model.device
    results = []
    for first in range(0, num, batch_size):
        rows = slice(first, min(first + batch_size, num))
        if x_start is None:
            count = rows.stop - rows.start
            x = model.process.prior_sample(model.config.state_shape(count), generator=generator, device="cpu").to(
                device
            )
        else:
            x = x_start[rows].to(device)
        results.append(sweep(x, rows, device_generator(generator, device)))
    return concatenate(results)


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """Samplers draw noise on the model's device; a CPU generator seeds a device generator deterministically."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def concatenate(results: list[SampleResult]) -> SampleResult:
    """The batches' results as one: states and trajectories joined, R(t) averaged with the batch sizes as
    weights, seam crossings summed."""
    first = results[0]
    trajectory = None
    if first.trajectory is not None:
        trajectory = [torch.cat([r.trajectory[i] for r in results]) for i in range(len(first.trajectory))]  # type: ignore[index]  # every piece was sampled with the same options: all have one
    weights = [r.states.shape[0] for r in results]
    order = [
        sum(w * r.order_parameter[i] for w, r in zip(weights, results)) / sum(weights)
        for i in range(len(first.order_parameter))
    ]
    return SampleResult(
        torch.cat([r.states for r in results]),
        first.steps,
        trajectory,
        order,
        first.function_evaluations,  # per sample: every batch runs the same sweep
        [sum(counts) for counts in zip(*(r.seam_crossings for r in results))],
    )
