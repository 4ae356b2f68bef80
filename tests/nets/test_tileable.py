"""Circular padding as a first-class option: seamlessly tileable samples, measured."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.metrics import tiling_seam_ratio
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import KuramotoConfig


def tileable_images(count: int, size: int, seed: int) -> np.ndarray:
    """(count, size, size) uint8 sums of two plane waves with integer wave numbers: periodic on the image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        wave = sum(
            np.cos(2 * np.pi * (rng.integers(-3, 4) * x + rng.integers(1, 4) * y) + rng.uniform(0, 6)) for _ in range(2)
        )
        images.append(np.rint(127.5 + 60 * wave).astype(np.uint8))
    return np.stack(images)


def seam_ratio_loop(images: np.ndarray) -> float:
    """The same ratio written as plain loops over pixels."""
    images = images.astype(np.float64)
    across, inside = [], []
    n, c, h, w = images.shape
    for i in range(n):
        for k in range(c):
            for r in range(h):
                across.append(abs(images[i, k, r, 0] - images[i, k, r, w - 1]))
                inside += [abs(images[i, k, r, j + 1] - images[i, k, r, j]) for j in range(w - 1)]
            for col in range(w):
                across.append(abs(images[i, k, 0, col] - images[i, k, h - 1, col]))
                inside += [abs(images[i, k, r + 1, col] - images[i, k, r, col]) for r in range(h - 1)]
    return float(np.mean(across) / np.mean(inside))


def test_tiling_seam_ratio():
    periodic = torch.from_numpy(tileable_images(8, 16, 0)).float()[:, None] / 127.5 - 1
    crops = open_image_source("textures", 16, channels=1, split="val").sample_batch(8, torch.Generator().manual_seed(0))
    assert tiling_seam_ratio(periodic) == pytest.approx(seam_ratio_loop(periodic.numpy()), rel=1e-6)
    assert tiling_seam_ratio(crops) == pytest.approx(seam_ratio_loop(crops.numpy()), rel=1e-6)
    assert 0.8 < tiling_seam_ratio(periodic) < 1.1  # a wrap step is like any other step
    assert tiling_seam_ratio(crops) > 1.15  # photo crops: opposite edges are unrelated


def test_circular_padding_makes_the_untrained_model_equivariant_to_wrap_around_shifts():
    torch.manual_seed(0)
    config = image_model_config(
        KuramotoConfig(coupling="local", neighbourhood=3, padding="circular", steps=10),
        1,
        16,
        "tiny",
        padding_mode="circular",
    )
    model = DiffusionModel(config)
    with torch.no_grad():
        for parameter in model.network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    x = torch.rand(2, 1, 16, 16) * 6 - 3
    # Shifts by multiples of the UNet's downsampling factor (2 for 'tiny') commute with the whole model.
    shifted = torch.roll(x, shifts=(4, 6), dims=(2, 3))
    assert torch.allclose(model.score(shifted, 4), torch.roll(model.score(x, 4), shifts=(4, 6), dims=(2, 3)), atol=1e-4)


@pytest.mark.slow
def test_a_model_trained_with_circular_padding_generates_tileable_images(tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for index, image in enumerate(tileable_images(24, 16, 1)):
        Image.fromarray(image).save(folder / f"{index}.png")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    ratios = {}
    for padding in ("circular", "reflect"):
        run = tmp_path / padding
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kuramoto_diffusion",
                "train",
                "--data",
                str(folder),
                "--image-size",
                "16",
                "--preset",
                "tiny",
                "--steps",
                "50",
                "--neighbourhood",
                "3",
                "--padding",
                padding,
                "--train-steps",
                "600",
                "--batch-size",
                "32",
                "--lr",
                "1e-3",
                "--ema-decay",
                "0.99",
                "--sample-every",
                "0",
                "--checkpoint-every",
                "600",
                "--out",
                str(run),
                "--quiet",
            ],
            check=True,
            env=environment,
            timeout=900,
        )
        model = DiffusionModel.from_pretrained(run)
        images, _ = model.decode(model.sample(64, generator=torch.Generator().manual_seed(0)).states)
        ratios[padding] = tiling_seam_ratio(images)
    print("seam ratio:", ratios)
    assert ratios["circular"] < 1.25 and ratios["reflect"] > ratios["circular"] + 0.1
