"""``kuramoto-diffusion sample``: a grid PNG, single PNGs, .npy and a trajectory GIF for image models; angles
for angle models; velocity fields or forecasts for flow models. Inpainting and SDEdit-style editing;
under torchrun, plain sampling into a resumable folder split over the processes.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor

from ..config import DEFAULT_MAX_IMAGE_PIXELS
from ..data import is_angle_spec, open_flow_source, open_image_source, open_source, save_angles
from ..data.angles import radians_to_user_units, save_array_atomic
from ..data.flow_generation import save_npz_atomic
from ..data.image_io import read_image, read_image_for_model, read_mask_for_model, uint8_batch_to_tensor
from ..errors import UserError
from ..model import DiffusionModel
from ..processes import KuramotoConfig, KuramotoProcess
from ..runtime import DistributedContext, init_distributed, launched_by_torchrun, shutdown_distributed
from ..sampling import Sampler
from ..sampling.steps import REVERSE_STEPS, corrected_sampler
from ..stopping import Stopped
from ..viz.flows import flow_field_grid
from ..viz.images import (
    angle_density_plot,
    image_grid,
    labelled_rows,
    order_parameter_plot,
    save_animation,
    save_image_atomic,
)
from .limits import MAX_BATCH_VALUES, MAX_HELD_VALUES, check_values, values_per_example
from .sample_folder import image_path, sample_to_folder


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


# Above this share of decoded values clipped, samples are mostly out of the data's range: the model is most
# likely undertrained (a trained image model clips well under 1 %; a 600-step tiny run about 0.1 %).
UNDERTRAINED_CLIPPED_FRACTION = 0.03


class Guided(TypedDict):
    """The class guidance of a sample call (``DiffusionModel.sample``'s keywords)."""

    class_labels: Tensor | None
    guidance: float


def clipped_reason(model: DiffusionModel) -> str:
    """Why an image model's decoded values get clipped, by process: phases outside ±a·π for Kuramoto (through the
    seam at ±π or into the gap between ±a·π and ±π); values outside [-1, 1] for the Euclidean baseline (no seam)."""
    process = model.config.process
    if isinstance(process, KuramotoConfig):  # the periodic image models
        return f"phases outside ±{process.phase_range / np.pi:.2g}π: crossed the seam or left the data's range"
    return "values outside [-1, 1]"


def clipped_summary(model: DiffusionModel, clipped: int, total: int) -> str:
    """'N of M values (p %) clipped at decode (why)' for the final message of sample."""
    return f"{clipped} of {total} values ({100 * clipped / max(total, 1):.2f} %) clipped at decode ({clipped_reason(model)})"


def warn_if_undertrained(fraction: float, checkpoint: object) -> None:
    """One warning line when more than ``UNDERTRAINED_CLIPPED_FRACTION`` of decoded values were clipped."""
    if fraction > UNDERTRAINED_CLIPPED_FRACTION:
        warnings.warn(
            f"{100 * fraction:.1f} % of decoded values were clipped: {checkpoint} is probably undertrained "
            "(train longer; a trained model clips under 1 %)",
            stacklevel=2,
        )


def with_clip_denoised(model: DiffusionModel, clip: bool) -> DiffusionModel:
    """The model with the Euclidean baseline's x₀ clipping switched on (``--clip-denoised``)."""
    if not clip:
        return model
    if model.config.process.kind != "euclidean":
        raise UserError("--clip-denoised is for Euclidean models; Kuramoto states are phases and need no clipping")
    return model.with_process(dataclasses.replace(model.config.process, clip_denoised=True))


def check_sample_sizes(request: SampleRequest, model: DiffusionModel) -> None:
    """Refuse a --batch-size, or a --num held in memory (all but plain sampling into --out-dir), beyond the caps."""
    per_example = values_per_example(model.config.channels, model.config.image_size)
    check_values(
        min(request.batch_size, request.num) * per_example,
        MAX_BATCH_VALUES,
        f"--batch-size {request.batch_size} examples of {per_example:,} values",
        "lower --batch-size",
    )
    held_examples = request.num * (request.rollout if model.config.context_frames else 1)
    plain_folder = (
        request.out_dir is not None
        and request.inpaint is None
        and request.from_data is None
        and request.save_trajectory is None
        and request.out_npy is None
    )
    if not plain_folder:
        check_values(
            held_examples * per_example,
            MAX_HELD_VALUES,
            f"--num {request.num}{f' × --rollout {request.rollout}' if model.config.context_frames else ''} examples "
            f"of {per_example:,} values held in memory",
            "lower --num, or write images in chunks with --out-dir DIR (image models)",
        )


MANIFEST_NAME = "sample-manifest.json"


def folder_manifest(request: SampleRequest, model: DiffusionModel, plain: bool) -> dict[str, object]:
    """What makes the images of ``sample --out-dir``: the model (its config and weights, hashed), the seed, the
    sampler and the other settings an image depends on. Not --num (a rerun may ask for more images of the same run)."""
    import hashlib
    import json

    from ..serialization import config_to_dict

    digest = hashlib.sha256(json.dumps(config_to_dict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    settings: dict[str, object] = {
        "seed": request.seed,
        "batch_size": request.batch_size,
        "class": request.class_name,
        "guidance": request.guidance,
        "clip_denoised": request.clip_denoised,
        "no_ema": request.no_ema,
        **dataclasses.asdict(request.sampling),
    }
    if not plain:
        settings.update(
            inpaint=None if request.inpaint is None else str(request.inpaint),
            mask=None if request.mask is None else str(request.mask),
            invert_mask=request.invert_mask,
            resample=request.resample,
            from_data=request.from_data,
            start_step=request.start_step,
        )
    checkpoint = model.checkpoint_path or request.checkpoint
    return {"checkpoint": str(Path(checkpoint).resolve()), "weights_sha256": digest.hexdigest(), "settings": settings}


def claim_out_dir(request: SampleRequest, model: DiffusionModel, plain: bool, context: DistributedContext) -> None:
    """Write --out-dir's manifest, or check that the one there matches: images of another model, seed, sampler or
    NFE are never mixed into a folder (nor kept as if they were this run's). Rank 0 writes; every process checks."""
    from ..serialization import read_json, write_json_atomic

    folder = request.out_dir
    assert folder is not None
    manifest = folder_manifest(request, model, plain)
    path = folder / MANIFEST_NAME
    fresh = f"pass a new --out-dir, or delete {folder} to start it afresh"
    has_images = folder.is_dir() and any(folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"))
    if context.is_main and (not path.exists() or not has_images):  # no images yet: nothing to mix, (re)claim it
        if has_images:
            raise UserError(f"{folder}: holds numbered images but no {MANIFEST_NAME} saying what made them; {fresh}")
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, manifest)
    context.barrier()
    try:
        saved = read_json(path)
    except UserError:
        raise UserError(f"{path}: unreadable manifest; {fresh}") from None
    if saved == manifest:
        return
    if not isinstance(saved, dict):
        saved = {}
    differ = []
    if saved.get("weights_sha256") != manifest["weights_sha256"]:
        differ.append(f"another model ({saved.get('checkpoint', '?')})")
    old_settings = saved.get("settings")
    old = old_settings if isinstance(old_settings, dict) else {}
    new = manifest["settings"]
    assert isinstance(new, dict)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            differ.append(f"--{key.replace('_', '-')} {old.get(key)} (now {new.get(key)})")
    if not differ:  # only the checkpoint's path changed: same weights and settings, the same images
        return
    raise UserError(f"{folder}: its images were made with {', '.join(differ)}; {fresh}")


def sample_into_folder(
    request: SampleRequest,
    model: DiffusionModel,
    class_labels: torch.Tensor | None,
    out: Path,
    context: DistributedContext,
    out_dir: Path,
) -> None:
    """``sample --out-dir``: numbered PNGs in ``out_dir`` (``request.out_dir``) in resumable chunks, split over torchrun
    processes; a grid of the first."""
    try:
        written, present, clipped = sample_to_folder(
            model,
            out_dir,
            request.num,
            chunk_size=request.batch_size,
            seed=request.seed,
            sampler=request.sampling.build(),
            nfe=request.sampling.nfe,
            class_labels=class_labels,
            guidance=request.guidance,
            context=context,
            quiet=request.quiet or not context.is_main,
        )
    except Stopped as stop:
        rank = f"process {context.rank}: " if context.distributed else ""
        raise Stopped(
            stop.signal_number, f"{rank}{stop}; run the same command again to continue (complete images are skipped)"
        ) from None
    if context.is_main:
        total = written * model.config.channels * model.config.image_size**2
        if total:
            warn_if_undertrained(clipped / total, request.checkpoint)
        first = [image_path(out_dir, index) for index in range(min(request.num, 64))]
        grid = uint8_batch_to_tensor(np.stack([read_image(path) for path in first]))
        save_image_atomic(image_grid(grid, upscale=2), out)
        if not request.quiet:
            print(
                f"wrote {written} images to {out_dir} ({present} were there already) and a grid of the first "
                f"{len(first)} to {out}; in the new images {clipped_summary(model, clipped, total)}"
            )


def sample(request: SampleRequest) -> None:
    """Sample as ``request`` says: grid PNG, optional single PNGs, .npy and trajectory GIF (angle models: see
    ``sample_angles``; flow models ``sample_flows``); under torchrun, plain sampling into ``out_dir`` split over
    the processes."""
    if launched_by_torchrun() and (
        request.out_dir is None
        or request.inpaint is not None
        or request.from_data is not None
        or request.save_trajectory
    ):
        raise UserError(
            "under torchrun, sample splits plain sampling into --out-dir DIR --num N; pass --out-dir "
            "and leave out --inpaint, --from-data and --save-trajectory"
        )
    context, device = init_distributed(request.device)
    try:
        _sample(request, context, device)
    finally:
        shutdown_distributed()


def _sample(request: SampleRequest, context: DistributedContext, device: torch.device) -> None:
    model = with_clip_denoised(
        DiffusionModel.from_pretrained(request.checkpoint, use_ema=not request.no_ema, device=device),
        request.clip_denoised,
    )
    generator = torch.Generator().manual_seed(request.seed)
    record = request.save_trajectory is not None
    channels, size = model.config.channels, model.config.image_size
    if (request.inpaint is None) != (request.mask is None):
        raise UserError("--inpaint and --mask go together: the image to fill and its mask (white = fill, black = keep)")
    if request.invert_mask and request.mask is None:
        raise UserError("--invert-mask needs --mask (it swaps which of its colours is filled)")
    if request.inpaint is not None and request.from_data is not None:
        raise UserError("choose one of --inpaint (fill a masked region) and --from-data (edit whole images)")
    if request.start_step is not None and request.from_data is None:
        raise UserError("--start-step needs --from-data (the images to start from)")
    if request.resample != 1 and request.inpaint is None:
        raise UserError("--resample applies to --inpaint only")
    check_sample_sizes(request, model)
    class_labels = model.class_labels(request.class_name, request.num) if request.class_name is not None else None
    guided = Guided(class_labels=class_labels, guidance=request.guidance)
    if model.config.data_kind == "angle":
        sample_angles(request, model, generator, guided)
        return
    if model.config.data_kind == "flow":
        sample_flows(request, model, generator)
        return
    if request.out_plot is not None:
        raise UserError("--out-plot draws angle data; this is an image model, whose samples go to the --out grid PNG")
    if request.out_npy is not None and request.out_npy.suffix.lower() != ".npy":
        raise UserError(f"{request.out_npy}: --out-npy writes a NumPy .npy file; name it e.g. samples.npy")
    out = request.out if request.out is not None else Path("samples.png")
    plain = request.inpaint is None and request.from_data is None and not record and request.out_npy is None
    if request.out_dir is not None:
        claim_out_dir(request, model, plain, context)
    if request.out_dir is not None and plain:
        sample_into_folder(request, model, class_labels, out, context, request.out_dir)
        return
    shown: torch.Tensor | None = None  # the input shown first in the grid
    if request.inpaint is not None and request.mask is not None:  # given together (checked above)
        image, dims = read_image_for_model(request.inpaint, size, channels, request.max_image_pixels)
        mask = read_mask_for_model(request.mask, size, request.inpaint, dims, request.max_image_pixels)
        if request.invert_mask:
            mask = 1 - mask
        shown = torch.where(mask == 0, image, -1.0)
        result = model.inpaint(
            image.expand(request.num, -1, -1, -1),
            mask,
            sampler=request.sampling.build(),
            nfe=request.sampling.nfe,
            resample=request.resample,
            generator=generator,
            batch_size=request.batch_size,
            record_trajectory=record,
            **guided,
        )
    elif request.from_data is not None:
        start = request.start_step if request.start_step is not None else model.process.steps // 2
        if not 1 <= start <= model.process.steps:
            raise UserError(f"--start-step must be in 1…{model.process.steps} (the model's T), got {start}")
        if Path(request.from_data).is_file():
            image, _ = read_image_for_model(request.from_data, size, channels, request.max_image_pixels)
            real = image.expand(request.num, -1, -1, -1)
            shown = image
        else:
            source = open_image_source(
                request.from_data,
                size,
                channels=channels,
                split="all",
                seed=request.seed,
                on_bad_image=request.on_bad_image,
                max_image_pixels=request.max_image_pixels,
            )
            real = source.fixed_batch(request.num, seed=request.seed)
        result = model.forward_then_reverse(
            real,
            start,
            sampler=request.sampling.build(),
            nfe=request.sampling.nfe,
            generator=generator,
            batch_size=request.batch_size,
            record_trajectory=record,
            **guided,
        )
    else:
        result = model.sample(
            request.num,
            sampler=request.sampling.build(),
            nfe=request.sampling.nfe,
            generator=generator,
            batch_size=request.batch_size,
            record_trajectory=record,
            **guided,
        )
    images, clipped = model.decode(result.states)
    grid = images if shown is None else torch.cat([shown.to(images.device), images])
    save_image_atomic(image_grid(grid, upscale=2), out)
    if request.out_npy is not None:
        save_array_atomic(request.out_npy, images.detach().cpu().numpy().astype(np.float32))
    if request.out_dir is not None:
        request.out_dir.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            save_image_atomic(image_grid(image[None], padding=0), request.out_dir / f"{index:06d}.png")
    if request.save_trajectory is not None:  # record
        save_trajectory_animation(model, result, request.save_trajectory)
    warn_if_undertrained(clipped / images.numel(), request.checkpoint)
    if not request.quiet:
        named = {
            request.out_npy: "the images as an array",
            request.out_dir: "one PNG per image",
            request.save_trajectory: "the reverse process, animated",
        }
        also = "".join(f", {path} ({what})" for path, what in named.items() if path is not None)
        print(
            f"wrote {out}{also}: {request.num} images, {request.sampling.build().label} with "
            f"{result.function_evaluations} network evaluations; {clipped_summary(model, clipped, images.numel())}"
        )


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
        sampler=request.sampling.build(),
        nfe=request.sampling.nfe,
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
        sampler=request.sampling.build(),
        nfe=request.sampling.nfe,
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
        sampler=request.sampling.build(),
        nfe=request.sampling.nfe,
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
    frames = []
    for index, states in enumerate(result.trajectory):
        images, _ = model.decode(states[:max_images])
        plot = order_parameter_plot(
            {"generation": (times[: index + 1], result.order_parameter[: index + 1])}, f"t = {result.steps[index]}"
        )
        frames.append(labelled_rows([("samples", image_grid(images, upscale=2)), ("R(t)", plot)], label_width=60))
    frames += [frames[-1]] * 10  # hold the final frame
    save_animation(frames, path)
