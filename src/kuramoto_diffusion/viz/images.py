"""Pictures: image grids, forward/reverse strips, R(t) curves and trajectory animations (Pillow + matplotlib)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..circular import IMAGE_PHASE_RANGE, order_parameter
from ..codecs import ImageCodec, to_uint8
from ..processes import ForwardProcess
from ..serialization import atomic_path

if TYPE_CHECKING:  # matplotlib is imported where a picture is drawn, so that importing viz stays light
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def image_grid(images: Tensor, columns: int | None = None, padding: int = 2, upscale: int = 1) -> Image.Image:
    """A grid of (B, C, H, W) images in [-1, 1] as one PIL image (grey padding between tiles)."""
    pixels = to_uint8(images)
    count, height, width, channels = pixels.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 128, dtype=np.uint8
    )
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        canvas[top : top + height, left : left + width] = pixels[index]
    picture = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    if upscale > 1:
        picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.Resampling.NEAREST)
    return picture


def save_image_atomic(picture: Image.Image, path: str | os.PathLike[str], **options: object) -> None:
    """Save a PIL image via a temporary file and a rename, so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        picture.save(tmp, format=_format_of(path), **options)


def _format_of(path: Path) -> str:
    return {".png": "PNG", ".gif": "GIF", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")


def labelled_rows(rows: Sequence[tuple[str, Image.Image]], label_width: int = 150) -> Image.Image:
    """Stack images vertically with a text label on the left of each."""
    from PIL import ImageDraw

    width = label_width + max(img.width for _, img in rows)
    height = sum(img.height for _, img in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for label, img in rows:
        canvas.paste(img.convert("RGB"), (label_width, top))
        draw.text((6, top + img.height // 2 - 6), label, fill="black")
        top += img.height
    return canvas


def figure_to_image(figure: object) -> Image.Image:
    """Render a matplotlib figure to a PIL image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]  # a matplotlib Figure, typed object so viz imports matplotlib lazily
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def column_header(
    labels: Sequence[str], tile_width: int, padding: int = 2, upscale: int = 1, height: int = 14
) -> Image.Image:
    """A white strip with ``labels[c]`` over column c of an ``image_grid`` of tiles ``tile_width`` px wide (before
    ``upscale``), so that every column of a strip is named (e.g. by its step t)."""
    from PIL import ImageDraw

    pitch = tile_width + padding
    width = (len(labels) * pitch + padding) * upscale
    header = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(header)
    for column, label in enumerate(labels):
        draw.text(((padding + column * pitch) * upscale, 1), label, fill="black")
    return header


def order_parameter_title(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], what: str) -> str:
    """A title that says what the R(t) curves do: for each, where it starts and ends along its own direction
    (``what``, e.g. "R(t) along the forward process"), and whether it rises or falls."""
    parts = []
    for name, (_, values) in curves.items():
        first, last = float(values[0]), float(values[-1])
        trend = "rises" if last > first + 0.01 else "falls" if last < first - 0.01 else "stays"
        parts.append(f"{name}: {trend} {first:.2f} → {last:.2f}")
    return f"{what}\n" + "; ".join(parts)


def _order_parameter_axes() -> tuple[Figure, Axes]:
    """A (figure, axis) pair for R against diffusion time t/T: the size, axis labels, R's range and the grid that
    ``order_parameter_plot`` and ``order_parameter_frames`` share. Close it with ``matplotlib.pyplot.close``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.set_xlabel("diffusion time t / T")
    axis.set_ylabel("order parameter R")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    return figure, axis


def order_parameter_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str) -> Image.Image:
    """R against diffusion time t/T, one line per named (times, values) curve."""
    import matplotlib.pyplot as plt

    figure, axis = _order_parameter_axes()
    for name, (times, values) in curves.items():
        axis.plot(times, values, label=name)
    axis.set_title(title, fontsize=8)
    axis.legend(fontsize=8)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


def order_parameter_frames(
    times: Sequence[float], values: Sequence[float], titles: Sequence[str], name: str = "generation"
) -> list[Image.Image]:
    """One R(t) picture per step k of an animation: the curve drawn up to (times[k], values[k]), titled titles[k].

    Each frame equals ``order_parameter_plot({name: (times[:k+1], values[:k+1])}, titles[k])`` up to the axes'
    limits, which stay fixed (t/T in [0, 1]) so that the animation does not jump. One figure is redrawn for
    every frame: rendering a new figure each time cost ≈ 0.3 s per frame, most of a demo's GIF.
    """
    import matplotlib.pyplot as plt

    figure, axis = _order_parameter_axes()
    (line,) = axis.plot([], [], label=name)
    axis.set_xlim(-0.02, 1.02)
    axis.legend(fontsize=8, loc="upper right")  # fixed: "best" would move from frame to frame
    heading = axis.set_title(titles[0] if titles else "", fontsize=8)
    figure.tight_layout()  # with a title in place, so that the layout leaves room for every frame's
    frames = []
    for index, title in enumerate(titles):
        line.set_data(times[: index + 1], values[: index + 1])
        heading.set_text(title)
        figure.canvas.draw()
        frames.append(Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()))  # type: ignore[attr-defined]  # Agg canvas
    plt.close(figure)
    return frames


def save_animation(frames: Sequence[Image.Image], path: str | os.PathLike[str], duration_ms: int = 80) -> None:
    """Write frames as a looping GIF (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = [f.convert("P", palette=Image.Palette.ADAPTIVE) if f.mode == "RGB" else f for f in frames]
    with atomic_path(path) as tmp:
        first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=0)


def order_parameter_curve(trajectory: Tensor) -> Tensor:
    """Mean over examples of R at each step of a (steps, batch, …) trajectory of phases."""
    r = order_parameter(trajectory.flatten(0, 1))[0]
    return r.reshape(trajectory.shape[0], -1).mean(1)


def forward_figure(
    processes: dict[str, ForwardProcess],
    images: Tensor,
    frames: int = 9,
    generator_seed: int = 0,
    order_batch: Tensor | None = None,
) -> Image.Image:
    """Strips of ``images`` pushed through each process at ``frames`` evenly spaced steps, and R(t).

    ``images`` are data values in [-1, 1]; R(t) is averaged over ``order_batch`` (default: ``images``).
    """
    rows: list[tuple[str, Image.Image]] = []
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name, process in processes.items():
        generator = torch.Generator().manual_seed(generator_seed)
        batch = order_batch if order_batch is not None else images
        codec = ImageCodec.for_process(process)
        states = codec.encode(torch.cat([images, batch]).to(torch.float64))
        trajectory = process.simulate(states, process.steps, generator=generator, return_trajectory=True)
        picks = torch.linspace(0, process.steps, frames).round().long()
        tiles = []
        for index in range(images.shape[0]):
            decoded, _ = codec.decode(trajectory[picks, index])
            tiles.append(decoded)
        strip = image_grid(torch.cat(tiles), columns=frames, upscale=2)
        rows.append(("step t", column_header([f"t={int(p)}" for p in picks], images.shape[-1], upscale=2)))
        rows.append((name, strip))
        phases = trajectory[:, images.shape[0] :]
        if not process.periodic_channels(images.shape[1]):
            phases = phases * IMAGE_PHASE_RANGE  # the same phase reading as images, for comparison
        r = order_parameter_curve(phases)
        curves[name] = ((torch.arange(process.steps + 1) / process.steps).tolist(), r.tolist())
    # With the image encoding θ = a·x the data sit within ±a of ψ_ref = 0, more ordered than the von Mises
    # prior, so R falls going forward; the title reports what the curves do rather than the textbook picture.
    plot = order_parameter_plot(
        curves, order_parameter_title(curves, "order parameter R(t) along the forward process (t = 0: data)")
    )
    return labelled_rows(rows + [("", plot)])


def angle_density_plot(
    panels: dict[str, np.ndarray], *, degrees: bool, bins: int = 72, title: str = "", labels: Sequence[str] = ()
) -> Image.Image:
    """Side-by-side densities of angle sets, one panel per named (N, D) array in the user's units.

    D ≥ 2: a Ramachandran-style 2-D histogram of angles 1 and 2 over one full turn per axis
    ([-180°, 180°) or [-π, π)), all panels on one colour scale (probability density, square-root
    colour map so that sparse regions stay visible). D = 1: one histogram per set, overlaid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    half_turn = 180.0 if degrees else math.pi
    unit = "°" if degrees else "rad"
    edges = np.linspace(-half_turn, half_turn, bins + 1)
    dims = {int(values.shape[1]) for values in panels.values()}
    if dims == {1}:
        figure, axis = plt.subplots(figsize=(6, 3.6))
        for name, values in panels.items():
            axis.hist(
                values[:, 0],
                bins=edges.tolist(),
                density=True,
                histtype="step",
                linewidth=1.5,
                label=f"{name} ({len(values)})",
            )
        axis.set_xlim(-half_turn, half_turn)
        axis.set_xlabel(f"{labels[0] if labels else 'angle 1'} ({unit})")
        axis.set_ylabel(f"density (per {unit})")
        axis.legend(fontsize=8)
    else:
        histograms = {
            name: np.histogram2d(values[:, 0], values[:, 1], bins=[edges, edges], density=True)[0]
            for name, values in panels.items()
        }
        top = max(float(h.max()) for h in histograms.values()) or 1.0
        figure, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 0.8, 4.2), squeeze=False)
        for axis, (name, histogram) in zip(axes[0], histograms.items()):
            mesh = axis.pcolormesh(
                edges, edges, histogram.T, cmap="magma", norm=matplotlib.colors.PowerNorm(0.5, vmin=0.0, vmax=top)
            )
            axis.set_aspect("equal")
            axis.set_title(f"{name} ({len(panels[name])})", fontsize=10)
            axis.set_xlabel(f"{labels[0] if labels else 'angle 1'} ({unit})")
            axis.set_ylabel(f"{labels[1] if len(labels) > 1 else 'angle 2'} ({unit})")
            if degrees:
                ticks = np.arange(-180, 181, 90)
                axis.set_xticks(ticks)
                axis.set_yticks(ticks)
        area = "square degree" if degrees else "rad²"
        figure.colorbar(mesh, ax=list(axes[0]), shrink=0.85, label=f"density (per {area})")
    if title:
        figure.suptitle(title, fontsize=10)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture
