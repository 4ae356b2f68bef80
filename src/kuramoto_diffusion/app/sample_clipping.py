"""Values clipped at decode: why, the summary line, the undertrained warning, and ``--clip-denoised``."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ..errors import UserError
from ..model import DiffusionModel
from ..processes import KuramotoConfig

# Above this share of decoded values clipped, samples are mostly out of the data's range: the model is most
# likely undertrained (a trained image model clips well under 1 %; a 600-step tiny run about 0.1 %).
UNDERTRAINED_CLIPPED_FRACTION = 0.03


def clipped_reason(model: DiffusionModel) -> str:
    """Why an image model's decoded values get clipped, by process: phases outside ±a·π for Kuramoto (through the
    seam at ±π or into the gap between ±a·π and ±π); values outside [-1, 1] for the Euclidean baseline (no seam)."""
    process = model.config.process
    if isinstance(process, KuramotoConfig):  # the periodic image models
        return f"phases outside ±{process.phase_range / np.pi:.2g}π: crossed the seam or left the data's range"
    return "values outside [-1, 1]"


def clipped_summary(model: DiffusionModel, clipped: int, total: int) -> str:
    """'N of M values (p %) clipped at decode (why)' for the final message of sample."""
    return f"{clipped} of {total} values ({100 * clipped / max(total, 1):.2f} %) clipped at decode ({clipped_reason(model)})"


def warn_if_undertrained(fraction: float, checkpoint: object) -> None:
    """One warning line when more than ``UNDERTRAINED_CLIPPED_FRACTION`` of decoded values were clipped."""
    if fraction > UNDERTRAINED_CLIPPED_FRACTION:
        warnings.warn(
            f"{100 * fraction:.1f} % of decoded values were clipped: {checkpoint} is probably undertrained "
            "(train longer; a trained model clips under 1 %)",
            stacklevel=2,
        )


def with_clip_denoised(model: DiffusionModel, clip: bool) -> DiffusionModel:
    """The model with the Euclidean baseline's x₀ clipping switched on (``--clip-denoised``)."""
    if not clip:
        return model
    if model.config.process.kind != "euclidean":
        raise UserError("--clip-denoised is for Euclidean models; Kuramoto states are phases and need no clipping")
    return model.with_process(dataclasses.replace(model.config.process, clip_denoised=True))
