"""``kuramoto-diffusion forward``: a few images pushed through Kuramoto global, Kuramoto local and Euclidean
diffusion, with R(t)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_MAX_IMAGE_PIXELS, BadImagePolicy
from ..data import open_image_source
from ..processes import build_process, process_config
from ..processes.kuramoto import Padding
from ..processes.schedules import ScheduleShape
from ..viz.images import forward_figure, save_image_atomic


@dataclass(frozen=True)
class ForwardRequest:
    """The forward command's options (``kuramoto-diffusion forward --help`` says what each means)."""

    data: str = "textures"
    image_size: int = 32
    num: int = 3
    frames: int = 9
    out: Path = Path("forward.png")
    on_bad_image: BadImagePolicy = "error"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    steps: int = 100
    schedule: ScheduleShape = "linear"
    neighbourhood: int = 5
    padding: Padding = "reflect"
    seed: int = 0
    quiet: bool = False


def forward_picture(request: ForwardRequest) -> Path:
    """Strips of ``num`` images through Kuramoto global, local and Euclidean diffusion, plus R(t), to ``out``."""
    data, image_size, num, seed = request.data, request.image_size, request.num, request.seed
    source = open_image_source(
        data,
        image_size,
        split="all",
        seed=seed,
        on_bad_image=request.on_bad_image,
        max_image_pixels=request.max_image_pixels,
    )
    images = source.fixed_batch(num, seed=seed)
    order_batch = source.fixed_batch(32, seed=seed + 1)
    processes = {
        name: build_process(
            process_config(
                name,
                steps=request.steps,
                schedule=request.schedule,
                neighbourhood=request.neighbourhood,
                padding=request.padding,
            )
        )
        for name in ("kuramoto-global", "kuramoto-local", "euclidean")
    }
    picture = forward_figure(processes, images, frames=request.frames, generator_seed=seed, order_batch=order_batch)
    save_image_atomic(picture, request.out)
    return request.out
