"""Class-conditional Kuramoto model on two classes of stripes, sampled with several guidance weights.

    python examples/class_guidance_picture.py out.png [work_dir]

Makes a folder with class subfolders (horizontal/ and vertical/ stripes of random phase), trains
`kuramoto-diffusion train --classes` for 1,500 steps (about 1.5 min on one CPU thread), then draws
one row per (class, guidance w): w = 0 is the unconditional model, 1 the conditional one, 3 stronger.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kuramoto_diffusion.app.cli import main as cli
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.viz.images import image_grid, labelled_rows, save_image_atomic


def stripes(horizontal: bool, size: int, phase: float) -> np.ndarray:
    coordinate = np.arange(size)[:, None] if horizontal else np.arange(size)[None, :]
    wave = np.sin(2 * np.pi * coordinate / 4 + phase) * np.ones((size, size))
    return np.rint(127.5 + 110 * wave).astype(np.uint8)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("classes.png")
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    data = work / "stripes"
    for name, horizontal in (("horizontal", True), ("vertical", False)):
        (data / name).mkdir(parents=True, exist_ok=True)
        for index in range(8):
            Image.fromarray(stripes(horizontal, 12, phase=index)).save(data / name / f"{index}.png")
    run = work / "run"
    if not (run / "checkpoints").exists():
        cli(
            [
                "train",
                "--data",
                str(data),
                "--classes",
                "--image-size",
                "8",
                "--preset",
                "tiny",
                "--steps",
                "20",
                "--neighbourhood",
                "3",
                "--train-steps",
                "1500",
                "--batch-size",
                "32",
                "--lr",
                "1e-3",
                "--ema-decay",
                "0.99",
                "--sample-every",
                "0",
                "--checkpoint-every",
                "1500",
                "--out",
                str(run),
                "--quiet",
            ]
        )
    model = DiffusionModel.from_pretrained(run)
    rows = []
    for name in model.config.class_names:
        for guidance in (0.0, 1.0, 3.0):
            result = model.sample(
                16,
                nfe=20,
                generator=torch.Generator().manual_seed(0),
                class_labels=model.class_labels(name, 16),
                guidance=guidance,
            )
            images, _ = model.decode(result.states)
            rows.append((f"{name}, w = {guidance:g}", image_grid(images, columns=16, upscale=4)))
    save_image_atomic(labelled_rows(rows), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
