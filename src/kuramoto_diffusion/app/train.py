"""``kuramoto-diffusion train``: a fresh run, fine-tuning (``init_from``) or ``resume``; data-parallel under torchrun.

``TrainRequest`` holds what the command line asks for (its defaults are the CLI's); ``train`` turns it
into a ``RunConfig`` (the data source decides the channels, and flows their normalisation) and runs the
``Trainer``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import (
    DataConfig,
    FlowNormalisation,
    RunConfig,
    TrainConfig,
    angle_model_config,
    flow_model_config,
    image_model_config,
)
from ..data import is_angle_spec, is_flow_spec, open_angle_source, open_flow_source, open_image_source, open_source
from ..errors import UserError
from ..model import CONFIG_NAME, DiffusionModel
from ..processes import process_config
from ..runtime import DistributedContext, init_distributed, shutdown_distributed
from ..stopping import Stopped
from ..nets import count_parameters
from ..training import Trainer
from ..training.validation import ValidationProbe, validation_steps
from ..training.checkpointing import last_run_config


@dataclass(frozen=True)
class TrainRequest:
    """The train command's options (``kuramoto-diffusion train --help`` says what each means)."""

    out: Path
    data: str | None = None  # None: textures, or with resume the run's own
    degrees: bool = False
    process: str | None = None  # None: by the data kind
    image_size: int = 32
    channels: str = "auto"
    preset: str = "small"
    train_steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    precision: str = "fp32"
    compile: bool = False
    draws: int = 1
    objective: str = "auto"
    window: int = 0
    anchor: int = 0
    forward_states: str = "pool"
    pool_size: int = 0
    pool_advance: int = 0
    lr: float = 2e-4
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 1000
    no_fit_prior: bool = False
    init_from: Path | None = None
    device: str = "auto"
    resume: bool = False
    on_nan: str = "stop"
    lazy: bool = False
    classes: bool = False
    class_dropout: float = 0.1
    flow_networks: str | None = None
    context_frames: int = 0
    on_bad_image: str = "error"
    steps: int = 100
    schedule: str = "linear"
    neighbourhood: int | None = None  # None: 5 for images, 4 for flows
    padding: str = "reflect"
    phase_range: float | None = None  # a fraction of π; None: KuramotoConfig's default (0.5)
    seed: int = 0
    quiet: bool = False


def train(request: TrainRequest) -> DiffusionModel:
    """Train as ``request`` says and return the trained model (EMA weights); rank 0 alone talks under torchrun."""
    context, device = init_distributed(request.device)
    if not context.is_main:
        request = dataclasses.replace(request, quiet=True)  # rank 0 alone talks
    try:
        return _train(request, context, device)
    finally:
        shutdown_distributed()


def _train(request: TrainRequest, context: DistributedContext, device: torch.device) -> DiffusionModel:
    trainer = _resumed_trainer(request, context, device) if request.resume else _new_trainer(request, context, device)
    if context.is_main:
        trainer.validation = validation_probe(trainer, open_validation_source(trainer.config.data))
    if not request.quiet and trainer.on_log is None:
        trainer.on_log = FirstEstimate(trainer.train_config.train_steps, trainer.train_config.batch_size * trainer.train_config.draws)
    try:
        model = trainer.train()
    except Stopped as stop:
        hint = f"; continue with: kuramoto-diffusion train --out {request.out} --resume" if context.is_main else ""
        raise Stopped(stop.signal_number, f"{stop}{hint}" if context.is_main else "") from None
    if not request.quiet:
        print(f"trained to step {trainer.step}; checkpoints in {request.out / 'checkpoints'}")
        example = {"angle": "samples.csv", "flow": "samples.npz"}.get(trainer.config.model.data_kind, "samples.png")
        print(f"sample with: kuramoto-diffusion sample --checkpoint {request.out} --num 16 --out {example}")
    return model


def _resumed_trainer(request: TrainRequest, context: DistributedContext, device: torch.device) -> Trainer:
    """The Trainer of ``request.out`` at its last complete checkpoint, on the data it was trained on."""
    checkpoint, saved = last_run_config(request.out)
    if saved.data is None:
        raise UserError(f"{checkpoint / CONFIG_NAME}: has no data settings; it cannot be resumed")
    if request.data is not None and request.data != saved.data.source:
        raise UserError(
            f"{request.out} was trained on {saved.data.source!r}, not {request.data!r}; drop --data when resuming "
            "(or start a new run with --init-from to fine-tune on other data)"
        )
    source = open_source(saved.data)
    trainer = Trainer.resume(request.out, source, train_steps=request.train_steps, device=device, quiet=request.quiet,
                             context=context, grad_accum=request.grad_accum)
    if trainer.step >= request.train_steps and not request.quiet:
        print(f"{request.out} is already at step {trainer.step} ≥ --train-steps {request.train_steps}; nothing to do")
    return trainer


