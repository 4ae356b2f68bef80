"""The sample command's request (``SampleRequest``, its sampler options ``SamplerOptions``; the defaults are the
CLI's) and the class guidance it passes to ``DiffusionModel.sample``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from torch import Tensor

from ..config import DEFAULT_MAX_IMAGE_PIXELS
from ..errors import UserError
from ..sampling import Sampler
from ..sampling.steps import REVERSE_STEPS, corrected_sampler


class SweepArguments(TypedDict):
    """The keyword arguments ``SamplerOptions.arguments`` gives a sweep."""

    sampler: Sampler
    nfe: int | None


@dataclass(frozen=True)
class SamplerOptions:
    """--sampler, --nfe, --grid, --rho, --corrector-steps and --snr (sample and evaluate share them)."""

    sampler: str = "sde"
    nfe: int | None = None  # None: T
    grid: str = "uniform"
    rho: float = 7.0
    corrector_steps: int | None = None
    snr: float | None = None

    def build(self) -> Sampler:
        """The Sampler these options name (sde with corrector options is pc)."""
        corrector = self.corrector_steps is not None or self.snr is not None
        name = corrected_sampler(self.sampler) if corrector else self.sampler
        if name is None:
            takers = " or ".join(other for other in REVERSE_STEPS if corrected_sampler(other) is not None)
            raise UserError(
                f"--corrector-steps and --snr are for --sampler {takers}; the {self.sampler} sampler has no corrector"
            )
        if self.rho != 7.0 and self.grid != "rho":
            raise UserError("--rho sets the exponent of --grid rho; add --grid rho or leave --rho out")
        return Sampler(name, grid=self.grid, rho=self.rho, corrector_steps=self.corrector_steps, snr=self.snr)

    def arguments(self) -> SweepArguments:
        """``sampler=`` and ``nfe=`` for a model's sweep (``sample``, ``inpaint``, ``forward_then_reverse``, ``rollout``)."""
        return {"sampler": self.build(), "nfe": self.nfe}


@dataclass(frozen=True)
class SampleRequest:
    """The sample command's options (``kuramoto-diffusion sample --help`` says what each means)."""

    checkpoint: Path
    num: int = 64
    sampling: SamplerOptions = field(default_factory=SamplerOptions)
    batch_size: int = 64
    out: Path | None = None  # None: samples.png / .csv / .npz by the model's data kind
    out_npy: Path | None = None
    out_plot: Path | None = None
    out_dir: Path | None = None
    save_trajectory: Path | None = None
    from_data: str | None = None
    start_step: int | None = None  # None: T/2
    inpaint: Path | None = None
    mask: Path | None = None
    invert_mask: bool = False
    resample: int = 1
    no_ema: bool = False
    device: str = "auto"
    clip_denoised: bool = False
    class_name: str | None = None
    guidance: float = 1.0
    context: Path | None = None
    rollout: int = 1
    on_bad_image: str = "error"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    seed: int = 0
    quiet: bool = False


class Guided(TypedDict):
    """The class guidance of a sample call (``DiffusionModel.sample``'s keywords)."""

    class_labels: Tensor | None
    guidance: float
