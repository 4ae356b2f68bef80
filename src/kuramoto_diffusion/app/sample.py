"""``kuramoto-diffusion sample``: a grid PNG, single PNGs, .npy and a trajectory GIF for image models; angles
for angle models; velocity fields or forecasts for flow models. Inpainting and SDEdit-style editing;
under torchrun, plain sampling into a resumable folder split over the processes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..data import open_image_source
from ..data.angles import save_array_atomic
from ..data.image_io import read_image, read_image_for_model, read_mask_for_model, uint8_batch_to_tensor
from ..errors import UserError
from ..model import DiffusionModel
from ..runtime import DistributedContext, init_distributed, launched_by_torchrun, shutdown_distributed
from ..stopping import Stopped
from ..viz.images import (
    image_grid,
    save_image_atomic,
)
from .limits import MAX_BATCH_VALUES, MAX_HELD_VALUES, check_values, values_per_example
from .sample_clipping import UNDERTRAINED_CLIPPED_FRACTION as UNDERTRAINED_CLIPPED_FRACTION  # re-exported
from .sample_clipping import clipped_reason as clipped_reason  # re-exported
from .sample_clipping import clipped_summary, warn_if_undertrained, with_clip_denoised
from .sample_folder import image_path, sample_to_folder
from .sample_outputs import sample_angles, sample_flows, save_trajectory_animation
from .sample_request import Guided, SampleRequest
from .sample_request import SamplerOptions as SamplerOptions  # re-exported


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
            **request.sampling.arguments(),
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
            **request.sampling.arguments(),
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
            **request.sampling.arguments(),
            generator=generator,
            batch_size=request.batch_size,
            record_trajectory=record,
            **guided,
        )
    else:
        result = model.sample(
            request.num,
            **request.sampling.arguments(),
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