def _new_trainer(request: TrainRequest, context: DistributedContext, device: torch.device) -> Trainer:
    """A started Trainer for a new run (fresh or fine-tuned from ``init_from``): the data decides the model's shape."""
    channels = None if request.channels == "auto" else int(request.channels)
    data_spec = request.data if request.data is not None else "textures"
    angles, flows = is_angle_spec(data_spec), is_flow_spec(data_spec)
    process_name = request.process or ("kuramoto-global" if angles else "phase-amplitude" if flows else "kuramoto-local")
    check_process_fits_data(process_name, angles=angles, flows=flows)
    # M = 4 is SPEC §7's neighbourhood for flows; images default to 5.
    neighbourhood = request.neighbourhood if request.neighbourhood is not None else 4 if flows else 5
    if request.context_frames and not flows:
        raise UserError("--context-frames (forecasting) needs flow data: --data flows:PATH")
    if request.flow_networks is not None and not flows:
        raise UserError("--flow-networks is for flow models (--data flows:PATH)")
    if request.flow_networks == "split" and process_name != "phase-amplitude":
        raise UserError("--flow-networks split is for phase-amplitude flow models; the euclidean baseline has one network")
    if flows:
        if request.classes:
            raise UserError("--classes needs a folder of images with one subfolder per class; flow data has no classes")
        source = open_flow_source(data_spec, split="train", seed=request.seed)
        if request.context_frames >= min(source.frame_counts):
            raise UserError(
                f"{data_spec}: --context-frames {request.context_frames} needs trajectories of at least "
                f"{request.context_frames + 1} frames, and the shortest has {min(source.frame_counts)}; use fewer context frames"
            )
        data = DataConfig(source=data_spec, image_size=source.size, channels=2, flip=False, seed=request.seed)
    elif angles:
        check_angle_training_options(process_name, request.classes)
        source = open_angle_source(data_spec, degrees=request.degrees, split="train", seed=request.seed)
        data = DataConfig(source=data_spec, image_size=0, channels=source.dims, seed=request.seed, degrees=request.degrees)
    else:
        source = open_image_source(
            data_spec, request.image_size, channels=channels, split="train", seed=request.seed, on_bad_image=request.on_bad_image,
            classes=request.classes, lazy=request.lazy,
        )
        data = DataConfig(source=data_spec, image_size=request.image_size, channels=source.channels, seed=request.seed,
                          on_bad_image=request.on_bad_image, classes=request.classes, degrees=request.degrees, lazy=request.lazy)
    class_names = source.class_names if request.classes else ()
    training = TrainConfig(
        train_steps=request.train_steps, batch_size=request.batch_size, grad_accum=request.grad_accum,
        precision=request.precision, compile=request.compile, draws=request.draws,
        objective=request.objective, window=request.window, anchor=request.anchor,
        forward_states=request.forward_states, pool_size=request.pool_size, pool_advance=request.pool_advance, lr=request.lr, ema_decay=request.ema_decay, fit_prior=not request.no_fit_prior,
        checkpoint_every=request.checkpoint_every, keep_checkpoints=request.keep_checkpoints,
        sample_every=request.sample_every, seed=request.seed, on_nonfinite=request.on_nan, class_dropout=request.class_dropout,
    )
    pretrained = DiffusionModel.from_pretrained(request.init_from) if request.init_from else None
    if pretrained is not None:
        model_config = pretrained.config
        if model_config.class_names != class_names:
            raise UserError(
                f"{request.init_from}: the model's classes ({', '.join(model_config.class_names) or 'none'}) differ from the "
                f"data's ({', '.join(class_names) or 'none'}); fine-tune on data with the same classes"
            )
        if angles and (model_config.data_kind, model_config.channels) != ("angle", source.dims):
            raise UserError(
                f"{request.init_from}: the model takes {model_config.channels} {model_config.data_kind} channel(s) but the "
                f"data has {source.dims} angle(s) per row; fine-tune an angle model of the same number of angles"
            )
        if flows and (model_config.data_kind, model_config.image_size, model_config.context_frames) != (
            "flow", source.size, request.context_frames
        ):
            raise UserError(
                f"{request.init_from}: the model takes {model_config.data_kind} data at {model_config.image_size} px with "
                f"{model_config.context_frames} context frame(s) but the data is flows at {source.size} px and "
                f"--context-frames is {request.context_frames}; fine-tune a flow model of the same size and context"
            )
        if not angles and not flows and (model_config.channels != source.channels or model_config.image_size != request.image_size):
            raise UserError(
                f"{request.init_from}: the model takes {model_config.channels} channel(s) at {model_config.image_size} px but "
                f"the data has {source.channels} at {request.image_size} px; match --channels and --image-size"
            )
        training = dataclasses.replace(training, fit_prior=False)  # the pretrained model brings its prior
    else:
        if request.phase_range is not None and (angles or flows):
            raise UserError("--phase-range sets how images become phases; angle and flow data are phases already")
        process = process_config(
            process_name, steps=request.steps, schedule=request.schedule, neighbourhood=neighbourhood, padding=request.padding,
            phase_range=None if request.phase_range is None else request.phase_range * math.pi,
        )
        if flows:
            normalisation = FlowNormalisation.measure(source.sample_batch(512, torch.Generator().manual_seed(request.seed)))
            model_config = flow_model_config(process, source.size, normalisation, request.preset,
                                             context_frames=request.context_frames, networks=request.flow_networks)
        elif angles:
            model_config = angle_model_config(process, source.dims, request.preset)
        else:
            # --padding circular makes the whole model periodic in space (coupling and network), so that
            # samples tile seamlessly; otherwise the network pads with zeros.
            padding_mode = "circular" if request.padding == "circular" else "zeros"
            model_config = image_model_config(
                process, source.channels, request.image_size, request.preset, class_names=class_names,
                padding_mode=padding_mode,
            )
    run_config = RunConfig(model=model_config, data=data, training=training)
    trainer = Trainer(run_config, source, request.out, device=device, quiet=request.quiet, context=context)
    if pretrained is not None:
        trainer.initialise_from(pretrained)
    if not request.quiet:
        print(startup_summary(trainer, request, source, open_validation_source(data)))
    trainer.start()
    report = trainer.prior_report
    if report is not None and not request.quiet:
        gaps = ", ".join(f"{gap:.3f}" for gap in report.moment_gaps)
        print(
            f"prior: von Mises κ = {report.concentration:.3f} fitted to simulated t = T states "
            f"(mean direction {report.mean_direction:+.3f} rad, moment gaps {gaps})"
        )
    return trainer


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


