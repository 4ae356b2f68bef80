"""What the CLI commands do, as plain functions (the CLI only parses arguments and calls these)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import latest_checkpoint, list_checkpoints
from ..serialization import config_to_dict, read_json, write_json_atomic
from ..data import DATA_CHOICES, is_angle_spec, is_flow_spec, open_angle_source, open_flow_source, open_image_source, save_angles
from ..data.angles import radians_to_user_units, save_array_atomic
from ..data.flow_generation import save_npz_atomic
from ..data.images import read_image, read_image_for_model, read_mask_for_model, uint8_batch_to_tensor
from ..errors import UserError
from ..nets import count_parameters
from ..model import CONFIG_NAME, DiffusionModel, load_run_config
from ..processes import EuclideanConfig, KuramotoConfig, KuramotoProcess, PhaseAmplitudeConfig, ProcessConfig, build_process
from ..config import (
    DataConfig,
    FlowNormalisation,
    RunConfig,
    TrainConfig,
    angle_model_config,
    flow_model_config,
    image_model_config,
)
from ..training import Trainer, resolve_device
from .sample_folder import image_path, sample_to_folder
from ..sampling.sweep import Sampler
from ..stopping import Stopped
from ..training.distributed import DistributedContext, init_distributed, launched_by_torchrun, shutdown_distributed
from ..viz.flows import flow_field_grid
from ..viz.images import (
    angle_density_plot,
    forward_figure,
    image_grid,
    labelled_rows,
    order_parameter_plot,
    save_animation,
    save_image_atomic,
)


def process_config(
    name: str, *, steps: int, schedule: str, neighbourhood: int, padding: str, phase_range: float | None = None
) -> ProcessConfig:
    """The process a CLI name (kuramoto-local, kuramoto-global, euclidean, phase-amplitude) stands for;
    ``phase_range`` in units of π (Kuramoto image encoding, default the paper's 0.9)."""
    if phase_range is not None and name not in ("kuramoto-local", "kuramoto-global"):
        raise UserError(f"--phase-range sets the image encoding of the Kuramoto processes; --process {name} has none")
    if name == "euclidean":
        return EuclideanConfig(steps=steps)
    if name == "phase-amplitude":
        return PhaseAmplitudeConfig(steps=steps, schedule=schedule, neighbourhood=neighbourhood)
    if name not in ("kuramoto-local", "kuramoto-global"):
        raise UserError(f"unknown process {name!r}; valid values are kuramoto-local, kuramoto-global, euclidean, phase-amplitude")
    coupling = name.split("-", 1)[1]
    extra = {} if phase_range is None else {"phase_range": phase_range * math.pi}
    return KuramotoConfig(coupling=coupling, steps=steps, schedule=schedule, neighbourhood=neighbourhood, padding=padding,
                          **extra)


def forward_picture(
    *, data: str, image_size: int, num: int, frames: int, out: Path, steps: int = 100, schedule: str = "linear",
    neighbourhood: int = 5, padding: str = "reflect", seed: int = 0, on_bad_image: str = "error",
) -> Path:
    """Strips of ``num`` images through Kuramoto global, local and Euclidean diffusion, plus R(t), to ``out``."""
    source = open_image_source(data, image_size, split="all", seed=seed, on_bad_image=on_bad_image)
    images = source.fixed_batch(num, seed=seed)
    order_batch = source.fixed_batch(32, seed=seed + 1)
    processes = {
        name: build_process(process_config(name, steps=steps, schedule=schedule, neighbourhood=neighbourhood, padding=padding))
        for name in ("kuramoto-global", "kuramoto-local", "euclidean")
    }
    picture = forward_figure(processes, images, frames=frames, generator_seed=seed, order_batch=order_batch)
    save_image_atomic(picture, out)
    return out


def open_training_data(data: DataConfig, split: str = "train"):  # noqa: ANN201 - an ImageSource, AngleSource or FlowSource
    if is_flow_spec(data.source):
        return open_flow_source(data.source, split=split, val_fraction=data.val_fraction, seed=data.seed)
    if is_angle_spec(data.source):
        return open_angle_source(data.source, degrees=data.degrees, split=split, val_fraction=data.val_fraction, seed=data.seed)
    return open_image_source(
        data.source, data.image_size, channels=data.channels, split=split, val_fraction=data.val_fraction,
        seed=data.seed, flip=data.flip, on_bad_image=data.on_bad_image, classes=data.classes, lazy=data.lazy,
    )


def train_command(args: argparse.Namespace) -> DiffusionModel:
    """``kuramoto-diffusion train``: fresh run, fine-tuning (--init-from) or --resume; data-parallel under torchrun."""
    context, device = init_distributed(args.device)
    if not context.is_main:
        args = argparse.Namespace(**{**vars(args), "quiet": True})  # rank 0 alone talks
    try:
        return _train(args, context, device)
    finally:
        shutdown_distributed()


def _train(args: argparse.Namespace, context: DistributedContext, device: torch.device) -> DiffusionModel:
    if args.resume:
        checkpoint = latest_checkpoint(args.out)
        if checkpoint is None:
            raise UserError(f"{args.out}: no complete checkpoint to resume from; run without --resume to start")
        _, saved = load_run_config(checkpoint / CONFIG_NAME)
        if saved is None or saved.data is None:
            raise UserError(f"{checkpoint / CONFIG_NAME}: has no data settings; it cannot be resumed")
        if args.data is not None and args.data != saved.data.source:
            raise UserError(
                f"{args.out} was trained on {saved.data.source!r}, not {args.data!r}; drop --data when resuming "
                "(or start a new run with --init-from to fine-tune on other data)"
            )
        source = open_training_data(saved.data)
        trainer = Trainer.resume(args.out, source, train_steps=args.train_steps, device=device, quiet=args.quiet,
                                 context=context, grad_accum=args.grad_accum)
        if trainer.step >= args.train_steps and not args.quiet:
            print(f"{args.out} is already at step {trainer.step} ≥ --train-steps {args.train_steps}; nothing to do")
    else:
        channels = None if args.channels == "auto" else int(args.channels)
        data_spec = args.data if args.data is not None else "textures"
        angles, flows = is_angle_spec(data_spec), is_flow_spec(data_spec)
        process_name = args.process or ("kuramoto-global" if angles else "phase-amplitude" if flows else "kuramoto-local")
        check_process_fits_data(process_name, angles=angles, flows=flows)
        # M = 4 is SPEC §7's neighbourhood for flows; images default to 5.
        neighbourhood = args.neighbourhood if args.neighbourhood is not None else 4 if flows else 5
        if args.context_frames and not flows:
            raise UserError("--context-frames (forecasting) needs flow data: --data flows:PATH")
        if args.flow_networks is not None and not flows:
            raise UserError("--flow-networks is for flow models (--data flows:PATH)")
        if args.flow_networks == "split" and process_name != "phase-amplitude":
            raise UserError("--flow-networks split is for phase-amplitude flow models; the euclidean baseline has one network")
        if flows:
            if args.classes:
                raise UserError("--classes needs a folder of images with one subfolder per class; flow data has no classes")
            source = open_flow_source(data_spec, split="train", seed=args.seed)
            if args.context_frames >= min(source.frame_counts):
                raise UserError(
                    f"{data_spec}: --context-frames {args.context_frames} needs trajectories of at least "
                    f"{args.context_frames + 1} frames, and the shortest has {min(source.frame_counts)}; use fewer context frames"
                )
            data = DataConfig(source=data_spec, image_size=source.size, channels=2, flip=False, seed=args.seed)
        elif angles:
            check_angle_training_options(process_name, args.classes)
            source = open_angle_source(data_spec, degrees=args.degrees, split="train", seed=args.seed)
            data = DataConfig(source=data_spec, image_size=0, channels=source.dims, seed=args.seed, degrees=args.degrees)
        else:
            source = open_image_source(
                data_spec, args.image_size, channels=channels, split="train", seed=args.seed, on_bad_image=args.on_bad_image,
                classes=args.classes, lazy=args.lazy,
            )
            data = DataConfig(source=data_spec, image_size=args.image_size, channels=source.channels, seed=args.seed,
                              on_bad_image=args.on_bad_image, classes=args.classes, degrees=args.degrees, lazy=args.lazy)
        class_names = source.class_names if args.classes else ()
        training = TrainConfig(
            train_steps=args.train_steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
            precision=args.precision, compile=args.compile, draws=args.draws,
            objective=args.objective, window=args.window, anchor=args.anchor,
            forward_states=args.forward_states, pool_size=args.pool_size, pool_advance=args.pool_advance, lr=args.lr, ema_decay=args.ema_decay, fit_prior=not args.no_fit_prior,
            checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
            sample_every=args.sample_every, seed=args.seed, on_nonfinite=args.on_nan, class_dropout=args.class_dropout,
        )
        pretrained = DiffusionModel.from_pretrained(args.init_from) if args.init_from else None
        if pretrained is not None:
            model_config = pretrained.config
            if model_config.class_names != class_names:
                raise UserError(
                    f"{args.init_from}: the model's classes ({', '.join(model_config.class_names) or 'none'}) differ from the "
                    f"data's ({', '.join(class_names) or 'none'}); fine-tune on data with the same classes"
                )
            if angles and (model_config.data_kind, model_config.channels) != ("angle", source.dims):
                raise UserError(
                    f"{args.init_from}: the model takes {model_config.channels} {model_config.data_kind} channel(s) but the "
                    f"data has {source.dims} angle(s) per row; fine-tune an angle model of the same number of angles"
                )
            if flows and (model_config.data_kind, model_config.image_size, model_config.context_frames) != (
                "flow", source.size, args.context_frames
            ):
                raise UserError(
                    f"{args.init_from}: the model takes {model_config.data_kind} data at {model_config.image_size} px with "
                    f"{model_config.context_frames} context frame(s) but the data is flows at {source.size} px and "
                    f"--context-frames is {args.context_frames}; fine-tune a flow model of the same size and context"
                )
            if not angles and not flows and (model_config.channels != source.channels or model_config.image_size != args.image_size):
                raise UserError(
                    f"{args.init_from}: the model takes {model_config.channels} channel(s) at {model_config.image_size} px but "
                    f"the data has {source.channels} at {args.image_size} px; match --channels and --image-size"
                )
            training = dataclasses.replace(training, fit_prior=False)  # the pretrained model brings its prior
        else:
            if args.phase_range is not None and (angles or flows):
                raise UserError("--phase-range sets how images become phases; angle and flow data are phases already")
            process = process_config(
                process_name, steps=args.steps, schedule=args.schedule, neighbourhood=neighbourhood, padding=args.padding,
                phase_range=args.phase_range,
            )
            if flows:
                normalisation = FlowNormalisation.measure(source.sample_batch(512, torch.Generator().manual_seed(args.seed)))
                model_config = flow_model_config(process, source.size, normalisation, args.preset,
                                                 context_frames=args.context_frames, networks=args.flow_networks)
            elif angles:
                model_config = angle_model_config(process, source.dims, args.preset)
            else:
                # --padding circular makes the whole model periodic in space (coupling and network), so that
                # samples tile seamlessly; otherwise the network pads with zeros.
                padding_mode = "circular" if args.padding == "circular" else "zeros"
                model_config = image_model_config(
                    process, source.channels, args.image_size, args.preset, class_names=class_names,
                    padding_mode=padding_mode,
                )
        run_config = RunConfig(model=model_config, data=data, training=training)
        trainer = Trainer(run_config, source, args.out, device=device, quiet=args.quiet, context=context)
        if pretrained is not None:
            trainer.initialise_from(pretrained)
        trainer.start()
        report = trainer.prior_report
        if report is not None and not args.quiet:
            gaps = ", ".join(f"{gap:.3f}" for gap in report.moment_gaps)
            print(
                f"prior: von Mises κ = {report.concentration:.3f} fitted to simulated t = T states "
                f"(mean direction {report.mean_direction:+.3f} rad, moment gaps {gaps})"
            )
    try:
        model = trainer.train()
    except Stopped as stop:
        hint = f"; continue with: kuramoto-diffusion train --out {args.out} --resume" if context.is_main else ""
        raise Stopped(stop.signal_number, f"{stop}{hint}" if context.is_main else "") from None
    if not args.quiet:
        print(f"trained to step {trainer.step}; checkpoints in {args.out / 'checkpoints'}")
        example = {"angle": "samples.csv", "flow": "samples.npz"}.get(trainer.config.model.data_kind, "samples.png")
        print(f"sample with: kuramoto-diffusion sample --checkpoint {args.out} --num 16 --out {example}")
    return model


def check_process_fits_data(process_name: str, *, angles: bool, flows: bool) -> None:
    """The phase-amplitude process is for flows, and flows take it or the Euclidean baseline."""
    if flows and process_name not in ("phase-amplitude", "euclidean"):
        raise UserError(f"--process {process_name} does not model flows; use phase-amplitude (default) or euclidean")
    if not flows and process_name == "phase-amplitude":
        raise UserError("--process phase-amplitude models flows; pass --data flows:PATH (see 'kuramoto-diffusion flows generate')")


def check_angle_training_options(process_name: str, classes: bool) -> None:
    """Options that need images: local coupling (a spatial grid of neighbours) and classes (subfolders)."""
    if process_name == "kuramoto-local":
        raise UserError(
            "--process kuramoto-local couples neighbouring pixels and needs images; angle data has no spatial grid: "
            "use --process kuramoto-global (or euclidean)"
        )
    if classes:
        raise UserError("--classes needs a folder of images with one subfolder per class; angle data has no classes")


def sampler_from_args(args: argparse.Namespace) -> Sampler:
    """The Sampler of --sampler, --grid, --rho, --corrector-steps and --snr (sde with corrector options is pc)."""
    corrector = args.corrector_steps is not None or args.snr is not None
    name = "pc" if corrector and args.sampler == "sde" else args.sampler
    if corrector and name != "pc":
        raise UserError(f"--corrector-steps and --snr are for --sampler pc (or sde); the {name} sampler has no corrector")
    if args.rho != 7.0 and args.grid != "rho":
        raise UserError("--rho sets the exponent of --grid rho; add --grid rho or leave --rho out")
    return Sampler(name, grid=args.grid, rho=args.rho, corrector_steps=args.corrector_steps, snr=args.snr)


def with_clip_denoised(model: DiffusionModel, clip: bool) -> DiffusionModel:
    """The model with the Euclidean baseline's x₀ clipping switched on (``--clip-denoised``)."""
    if not clip:
        return model
    if model.config.process.kind != "euclidean":
        raise UserError("--clip-denoised is for Euclidean models; Kuramoto states are phases and need no clipping")
    return model.with_process(dataclasses.replace(model.config.process, clip_denoised=True))


def sample_folder_command(
    args: argparse.Namespace, model: DiffusionModel, class_labels: torch.Tensor | None, out: Path, context: DistributedContext
) -> None:
    """``sample --out-dir``: numbered PNGs in resumable chunks, split over torchrun processes; a grid of the first."""
    try:
        written, present, clipped = sample_to_folder(
            model, args.out_dir, args.num, chunk_size=args.batch_size, seed=args.seed, sampler=sampler_from_args(args), nfe=args.nfe,
            class_labels=class_labels, guidance=args.guidance, context=context, quiet=args.quiet or not context.is_main,
        )
    except Stopped as stop:
        rank = f"process {context.rank}: " if context.distributed else ""
        raise Stopped(stop.signal_number, f"{rank}{stop}; run the same command again to continue (complete "
                      "images are skipped)") from None
    if context.is_main:
        first = [image_path(args.out_dir, index) for index in range(min(args.num, 64))]
        grid = uint8_batch_to_tensor(np.stack([read_image(path) for path in first]))
        save_image_atomic(image_grid(grid, upscale=2), out)
        if not args.quiet:
            print(f"wrote {written} images to {args.out_dir} ({present} were there already) and a grid of the first "
                  f"{len(first)} to {out}; {clipped} values clipped at decode (mass that crossed the seam)")


def sample_command(args: argparse.Namespace) -> None:
    """``kuramoto-diffusion sample``: grid PNG, optional single PNGs, .npy and trajectory GIF (angle models: see
    ``sample_angles``); under torchrun, plain sampling into --out-dir split over the processes."""
    if launched_by_torchrun() and (
        args.out_dir is None or args.inpaint is not None or args.from_data is not None or args.save_trajectory
    ):
        raise UserError("under torchrun, sample splits plain sampling into --out-dir DIR --num N; pass --out-dir "
                        "and leave out --inpaint, --from-data and --save-trajectory")
    context, device = init_distributed(args.device)
    try:
        _sample(args, context, device)
    finally:
        shutdown_distributed()


def _sample(args: argparse.Namespace, context: DistributedContext, device: torch.device) -> None:
    model = with_clip_denoised(
        DiffusionModel.from_pretrained(args.checkpoint, use_ema=not args.no_ema, device=device), args.clip_denoised
    )
    generator = torch.Generator().manual_seed(args.seed)
    record = args.save_trajectory is not None
    channels, size = model.config.channels, model.config.image_size
    if (args.inpaint is None) != (args.mask is None):
        raise UserError("--inpaint and --mask go together: the image to fill and its mask (white = fill, black = keep)")
    if args.invert_mask and args.mask is None:
        raise UserError("--invert-mask needs --mask (it swaps which of its colours is filled)")
    if args.inpaint is not None and args.from_data is not None:
        raise UserError("choose one of --inpaint (fill a masked region) and --from-data (edit whole images)")
    if args.start_step is not None and args.from_data is None:
        raise UserError("--start-step needs --from-data (the images to start from)")
    if args.resample != 1 and args.inpaint is None:
        raise UserError("--resample applies to --inpaint only")
    class_labels = model.class_labels(args.class_name, args.num) if args.class_name is not None else None
    guided = {"class_labels": class_labels, "guidance": args.guidance}
    if model.config.data_kind == "angle":
        sample_angles(args, model, generator, guided)
        return
    if model.config.data_kind == "flow":
        sample_flows(args, model, generator)
        return
    if args.out_plot is not None:
        raise UserError("--out-plot draws angle data; this is an image model, whose samples go to the --out grid PNG")
    if args.out_npy is not None and args.out_npy.suffix.lower() != ".npy":
        raise UserError(f"{args.out_npy}: --out-npy writes a NumPy .npy file; name it e.g. samples.npy")
    out = args.out if args.out is not None else Path("samples.png")
    plain = args.inpaint is None and args.from_data is None and not record and args.out_npy is None
    if args.out_dir is not None and plain:
        sample_folder_command(args, model, class_labels, out, context)
        return
    shown: torch.Tensor | None = None  # the input shown first in the grid
    if args.inpaint is not None:
        image, dims = read_image_for_model(args.inpaint, size, channels)
        mask = read_mask_for_model(args.mask, size, args.inpaint, dims)
        if args.invert_mask:
            mask = 1 - mask
        shown = torch.where(mask == 0, image, -1.0)
        result = model.inpaint(
            image.expand(args.num, -1, -1, -1), mask, sampler=sampler_from_args(args), nfe=args.nfe, resample=args.resample,
            generator=generator, batch_size=args.batch_size, record_trajectory=record, **guided,
        )
    elif args.from_data is not None:
        start = args.start_step if args.start_step is not None else model.process.steps // 2
        if not 1 <= start <= model.process.steps:
            raise UserError(f"--start-step must be in 1…{model.process.steps} (the model's T), got {start}")
        if Path(args.from_data).is_file():
            image, _ = read_image_for_model(args.from_data, size, channels)
            real = image.expand(args.num, -1, -1, -1)
            shown = image
        else:
            source = open_image_source(
                args.from_data, size, channels=channels, split="all", seed=args.seed, on_bad_image=args.on_bad_image
            )
            real = source.fixed_batch(args.num, seed=args.seed)
        result = model.forward_then_reverse(
            real, start, sampler=sampler_from_args(args), nfe=args.nfe, generator=generator, batch_size=args.batch_size,
            record_trajectory=record, **guided,
        )
    else:
        result = model.sample(
            args.num, sampler=sampler_from_args(args), nfe=args.nfe, generator=generator, batch_size=args.batch_size,
            record_trajectory=record, **guided,
        )
    images, clipped = model.decode(result.states)
    grid = images if shown is None else torch.cat([shown.to(images.device), images])
    save_image_atomic(image_grid(grid, upscale=2), out)
    if args.out_npy is not None:
        save_array_atomic(args.out_npy, images.detach().cpu().numpy().astype(np.float32))
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            save_image_atomic(image_grid(image[None], padding=0), args.out_dir / f"{index:06d}.png")
    if record:
        save_trajectory_animation(model, result, args.save_trajectory)
    if not args.quiet:
        print(
            f"wrote {out}: {args.num} images, {sampler_from_args(args).label} with {result.function_evaluations} network "
            f"evaluations; {clipped} of {images.numel()} values clipped at decode (mass that crossed the seam)"
        )


def check_non_image_sample_options(
    args: argparse.Namespace, kind: str, suffixes: tuple[str, ...], extra: dict[str, object] | None = None
) -> Path:
    """Refuse the image-only options of ``sample`` for ``kind`` ("a flow model", "an angle model") and return
    --out, which must end in one of ``suffixes`` (default: samples + the first suffix)."""
    image_options = {
        "--inpaint": args.inpaint, "--from-data": args.from_data, "--out-dir": args.out_dir,
        "--save-trajectory": args.save_trajectory, "--out-npy": args.out_npy, **(extra or {}),
    }
    written = " or FILE".join(suffixes)
    given = [name for name, value in image_options.items() if value is not None]
    if given:
        raise UserError(
            f"{given[0]} applies to image models; {args.checkpoint} is {kind}: write its samples with "
            f"--out FILE{written} (and --out-plot FILE.png)"
        )
    out = args.out if args.out is not None else Path("samples" + suffixes[0])
    if out.suffix.lower() not in suffixes:
        raise UserError(f"{out}: {kind} writes its samples as {' or '.join(suffixes)}; pass e.g. --out samples{suffixes[0]}")
    return out


def sample_flows(args: argparse.Namespace, model: DiffusionModel, generator: torch.Generator) -> Tensor:
    """``sample`` for flow models: velocities (N, 2, H, W) float32 in the data's units to --out (.npz, array
    ``velocity``: itself a flow file that ``flows:`` and ``evaluate`` read), and --out-plot, vorticity and arrows of
    training fields beside the samples. Forecasting models roll out from --context instead (``forecast_flows``).
    Returns the velocities."""
    out = check_non_image_sample_options(args, "a flow model", (".npz",), extra={"--class": args.class_name})
    if model.config.context_frames:
        return forecast_flows(args, model, generator, out)
    if args.context is not None or args.rollout != 1:
        raise UserError(f"{args.checkpoint} does not forecast (trained without --context-frames); drop --context and --rollout")
    data = model.run_config.data if model.run_config is not None else None
    real: Tensor | None = None
    if args.out_plot is not None and data is not None:
        # Opened before sampling, so that moved training data fails fast.
        real = open_training_data(data, split="all").fixed_batch(min(args.num, 4), seed=args.seed)
    result = model.sample(args.num, sampler=sampler_from_args(args), nfe=args.nfe, generator=generator, batch_size=args.batch_size,
                          guidance=args.guidance)
    velocity, clipped = model.decode(result.states)
    velocity = velocity.detach().cpu().float()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(out, {"velocity": velocity.numpy()})
    if args.out_plot is not None:
        shown = min(args.num, 4)
        rows = {"training data": real[:shown], "generated": velocity[:shown]} if real is not None else {"generated": velocity[:shown]}
        save_image_atomic(flow_field_grid(rows, columns=shown), args.out_plot)
    if not args.quiet:
        print(f"wrote {out}: {args.num} velocity fields, {sampler_from_args(args).label} with {result.function_evaluations} network "
              f"evaluations; {clipped} of {velocity[:, :1].numel()} speeds clipped at decode")
    return velocity


def forecast_flows(args: argparse.Namespace, model: DiffusionModel, generator: torch.Generator, out: Path) -> Tensor:
    """``sample --context FILE.npz --rollout K`` for forecasting models: --num rollouts of K frames after the first F
    frames of the file. Writes ``forecast`` (num, K, 2, N, N), ``context`` (F, 2, N, N) and, when the file holds
    frames after the context, ``truth`` and the relative L2 error per forecast frame. Returns the forecasts."""
    from ..metrics.flows import forecast_error

    frames = model.config.context_frames
    if args.context is None:
        raise UserError(f"{args.checkpoint} forecasts from {frames} previous frames; pass --context FILE.npz with at least "
                        f"{frames} frames (e.g. a trajectory file of 'flows generate')")
    sequence = open_flow_source(str(args.context), split="all").trajectory(0)
    if sequence.shape[0] < frames or sequence.shape[-1] != model.config.image_size:
        raise UserError(
            f"{args.context}: holds {sequence.shape[0]} frame(s) of {sequence.shape[-1]} px; this model needs at least "
            f"{frames} frames of {model.config.image_size} px"
        )
    context, truth = sequence[:frames], sequence[frames:frames + args.rollout]
    forecast = model.rollout(
        context[None].expand(args.num, -1, -1, -1, -1), args.rollout, guidance=args.guidance, sampler=sampler_from_args(args),
        nfe=args.nfe, generator=generator, batch_size=args.batch_size,
    ).cpu()
    arrays = {"forecast": forecast.numpy(), "context": context.numpy()}
    errors = forecast_error(forecast, truth) if truth.shape[0] else []
    if errors:
        arrays.update(truth=truth.numpy(), relative_error=np.asarray(errors, dtype=np.float64))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(out, arrays)
    if args.out_plot is not None:
        rows = {"forecast": forecast[0]} if not errors else {"truth": truth, "forecast": forecast[0, : truth.shape[0]]}
        save_image_atomic(flow_field_grid(rows, columns=min(4, rows["forecast"].shape[0])), args.out_plot)
    if not args.quiet:
        scored = f"; relative L2 error per frame {', '.join(f'{e:.3f}' for e in errors)}" if errors else ""
        print(f"wrote {out}: {args.num} rollout(s) of {args.rollout} frame(s) after {frames} context frames{scored}")
    return forecast


def sample_angles(args: argparse.Namespace, model: DiffusionModel, generator: torch.Generator, guided: dict[str, object]) -> np.ndarray:
    """``sample`` for angle models: the angles to --out (.csv or .npy) in the training data's units (degrees if the
    run was trained with --degrees, else radians), and --out-plot, the training data beside the samples."""
    out = check_non_image_sample_options(args, "an angle model", (".csv", ".npy"))
    data = model.run_config.data if model.run_config is not None else None
    degrees = data.degrees if data is not None else False
    real: np.ndarray | None = None
    if args.out_plot is not None and data is not None and is_angle_spec(data.source):
        # Opened before sampling, so that a moved training file fails fast.
        real = radians_to_user_units(open_training_data(data).fixed_batch(args.num, seed=args.seed), degrees=degrees)
    result = model.sample(
        args.num, sampler=sampler_from_args(args), nfe=args.nfe, generator=generator, batch_size=args.batch_size, **guided,
    )
    angles, _ = model.decode(result.states)
    written = save_angles(out, angles, degrees=degrees)
    unit = "degrees" if degrees else "radians"
    if args.out_plot is not None:
        dims = written.shape[1]
        panels = {"training data": real, "generated": written} if real is not None else {"generated": written}
        shown = "" if dims <= 2 else f" (angles 1 and 2 of {dims})"
        process = f"Kuramoto {model.process.config.coupling}" if isinstance(model.process, KuramotoProcess) else "Euclidean"
        title = f"{process} model, {sampler_from_args(args).label} sampler, {result.function_evaluations} network evaluations{shown}"
        save_image_atomic(angle_density_plot(panels, degrees=degrees, title=title), args.out_plot)
    if not args.quiet:
        plot = f" and {args.out_plot}" if args.out_plot is not None else ""
        print(
            f"wrote {out}{plot}: {args.num} samples of {written.shape[1]} angle(s) in {unit}, {sampler_from_args(args).label} with "
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
        plot = order_parameter_plot({"generation": (times[: index + 1], result.order_parameter[: index + 1])}, f"t = {result.steps[index]}")
        frames.append(labelled_rows([("samples", image_grid(images, upscale=2)), ("R(t)", plot)], label_width=60))
    frames += [frames[-1]] * 10  # hold the final frame
    save_animation(frames, path)


def evaluate_command(args: argparse.Namespace) -> dict[str, object]:
    """``kuramoto-diffusion evaluate``: weight-free metrics (and FID/KID with local Inception weights);
    flow metrics when --real is flow data (``evaluate_flow_command``)."""
    from ..metrics import evaluate_images

    if args.nll:
        return likelihood_command(args)
    if args.probes is not None:
        raise UserError("--probes sets Hutchinson's estimator of --nll; add --nll or leave --probes out")
    if is_flow_spec(args.real):
        return evaluate_flow_command(args)
    fake_clipped: float | None = None
    settings: dict[str, object] = {"real": args.real, "real_split": args.real_split, "seed": args.seed, "num": args.num}
    if args.checkpoint is not None:
        model = with_clip_denoised(
            DiffusionModel.from_pretrained(args.checkpoint, device=resolve_device(args.device)), args.clip_denoised
        )
        if model.config.data_kind == "flow":
            raise UserError(f"{args.checkpoint} is a flow model; compare it with flow data: --real flows:PATH")
        if model.config.data_kind != "image":
            raise UserError(
                f"{args.checkpoint} is an angle model and evaluate compares images; compare its samples with the data "
                "through sample --out-plot FILE.png"
            )
        image_size, channels = model.config.image_size, model.config.channels
        result = model.sample(args.num, sampler=sampler_from_args(args), nfe=args.nfe, batch_size=args.batch_size,
                              generator=torch.Generator().manual_seed(args.seed))
        fake, clipped = model.decode(result.states)
        fake_clipped = clipped / fake.numel()
        settings.update(checkpoint=str(args.checkpoint), sampler=sampler_from_args(args).label, nfe=result.function_evaluations,
                        clip_denoised=args.clip_denoised)
    else:
        fake_source = open_image_source(
            args.fake, args.image_size, channels=None if args.channels == "auto" else int(args.channels), split="all",
            on_bad_image=args.on_bad_image,
        )
        image_size, channels = args.image_size, fake_source.channels
        # A folder gives each of its images once (up to --num); the embedded sets give --num crops.
        count = args.num if args.fake in DATA_CHOICES else min(args.num, len(fake_source))
        fake = fake_source.fixed_batch(count, seed=args.seed)
        settings.update(fake=args.fake)
    real_source = open_image_source(
        args.real, image_size, channels=channels, split=args.real_split, seed=args.seed, on_bad_image=args.on_bad_image
    )
    real = real_source.fixed_batch(args.num, seed=args.seed + 1)
    if args.inception_weights is None and not args.quiet:
        print("FID/KID skipped: pass --inception-weights inception-2015-12-05.pt (see README, 'Evaluating') to add them")
    metrics: dict[str, float] = evaluate_images(
        real, fake, seed=args.seed, inception_weights=args.inception_weights, fingerprints=args.real == "fingerprints"
    )
    if fake_clipped is not None:
        metrics["clipped_fraction"] = fake_clipped
    settings.update(image_size=image_size, channels=channels, num_real=int(real.shape[0]), num_fake=int(fake.shape[0]))
    return report_metrics(args, metrics, settings)


def likelihood_command(args: argparse.Namespace) -> dict[str, object]:
    """``evaluate --nll --checkpoint M --real DATA``: the model's negative log-likelihood of --num held-out examples
    through the probability-flow ODE (``DiffusionModel.log_likelihood``); bits/dim for images (dequantised)."""
    import time

    from ..sampling.likelihood import bits_per_dim, dequantise

    if args.checkpoint is None:
        raise UserError("--nll needs --checkpoint MODEL: the likelihood is the model's, of the --real data")
    probes = 2 if args.probes is None else args.probes
    model = DiffusionModel.from_pretrained(args.checkpoint, device=resolve_device(args.device))
    kind = model.config.data_kind
    generator = torch.Generator().manual_seed(args.seed)
    if kind == "image":
        if is_flow_spec(args.real) or is_angle_spec(args.real):
            raise UserError(f"{args.checkpoint} is an image model; --real must be images (textures, fingerprints or a folder)")
        source = open_image_source(args.real, model.config.image_size, channels=model.config.channels,
                                   split=args.real_split, seed=args.seed, on_bad_image=args.on_bad_image)
        data = dequantise(source.fixed_batch(args.num, seed=args.seed + 1), generator)
    elif kind == "flow":
        if not is_flow_spec(args.real):
            raise UserError(f"{args.checkpoint} is a flow model; pass its data as --real flows:PATH")
        source = open_flow_source(args.real, split=args.real_split, seed=args.seed)
        check_same_flow_size(model.config.image_size, source.size)
        data = source.sample_batch(args.num, torch.Generator().manual_seed(args.seed + 1))
    else:
        if not is_angle_spec(args.real):
            raise UserError(f"{args.checkpoint} is an angle model; pass its data as --real angles:FILE or torus:NAME")
        source = open_angle_source(args.real, split=args.real_split, seed=args.seed)
        data = source.fixed_batch(args.num, seed=args.seed + 1)
    nfe = None if args.nfe is None else args.nfe + args.nfe % 2  # Heun: 2 per interval
    began = time.perf_counter()
    result = model.log_likelihood(data, nfe=nfe, probes=probes, generator=generator, batch_size=args.batch_size)
    seconds = time.perf_counter() - began
    nll = -result.log_likelihood
    count = nll.numel()
    dimension = math.prod(data.shape[1:])
    metrics: dict[str, float] = {
        "nll_nats": float(nll.mean()),
        "nll_standard_error": float(nll.std() / math.sqrt(count)) if count > 1 else math.nan,
        "nll_nats_per_dim": float(nll.mean()) / dimension,
    }
    if result.probe_standard_error is not None:
        # The probes' share of the spread: the standard error of the mean from the probes alone.
        metrics["probe_standard_error"] = float(result.probe_standard_error.square().sum().sqrt() / count)
    if kind == "image":
        bits = bits_per_dim(result.log_likelihood, dimension)
        metrics["bits_per_dim"] = float(bits.mean())
        metrics["bits_per_dim_standard_error"] = float(bits.std() / math.sqrt(count)) if count > 1 else math.nan
    metrics["seconds_per_example"] = seconds / count
    settings = {"checkpoint": str(args.checkpoint), "real": args.real, "real_split": args.real_split, "num": count,
                "seed": args.seed, "nfe": result.function_evaluations, "probes": probes if result.probe_standard_error is not None else 0,
                "divergence": "exact" if result.probe_standard_error is None else "hutchinson",
                "dequantisation": "uniform" if kind == "image" else None}
    return report_metrics(args, metrics, settings)


def report_metrics(args: argparse.Namespace, metrics: dict[str, float], settings: dict[str, object]) -> dict[str, object]:
    """Print the metrics as a table (unless --quiet), write them with the settings to --json, and return both."""
    payload: dict[str, object] = {"metrics": metrics, "settings": settings}
    if not args.quiet:
        width = max(len(name) for name in metrics)
        print("\n".join(f"{name:<{width}}  {value:.6g}" for name, value in metrics.items()))
    if args.json is not None:
        write_json_atomic(args.json, payload)
    return payload


def check_same_flow_size(fake_size: int, real_size: int) -> None:
    if fake_size != real_size:
        raise UserError(f"the generated fields are {fake_size} px and the real ones {real_size} px; compare flows of one size")


def evaluate_flow_command(args: argparse.Namespace) -> dict[str, object]:
    """``evaluate --real flows:PATH``: energy spectrum, spectral slope, vorticity and divergence of generated
    velocity fields (--fake: a samples .npz or a flows folder; or --checkpoint: a flow model) against real ones."""
    from ..metrics.flows import evaluate_flows

    settings: dict[str, object] = {"real": args.real, "real_split": args.real_split, "seed": args.seed, "num": args.num}
    real_source = open_flow_source(args.real, split=args.real_split, seed=args.seed)
    if args.checkpoint is not None:
        model = DiffusionModel.from_pretrained(args.checkpoint, device=resolve_device(args.device))
        if model.config.data_kind != "flow":
            raise UserError(f"{args.checkpoint} is an {model.config.data_kind} model; --real flows:… needs a flow model")
        check_same_flow_size(model.config.image_size, real_source.size)
        result = model.sample(args.num, sampler=sampler_from_args(args), nfe=args.nfe, batch_size=args.batch_size,
                              generator=torch.Generator().manual_seed(args.seed))
        fake, clipped = model.decode(result.states)
        fake = fake.cpu()
        settings.update(checkpoint=str(args.checkpoint), sampler=sampler_from_args(args).label, nfe=result.function_evaluations)
    else:
        fake_source = open_flow_source(args.fake, split="all")
        check_same_flow_size(fake_source.size, real_source.size)
        frames, count = [], 0
        for index in range(len(fake_source)):  # only as many trajectories as --num frames need
            frames.append(fake_source.trajectory(index))
            count += frames[-1].shape[0]
            if count >= args.num:
                break
        fake = torch.cat(frames)[: args.num]
        clipped = None
        settings.update(fake=args.fake)
    real = real_source.sample_batch(args.num, torch.Generator().manual_seed(args.seed + 1))
    metrics = evaluate_flows(real, fake)
    if clipped is not None:
        metrics["clipped_fraction"] = clipped / fake[:, :1].numel()
    settings.update(size=real_source.size, num_real=int(real.shape[0]), num_fake=int(fake.shape[0]))
    return report_metrics(args, metrics, settings)


def info_text(path: Path) -> str:
    """The config, step and prior of a run, checkpoint or model directory."""
    model = DiffusionModel.from_pretrained(path)
    checkpoint = getattr(model, "checkpoint_path", path)
    lines = [f"model directory: {checkpoint}"]
    state = checkpoint / "state.json"
    if state.is_file():
        lines.append(f"step: {read_json(state)['step']}")
    if path.is_dir() and (path / "checkpoints").is_dir():
        lines.append(f"complete checkpoints: {', '.join(p.name for p in list_checkpoints(path)) or 'none'}")
    process = model.process
    if isinstance(process, KuramotoProcess):
        cfg = process.config
        lines.append(
            f"process: Kuramoto {cfg.coupling} coupling, T = {cfg.steps}, schedule {cfg.schedule}, "
            f"neighbourhood {cfg.neighbourhood}, padding {cfg.padding}"
        )
        lines.append(f"prior: von Mises(ψ_ref = {cfg.ref_phase:g}, κ = {cfg.prior_concentration:.4f})")
    else:
        lines.append(f"process: Euclidean VP, T = {process.steps}; prior: N(0, I)")
    lines.append(f"network: {count_parameters(model.network):,} parameters")
    if model.config.class_names:
        lines.append(f"classes: {', '.join(model.config.class_names)} (sample with --class NAME [--guidance W])")
    lines.append("config:")
    payload = config_to_dict(model.run_config) if model.run_config is not None else config_to_dict(model.config)
    lines.append(json.dumps(payload, indent=2))
    return "\n".join(lines)

