"""Flow pictures: vorticity grids, energy spectra and vorticity histograms render, differ with their input, and reject bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.data.navier_stokes import random_vorticity, velocity_from_vorticity
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.viz.flows import energy_spectra_plot, flow_field_grid, vorticity_histogram_plot

N = 32


def taylor_green(batch: int = 2, size: int = N) -> torch.Tensor:
    """u = sin x cos y, v = −cos x sin y (vorticity 2 sin x sin y), repeated ``batch`` times."""
    points = torch.linspace(0, 2 * math.pi, size + 1, dtype=torch.float64)[:-1]
    y, x = torch.meshgrid(points, points, indexing="ij")
    velocity = torch.stack([torch.sin(x) * torch.cos(y), -torch.cos(x) * torch.sin(y)])
    return velocity.expand(batch, 2, size, size).clone()


def smooth_random(batch: int = 2, size: int = N, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return velocity_from_vorticity(random_vorticity(size, generator, batch_shape=(batch,)))


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.int16)


def assert_plausible_picture(picture: Image.Image) -> None:
    assert isinstance(picture, Image.Image) and picture.mode == "RGB"
    assert 150 <= picture.width <= 3000 and 150 <= picture.height <= 3000
    assert len(np.unique(pixels(picture).reshape(-1, 3), axis=0)) > 10  # drawn, not one flat colour


def test_flow_field_grid_draws_and_follows_its_input():
    real, kuramoto = taylor_green(), smooth_random()
    picture = flow_field_grid({"real": real, "Kuramoto": kuramoto}, columns=2, arrows=8)
    assert_plausible_picture(picture)
    # Reversing the flow flips the sign of ω: red and blue swap, so the picture changes.
    flipped = flow_field_grid({"real": real, "Kuramoto": -kuramoto}, columns=2, arrows=8)
    assert flipped.size == picture.size
    assert np.abs(pixels(flipped) - pixels(picture)).mean() > 1.0


def test_flow_field_grid_grows_with_the_number_of_rows():
    fields = taylor_green()
    one = flow_field_grid({"real": fields}, columns=2)
    three = flow_field_grid(
        {"real": fields, "Kuramoto": smooth_random(), "Euclidean": smooth_random(seed=1)}, columns=2
    )
    assert three.height > 2 * one.height
    assert abs(three.width - one.width) < 0.2 * one.width


def test_flow_field_grid_rejects_bad_rows():
    with pytest.raises(UserError, match="'Kuramoto' holds 2 fields but 4 columns"):
        flow_field_grid({"real": taylor_green(batch=4), "Kuramoto": taylor_green(batch=2)}, columns=4)
    with pytest.raises(UserError, match="same grid size"):
        flow_field_grid({"real": taylor_green(size=32), "Kuramoto": taylor_green(size=16)}, columns=2)
    with pytest.raises(UserError, match=r"\(B, 2, N, N\)"):
        flow_field_grid({"real": torch.zeros(2, 3, N, N)}, columns=2)
    with pytest.raises(UserError, match="NaN"):
        flow_field_grid({"real": torch.full((2, 2, N, N), float("nan"))}, columns=2)


def test_energy_spectra_plot_draws_and_follows_its_input():
    picture = energy_spectra_plot({"real": taylor_green(), "Kuramoto": smooth_random()})
    assert_plausible_picture(picture)
    other = energy_spectra_plot({"real": taylor_green(), "Kuramoto": smooth_random(seed=3) * 10})
    assert np.abs(pixels(other) - pixels(picture)).mean() > 0.1
    with pytest.raises(UserError):
        energy_spectra_plot({"real": torch.zeros(1, 3, N, N)})


def test_vorticity_histogram_plot_draws_and_follows_its_input():
    picture = vorticity_histogram_plot({"real": taylor_green(), "Euclidean": smooth_random()}, bins=30)
    assert_plausible_picture(picture)
    other = vorticity_histogram_plot({"real": taylor_green(), "Euclidean": 3 * smooth_random()}, bins=30)
    assert np.abs(pixels(other) - pixels(picture)).mean() > 0.1
    # An all-zero flow has one vorticity value; it still draws rather than dividing by a zero-width bin.
    assert_plausible_picture(vorticity_histogram_plot({"rest": torch.zeros(1, 2, N, N)}))
    with pytest.raises(UserError):
        vorticity_histogram_plot({"real": torch.zeros(1, 3, N, N)})
