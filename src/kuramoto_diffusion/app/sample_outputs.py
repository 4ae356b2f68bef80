"""What sample writes for angle and flow models (samples, forecasts) and the trajectory animation of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data import is_angle_spec, open_flow_source, open_source, save_angles
from ..data.angles import radians_to_user_units
from ..data.flow_generation import save_npz_atomic
from ..errors import UserError
from ..model import DiffusionModel
from ..processes import KuramotoProcess
from ..viz.flows import flow_field_grid
from ..viz.images import (
    angle_density_plot,
    image_grid,
    labelled_rows,
    order_parameter_frames,
    save_animation,
    save_image_atomic,
)
from .sample_request import Guided, SampleRequest


def check_non_image_sample_options(
    request: SampleRequest, kind: str, suffixes: tuple[str, ...], extra: dict[str, object] | None = None
) -> Path:
    """Refuse the image-only options of ``sample`` for ``kind`` ("a flow model", "an angle model") and return
    --out, which must end in one of ``suffixes`` (default: samples + the first suffix)."""
    image_options = {
        "--inpaint": request.inpaint,
        "--from-data": request.from_data,
        "--out-dir": request.out_dir,
        "--save-trajectory": request.save_trajectory,
        "--out-npy": request.out_npy,
        **(extra or {}),
    }
    written = " or FILE".join(suffixes)
    given = [name for name, value in image_options.items() if value is not None]
    if given:
        raise UserError(
            f"{given[0]} applies to image models; {request.checkpoint} is {kind}: write its samples with "
            f"--out FILE{written} (and --out-plot FILE.png)"
        )
    out = request.out if request.out is not None else Path("samples" + suffixes[0])
    if out.suffix.lower() not in suffixes:
        raise UserError(
            f"{out}: {kind} writes its samples as {' or '.join(suffixes)}; pass e.g. --out samples{suffixes[0]}"
        )
    return out


def sample_flows(request: SampleRequest, model: DiffusionModel, generator: torch.Generator) -> Tensor:
    """``sample`` for flow models: velocities (N, 2, H, W) float32 in the data's units to --out (.npz, array
    ``velocity``: itself a flow file that ``flows:`` and ``evaluate`` read), and --out-plot, vorticity and arrows of
    training fields beside the samples. Forecasting models roll out from --context instead (``forecast_flows``).
    Returns the velocities."""
    out = check_non_image_sample_options(request, "a flow model", (".npz",), extra={"--class": request.class_name})
    if model.config.context_frames:
        return forecast_flows(request, model, generator, out)
    if request.context is not None or request.rollout != 1:
        raise UserError(
            f"{request.checkpoint} does not forecast (trained without --context-frames); drop --context and --rollout"
        )
    data = model.run_config.data if model.run_config is not None else None
    real: Tensor | None = None
    if request.out_plot is not None and data is not None:
        # Opened before sampling, so that moved training data fails fast.
        real = open_source(data, split="all").fixed_batch(min(request.num, 4), seed=request.seed)
    result = model.sample(
        request.num,
        **request.sampling.arguments(),
        generator=generator,
        batch_size=request.batch_size,
        guidance=request.guidance,
    )
    velocity, clipped = model.decode(result.states)
    velocity = velocity.detach().cpu().float()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(out, {"velocity": velocity.numpy()})
    if request.out_plot is not None:
        shown = min(request.num, 4)
        rows = (
            {"training data": real[:shown], "generated": velocity[:shown]}
            if real is not None
            else {"generated": velocity[:shown]}
        )
        save_image_atomic(flow_field_grid(rows, columns=shown), request.out_plot)
    if not request.quiet:
        print(
            f"wrote {out}: {request.num} velocity fields, {request.sampling.build().label} with {result.function_evaluations} network "
            f"evaluations; {clipped} of {velocity[:, :1].numel()} speeds clipped at decode"
        )
    return velocity


def forecast_flows(request: SampleRequest, model: DiffusionModel, generator: torch.Generator, out: Path) -> Tensor:
    """``sample --context FILE.npz --rollout K`` for forecasting models: --num rollouts of K frames after the first F
    frames of the file. Writes ``forecast`` (num, K, 2, N, N), ``context`` (F, 2, N, N) and, when the file holds
    frames after the context, ``truth`` and the relative L2 error per forecast frame. Returns the forecasts."""
    from ..metrics.flows import forecast_error

    frames = model.config.context_frames
    if request.context is None:
        raise UserError(
            f"{request.checkpoint} forecasts from {frames} previous frames; pass --context FILE.npz with at least "
            f"{frames} frames (e.g. a trajectory file of 'flows generate')"
        )
    sequence = open_flow_source(str(request.context), split="all").trajectory(0)
    if sequence.shape[0] < frames or sequence.shape[-1] != model.config.image_size:
        raise UserError(
            f"{request.context}: holds {sequence.shape[0]} frame(s) of {sequence.shape[-1]} px; this model needs at least "
            f"{frames} frames of {model.config.image_size} px"
        )
    context, truth = sequence[:frames], sequence[frames : frames + request.rollout]
    forecast = model.rollout(
        context[None].expand(request.num, -1, -1, -1, -1),
        request.rollout,
        guidance=request.guidance,
        **request.sampling.arguments(),
        generator=generator,
        batch_size=request.batch_size,
    ).cpu()
    arrays = {"forecast": forecast.numpy(), "context": context.numpy()}
    errors = forecast_error(forecast, truth) if truth.shape[0] else []
    if errors:
        arrays.update(truth=truth.numpy(), relative_error=np.asarray(errors, dtype=np.float64))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(out, arrays)
    if request.out_plot is not None:
        rows = {"forecast": forecast[0]} if not errors else {"truth": truth, "forecast": forecast[0, : truth.shape[0]]}
        save_image_atomic(flow_field_grid(rows, columns=min(4, rows["forecast"].shape[0])), request.out_plot)
    if not request.quiet:
        scored = f"; relative L2 error per frame {', '.join(f'{e:.3f}' for e in errors)}" if errors else ""
        print(
            f"wrote {out}: {request.num} rollout(s) of {request.rollout} frame(s) after {frames} context frames{scored}"
        )
    return forecast


def sample_angles(
    request: SampleRequest, model: DiffusionModel, generator: torch.Generator, guided: Guided
) -> np.ndarray:
    """``sample`` for angle models: the angles to --out (.csv or .npy) in the training data's units (degrees if the
    run was trained with --degrees, else radians), and --out-plot, the training data beside the samples."""
    out = check_non_image_sample_options(request, "an angle model", (".csv", ".npy"))
    data = model.run_config.data if model.run_config is not None else None
    degrees = data.degrees if data is not None else False
    real: np.ndarray | None = None
    if request.out_plot is not None and data is not None and is_angle_spec(data.source):
        # Opened before sampling, so that a moved training file fails fast.
        real = radians_to_user_units(open_source(data).fixed_batch(request.num, seed=request.seed), degrees=degrees)
    result = model.sample(
        request.num,
        **request.sampling.arguments(),
        generator=generator,
        batch_size=request.batch_size,
        **guided,
    )
    angles, _ = model.decode(result.states)
    written = save_angles(out, angles, degrees=degrees)
    unit = "degrees" if degrees else "radians"
    if request.out_plot is not None:
        dims = written.shape[1]
        panels = {"training data": real, "generated": written} if real is not None else {"generated": written}
        shown = "" if dims <= 2 else f" (angles 1 and 2 of {dims})"
        process = (
            f"Kuramoto {model.process.config.coupling}" if isinstance(model.process, KuramotoProcess) else "Euclidean"
        )
        title = f"{process} model, {request.sampling.build().label} sampler, {result.function_evaluations} network evaluations{shown}"
        save_image_atomic(angle_density_plot(panels, degrees=degrees, title=title), request.out_plot)
    if not request.quiet:
        plot = f" and {request.out_plot}" if request.out_plot is not None else ""
        print(
            f"wrote {out}{plot}: {request.num} samples of {written.shape[1]} angle(s) in {unit}, {request.sampling.build().label} with "
            f"{result.function_evaluations} network evaluations"
        )
    return written


def save_trajectory_animation(model: DiffusionModel, result, path: Path, max_images: int = 16) -> None:  # noqa: ANN001
    """A GIF of the reverse process, each frame a sample grid beside R(t) up to that frame."""
    assert result.trajectory is not None
    T = model.process.steps
    times = [s / T for s in result.steps]
    plots = order_parameter_frames(
        times, [float(r) for r in result.order_parameter], [f"t = {step}" for step in result.steps]
    )
    frames = []
    for states, plot in zip(result.trajectory, plots, strict=True):
        images, _ = model.decode(states[:max_images])
        frames.append(labelled_rows([("samples", image_grid(images, upscale=2)), ("R(t)", plot)], label_width=60))
    frames += [frames[-1]] * 10  # hold the final frame
    save_animation(frames, path)
