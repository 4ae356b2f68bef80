"""Inpainting: fill a masked region of images (or angle vectors) so that it fits the known rest (RePaint-style,
``sampling.inpainting.inpaint_sweep``). ``DiffusionModel.inpaint`` calls ``inpaint``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import UserError
from ..sampling.inpainting import check_inpainting_mask, inpaint_sweep
from ..sampling.steps import Sampler
from ..sampling.sweep import SampleResult
from .batches import row_scores, sweep_in_batches

if TYPE_CHECKING:
    from ..model import DiffusionModel

# The mask warnings name the line that called ``model.inpaint`` (this function, bound as DiffusionModel's method):
# past this function and torch.no_grad's wrapper.
_CALLER = 3


@torch.no_grad()
def inpaint(
    model: DiffusionModel,
    images: Tensor,
    mask: Tensor,
    *,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    resample: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    record_trajectory: bool = False,
    class_labels: Tensor | None = None,
    guidance: float = 1.0,
) -> SampleResult:
    """Fill the region where ``mask`` is 1 so that it fits the known data where ``mask`` is 0
    (optionally towards a class: ``class_labels``, ``guidance``, see ``generation.sample``).

    ``images``: (N, C, H, W) data in [-1, 1] (angle models: (N, D) angles in radians).
    ``mask``: 0/1 values, 1 (white) = to fill, 0 (black) = known, the convention of diffusers'
    inpainting pipelines, OpenCV and LaMa (RePaint's masks are the complement: pass ``1 - mask``);
    it has the images' number of axes, each of size 1 or the images' (e.g. (1, 1, H, W): one
    mask for all); a soft mask is an error — threshold it first, e.g. ``(mask > 0.5).float()``.
    An all-1 mask (nothing known) or an all-0 mask (nothing to fill) is allowed with a warning.
    Values of ``images`` under mask 1 are ignored (set to 0, mid grey /
    the reference phase, before the known data is pushed forward). Samples from the prior at
    t = T with ``inpaint_sweep``; ``resample`` r > 1 is RePaint's resampling and costs r times
    the NFE. The known region of the decoded result equals ``images`` (up to float rounding).
    """
    model.check_data(images, "images")
    check_inpainting_mask(mask, images.shape, what="images")
    if bool((mask == 1).all()):
        warnings.warn(
            "the inpainting mask is all 1 (white = fill): nothing of the images is kept, so this samples new images",
            stacklevel=_CALLER,
        )
    elif bool((mask == 0).all()):
        warnings.warn(
            "the inpainting mask is all 0 (black = keep): there is nothing to fill, so the result is the input images",
            stacklevel=_CALLER,
        )
    known_mask = 1 - mask.to(device=images.device, dtype=images.dtype).expand(images.shape)
    known_data = torch.where(known_mask != 0, images, 0.0)
    if not bool(torch.isfinite(known_data).all()) or (model.config.data_kind == "image" and known_data.abs().max() > 1):
        raise UserError("known images must be finite data values in [-1, 1]; scale pixels as value / 127.5 − 1")
    known = model.encode(known_data.to(torch.float32))

    score_for_rows = row_scores(model, class_labels, guidance)

    def sweep(x: Tensor, rows: slice, device_generator: torch.Generator | None) -> SampleResult:
        return inpaint_sweep(
            model.process,
            score_for_rows(rows),
            x,
            known[rows].to(x.device),
            known_mask[rows],
            sampler=sampler,
            nfe=nfe,
            resample=resample,
            generator=device_generator,
            record_trajectory=record_trajectory,
        )

    return sweep_in_batches(model, images.shape[0], batch_size, None, generator, sweep)
