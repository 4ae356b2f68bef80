"""Many samples as numbered PNG files: resumable, and split over torchrun processes.

Images are generated in fixed chunks of ``chunk_size`` consecutive indices; chunk c is seeded from
(seed, c) alone, so image i is the same however the work is split, interrupted or resumed. A chunk
whose files all exist is skipped; with W processes, process r takes the chunks c ≡ r (mod W).
SIGTERM or SIGINT stops after the chunk being written (``Stopped``); a rerun continues there.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ..model import DiffusionModel
from ..runtime import SINGLE_PROCESS, DistributedContext
from ..sampling.steps import Sampler
from ..stopping import Stopped, signal_name, stop_requests
from ..viz.images import image_grid, save_image_atomic


def image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.png"


def chunk_generator(seed: int, chunk: int) -> torch.Generator:
    """The generator of chunk ``chunk``: depends on (seed, chunk) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + chunk)


def sample_to_folder(
    model: DiffusionModel,
    folder: Path,
    num: int,
    *,
    chunk_size: int = 64,
    seed: int = 0,
    sampler: str | Sampler = "sde",
    nfe: int | None = None,
    class_labels: Tensor | None = None,
    guidance: float = 1.0,
    context: DistributedContext = SINGLE_PROCESS,
    quiet: bool = True,
) -> tuple[int, int, int]:
    """Write images 0 … num−1 to ``folder`` (this process's chunks).

    Returns (images written, images already present, decoded values clipped in the written images).
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    chunks = [c for c in range(math.ceil(num / chunk_size)) if c % context.world_size == context.rank]
    written = present = clipped_values = 0
    with stop_requests() as stop:
        for chunk in tqdm(chunks, disable=quiet, desc="sample", unit="chunk"):
            indices = range(chunk * chunk_size, min(num, (chunk + 1) * chunk_size))
            paths = [image_path(folder, index) for index in indices]
            if all(path.exists() for path in paths):
                present += len(paths)
                continue
            labels = None if class_labels is None else class_labels[indices.start : indices.stop]
            result = model.sample(
                len(paths),
                sampler=sampler,
                nfe=nfe,
                generator=chunk_generator(seed, chunk),
                batch_size=len(paths),
                class_labels=labels,
                guidance=guidance,
            )
            images, clipped = model.decode(result.states)
            clipped_values += clipped
            for path, image in zip(paths, images):
                save_image_atomic(image_grid(image[None], padding=0), path)
            written += len(paths)
            if stop.signal_number is not None and chunk != chunks[-1]:  # stop.requested, with the number typed
                # Each process stops on its own: its chunks are independent of the others'.
                raise Stopped(
                    stop.signal_number,
                    f"stopped by {signal_name(stop.signal_number)} after chunk {chunk} "
                    f"(images {indices.start}–{indices.stop - 1}); wrote {written} images, "
                    f"{present} were there already",
                )
    context.barrier()
    return written, present, clipped_values