# ----- what the run is doing: the start-up summary, the first estimate of the time, the validation loss -----------
VALIDATION_BATCH = 16  # held-out examples in the validation loss (per t; a fixed batch)


def open_validation_source(data: DataConfig | None) -> object | None:
    """The held-out split of the run's data, or None when it has none (e.g. too few images for a split)."""
    if data is None:
        return None
    try:
        source = open_source(data, split="val")
    except UserError:
        return None
    return source if len(source) > 0 else None  # type: ignore[arg-type]


def validation_probe(trainer: Trainer, val_source: object | None) -> ValidationProbe | None:
    """The validation loss of ``trainer``'s model on a fixed batch of ``val_source`` (None: no validation; also for
    forecasting models, whose loss needs previous frames)."""
    model = trainer.config.model
    if val_source is None or model.context_frames:
        return None
    batch = val_source.fixed_batch(VALIDATION_BATCH, seed=trainer.train_config.seed)  # type: ignore[attr-defined]
    states = trainer.model.encode(batch.to(trainer.device))
    labels = None
    if model.class_names:  # the unconditional score: the "no class" label
        labels = torch.full((states.shape[0],), len(model.class_names), dtype=torch.long, device=trainer.device)
    return ValidationProbe(trainer.process, states, seed=trainer.train_config.seed, class_labels=labels)


