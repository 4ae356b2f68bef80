"""Inpainting and SDEdit with the shipped texture model, as one labelled picture.

    python examples/inpaint_picture.py out.png

Rows: held-out texture crops; the same with the centre square masked (grey); inpainted
(RePaint-style, without and with resampling); then SDEdit (``forward_then_reverse``):
the originals pushed forward to step t and generated back, for several t.
"""

from __future__ import annotations

import sys
import time

import torch

from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.viz.images import image_grid, labelled_rows, save_image_atomic

MODEL_NAME = "textures-kuramoto-local-32"  # a shipped model, loaded by name
NUM_IMAGES = 6
HOLE = 12  # side of the masked centre square, pixels (of 32)
SDEDIT_STEPS = (10, 25, 50, 75)
UPSCALE = 3


def centre_mask(size: int, hole: int) -> torch.Tensor:
    """(1, 1, size, size): 1 (white, to fill) in the centre hole×hole square, 0 (black, known) outside."""
    mask = torch.zeros(1, 1, size, size)
    start = (size - hole) // 2
    mask[..., start : start + hole, start : start + hole] = 1
    return mask


def main(output: str) -> None:
    model = DiffusionModel.from_pretrained(MODEL_NAME)
    size = model.config.image_size
    images = open_image_source("textures", size, channels=1, split="val").fixed_batch(NUM_IMAGES, seed=0)
    mask = centre_mask(size, HOLE)

    def row(batch: torch.Tensor) -> object:
        return image_grid(batch, columns=NUM_IMAGES, upscale=UPSCALE)

    rows = [("original (val)", row(images)), ("masked", row(images * (1 - mask)))]
    for resample in (1, 3):
        began = time.perf_counter()
        result = model.inpaint(images, mask, nfe=100, resample=resample, generator=torch.Generator().manual_seed(0))
        filled, _ = model.decode(result.states)
        kept = (filled - images).mul(1 - mask).abs().max().item()
        print(
            f"inpaint r={resample}: NFE {result.function_evaluations}, {time.perf_counter() - began:.1f} s, "
            f"largest change of a known pixel {kept:.2e}"
        )
        rows.append((f"inpainted, r={resample}", row(filled)))
    for start_step in SDEDIT_STEPS:
        result = model.forward_then_reverse(images, start_step, generator=torch.Generator().manual_seed(1))
        rows.append((f"SDEdit from t={start_step}", row(model.decode(result.states)[0])))
    save_image_atomic(labelled_rows(rows), output)
    print(f"wrote {output}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/inpaint_picture.py OUTPUT.png")
    main(sys.argv[1])
