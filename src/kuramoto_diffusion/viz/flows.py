"""Pictures of 2-D velocity fields on the periodic box [0, 2π)²: vorticity maps, energy spectra, vorticity histograms.

Velocity fields are (B, 2, N, N) tensors with channels (u, v) = (vx, vy) and axes [y, x], as in
``data.navier_stokes``. Lengths are in box units (side 2π, integer wavenumbers), so vorticity is in
units of 1/time. Each function takes a dict label -> fields ("real", "Kuramoto", …), draws one
matplotlib figure and returns it as a PIL RGB image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.navier_stokes import vorticity_from_velocity
from ..errors import UserError
from ..metrics.flows import _check_velocity, energy_spectrum
from .images import figure_to_image


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _checked_fields(fields: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each entry as a float64 (B, 2, N, N) CPU tensor without grad (for numpy), or a UserError naming the bad label."""
    if not fields:
        raise UserError("no velocity fields to draw: pass at least one label -> (B, 2, N, N) tensor")
    return {
        label: _check_velocity(torch.as_tensor(velocity).detach().cpu(), f"fields {label!r}")
        for label, velocity in fields.items()
    }


def flow_field_grid(rows: dict[str, Tensor], columns: int = 4, arrows: int = 16) -> Image.Image:
    """A grid of flows: one row per label, its first ``columns`` fields side by side.

    Each panel shows the vorticity ω = ∂v/∂x − ∂u/∂y (1/time) in a diverging colour map over the box
    [0, 2π)², with the velocity as about ``arrows`` × ``arrows`` arrows on top. Colours and arrow
    lengths share one scale across the figure, set by the first row (the reference, e.g. "real"):
    the colour range is ±(99th percentile of |ω|) and an arrow at the 99th-percentile speed spans
    1.5 arrow spacings.
    """
    if columns < 1 or arrows < 1:
        raise UserError(f"columns and arrows must be at least 1, got {columns} and {arrows}")
    fields = _checked_fields(rows)
    sizes = {label: velocity.shape[-1] for label, velocity in fields.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{label!r}: {size} × {size}" for label, size in sizes.items())
        raise UserError(f"all rows must hold fields of the same grid size, got {listing}")
    for label, velocity in fields.items():
        if velocity.shape[0] < columns:
            raise UserError(f"row {label!r} holds {velocity.shape[0]} fields but {columns} columns were asked for")

    velocities = {label: velocity[:columns].numpy() for label, velocity in fields.items()}
    vorticities = {label: vorticity_from_velocity(velocity[:columns]).numpy() for label, velocity in fields.items()}
    reference = next(iter(fields))
    # Shared scales from the reference row, so a generated row that is too strong or too weak shows it.
    # The 99th percentile rather than the maximum keeps one extreme pixel from washing out the rest.
    colour_limit = float(np.percentile(np.abs(vorticities[reference]), 99)) or 1.0
    reference_speed = np.hypot(velocities[reference][:, 0], velocities[reference][:, 1])
    speed_limit = float(np.percentile(reference_speed, 99)) or 1.0

    size = next(iter(sizes.values()))
    spacing = 2 * math.pi / size
    stride = max(1, round(size / arrows))
    points = np.arange(0, size, stride) * spacing
    # Pixel centres on the grid points x_j = 2πj/N, y_i = 2πi/N; y grows upwards (origin="lower").
    extent = (-spacing / 2, 2 * math.pi - spacing / 2, -spacing / 2, 2 * math.pi - spacing / 2)

    plt = _pyplot()
    figure, axes = plt.subplots(len(fields), columns, figsize=(2.2 * columns + 1.2, 2.2 * len(fields)), squeeze=False)
    for axes_row, label in zip(axes, fields):
        for axis, velocity, vorticity in zip(axes_row, velocities[label], vorticities[label]):
            image = axis.imshow(
                vorticity, cmap="RdBu_r", vmin=-colour_limit, vmax=colour_limit, origin="lower", extent=extent
            )
            axis.quiver(
                points,
                points,
                velocity[0, ::stride, ::stride],
                velocity[1, ::stride, ::stride],
                angles="xy",
                scale_units="xy",
                scale=speed_limit / (1.5 * stride * spacing),
                width=0.006,
            )
            axis.set_xticks([])
            axis.set_yticks([])
        axes_row[0].set_ylabel(label, fontsize=11)
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="vorticity ω")
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


def energy_spectra_plot(fields: dict[str, Tensor]) -> Image.Image:
    """Log–log energy spectra E(k) against integer wavenumber k ≥ 1, one line per label.

    E(k) is the kinetic energy ½|û|² in the shell k − ½ ≤ |k| < k + ½, averaged over each label's
    fields (``metrics.flows.energy_spectrum``); shell 0, the mean flow, has no place on a log axis.
    """
    fields = _checked_fields(fields)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.6))
    peak = 0.0
    for label, velocity in fields.items():
        k, shells = energy_spectrum(velocity)
        spectrum = shells.numpy()[1:]
        peak = max(peak, float(spectrum.max()))
        # Empty shells (exactly 0) would break the log axis: leave gaps there instead.
        axis.loglog(k.numpy()[1:], np.where(spectrum > 0, spectrum, np.nan), label=label)
    if peak > 0:
        # Shells a flow does not fill hold FFT round-off (~1e-32); don't let them squash the rest.
        axis.set_ylim(bottom=max(axis.get_ylim()[0], peak * 1e-12))
    axis.set_xlabel("wavenumber k")
    axis.set_ylabel("energy E(k)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


def vorticity_histogram_plot(fields: dict[str, Tensor], bins: int = 60) -> Image.Image:
    """Densities of the vorticity values ω (1/time) over all grid points, one step line per label.

    All labels share ``bins`` equal bins over the joint range of values; the y-axis (probability
    density, per unit of ω) is logarithmic so that the tails stay visible.
    """
    if bins < 1:
        raise UserError(f"bins must be at least 1, got {bins}")
    fields = _checked_fields(fields)
    values = {label: vorticity_from_velocity(velocity).flatten().numpy() for label, velocity in fields.items()}
    low = min(float(v.min()) for v in values.values())
    high = max(float(v.max()) for v in values.values())
    if high - low < 1e-12:  # constant vorticity (e.g. all-zero flow): give the bins some width
        low, high = low - 1.0, high + 1.0
    edges = np.linspace(low, high, bins + 1)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for label, vorticity in values.items():
        axis.hist(vorticity, bins=edges, density=True, histtype="step", linewidth=1.5, label=label)
    axis.set_yscale("log")
    axis.set_xlabel("vorticity ω")
    axis.set_ylabel("density")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


__all__ = ["energy_spectra_plot", "flow_field_grid", "vorticity_histogram_plot"]