def describe_duration(seconds: float) -> str:
    """'40 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ema_description(decay: float, warmup_steps: int, train_steps: int) -> str:
    """What the EMA does over this run: its decay, its ramp and where the ramp reaches the decay."""
    if decay == 0:
        return "off (decay 0: sampling uses the latest weights)"
    ramp = "min(decay, (1 + n)/(10 + n))"
    full = math.ceil((10 * decay - 1) / (1 - decay))  # first step n at which the ramp reaches the decay
    if warmup_steps:
        return f"decay {decay:g}, ramped as {ramp} up to step {warmup_steps}, then {decay:g}"
    if full >= train_steps:
        return (f"decay {decay:g}, ramped as {ramp}: below {decay:g} for the whole run of {train_steps} steps "
                f"(at the end {(1 + train_steps) / (10 + train_steps):.4f}, an average over about the last "
                f"{(10 + train_steps) / 9:.0f} steps)")
    return f"decay {decay:g}, ramped as {ramp}: reaches {decay:g} at step {full}"


def startup_summary(trainer: Trainer, request: TrainRequest, source: object, val_source: object | None) -> str:
    """What ``train`` found and chose, a few lines: data and split, shapes, process, network, objective, EMA and
    warm-ups, device and threads."""
    config, training = trainer.config, trainer.train_config
    model, data = config.model, config.data
    kind = model.data_kind
    unit = {"image": "image(s)", "angle": "row(s)", "flow": "trajectory(ies)"}[kind]
    held_out = f"{len(val_source)} held out for validation" if val_source is not None else "no validation split"  # type: ignore[arg-type]
    if data is not None and data.source == "textures":
        found = f"textures: {len(source)} photo(s), random crops; validation: a strip of each photo never cropped for training"  # type: ignore[arg-type]
    else:
        found = f"{data.source if data else 'data'}: {len(source)} {unit} for training, {held_out}"  # type: ignore[arg-type]
    if kind == "image":
        shape = f"{model.channels} channel(s) ({'grey' if model.channels == 1 else 'RGB'}), {model.image_size}×{model.image_size} px"
    elif kind == "angle":
        shape = f"{model.channels} angle(s) per row, in {'degrees' if data is not None and data.degrees else 'radians'} in the file"
    else:
        shape = f"velocity fields (2 channels), {model.image_size}×{model.image_size} px"
    process = model.process
    if process.kind == "kuramoto":
        local = f", neighbourhood {process.neighbourhood}, padding {process.padding}" if process.coupling == "local" else ""
        name = f"Kuramoto {process.coupling}{local}"
    else:
        name = {"euclidean": "Euclidean VP (DDPM)", "phase-amplitude": "phase–amplitude"}.get(process.kind, process.kind)
    network = f"from {request.init_from}" if request.init_from else f"preset {request.preset}"
    parameters = count_parameters(trainer.model.network)
    if training.warmup_steps:
        warmup = f"learning rate {training.lr:g} after a linear warm-up of {training.warmup_steps} steps"
    else:
        warmup = f"learning rate {training.lr:g}, no warm-up"
    threads = torch.get_num_threads()
    processes = f", {trainer.context.world_size} processes" if trainer.context.distributed else ""
    validation = ""
    if trainer.context.is_main and val_source is not None and not model.context_frames:
        steps = ", ".join(str(t) for t in validation_steps(process.steps))
        validation = (f"\n  validation: loss at t = {steps} on {min(VALIDATION_BATCH, len(val_source))} held-out example(s), "  # type: ignore[arg-type]
                      f"every {training.log_every * 4} steps (TensorBoard val/)")
    return (
        f"training {training.train_steps} steps of batch {training.batch_size} into {request.out}:\n"
        f"  data: {found}\n"
        f"  shape: {shape}\n"
        f"  process: {name}, T = {process.steps}; network: {network}, {parameters:,} parameters\n"
        f"  objective: {training.objective}; {warmup}\n"
        f"  EMA: {ema_description(training.ema_decay, training.ema_warmup_steps, training.train_steps)}\n"
        f"  device: {trainer.device}, {threads} CPU thread(s){processes}"
        f"{validation}"
    )


class FirstEstimate:
    """``Trainer.on_log`` that prints, once, the first estimate of the time to finish (from the first logged
    steps' speed; the progress bar keeps the running estimate)."""

    def __init__(self, train_steps: int, examples_per_step: int) -> None:
        self.train_steps, self.examples_per_step = train_steps, examples_per_step
        self.began = time.perf_counter()
        self.said = False

    def __call__(self, step: int, scalars: dict[str, float]) -> None:
        if self.said:
            return
        self.said = True
        per_step = self.examples_per_step / max(scalars["examples_per_second"], 1e-9)
        left = max(self.train_steps - step, 0)
        from tqdm.auto import tqdm

        tqdm.write(f"first estimate at step {step}: {per_step:.2f} s per step, {left} steps left: about "
                   f"{describe_duration(left * per_step)} to finish (sample grids and checkpoints add to it)")
