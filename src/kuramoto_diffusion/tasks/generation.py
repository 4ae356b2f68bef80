"""Generation from the prior or from pushed-forward data: ``sample``, ``forward_then_reverse`` (SDEdit-like
editing) and ``sample_images`` (decoded to PIL images). ``DiffusionModel``'s methods of the same names call these;
the composite tasks call back ``model.sample``, so a subclass's (or a test double's) sampling is used throughout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..codecs import to_uint8
from ..errors import UserError
from ..sampling.steps import Sampler
from ..sampling.sweep import SampleResult, reverse_sweep
from .batches import row_scores, sweep_in_batches

if TYPE_CHECKING:
    from PIL import Image

    from ..model import DiffusionModel


@torch.no_grad()
def sample(
    model: DiffusionModel,
    num: int,
    *,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    record_trajectory: bool = False,
    x_start: Tensor | None = None,
    start_step: int | None = None,
    class_labels: Tensor | None = None,
    guidance: float = 1.0,
    condition: Tensor | None = None,
) -> SampleResult:
    """Generate ``num`` states with a reverse sweep, in batches.

    Starts from the prior at t = T, or from ``x_start`` (states at ``start_step``, e.g. real
    data pushed forward for editing). Class-conditional models take ``class_labels`` (num,)
    (see ``DiffusionModel.class_labels``) and a classifier-free ``guidance`` weight (see ``DiffusionModel.score``).
    A forecasting model takes ``condition`` (num, K, H, W) from ``DiffusionModel.context_features`` (see
    ``forecasting.forecast``), guided like a class. Decode with ``model.decode``.
    """
    score_for_rows = row_scores(model, class_labels, guidance, condition)

    def sweep(x: Tensor, rows: slice, device_generator: torch.Generator | None) -> SampleResult:
        return reverse_sweep(
            model.process,
            score_for_rows(rows),
            x,
            sampler=sampler,
            nfe=nfe,
            start_step=start_step,
            generator=device_generator,
            record_trajectory=record_trajectory,
        )

    return sweep_in_batches(model, num, batch_size, x_start, generator, sweep)


@torch.no_grad()
def forward_then_reverse(
    model: DiffusionModel,
    data: Tensor,
    start_step: int,
    *,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    record_trajectory: bool = False,
    class_labels: Tensor | None = None,
    guidance: float = 1.0,
) -> SampleResult:
    """Push data (in data units) forward to ``start_step`` and generate back from there (SDEdit-like),
    optionally towards a class (``class_labels``, ``guidance``: see ``sample``).

    ``generator`` draws the forward chain's noise first, then the reverse sweep's.
    """
    states = model.process.simulate(model.encode(data.to(torch.float32)), start_step, generator=generator)
    return model.sample(
        data.shape[0],
        sampler=sampler,
        nfe=nfe,
        generator=generator,
        batch_size=batch_size,
        record_trajectory=record_trajectory,
        x_start=states,
        start_step=start_step,
        class_labels=class_labels,
        guidance=guidance,
    )


def sample_images(model: DiffusionModel, num: int, **options: object) -> list[Image.Image]:
    """``sample`` (same keyword options) decoded to PIL images (image models only)."""
    from PIL import Image  # here only: loading a model needs no image library

    if model.config.data_kind != "image":
        raise UserError("sample_images needs an image model; use sample() and decode() for angle data")
    images, _ = model.decode(model.sample(num, **options).states)  # type: ignore[arg-type]  # **options: object, checked by sample() itself
    pixels = to_uint8(images)
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]
