"""``kuramoto-diffusion train``: a fresh run, fine-tuning (``init_from``) or ``resume``; data-parallel under torchrun.

``TrainRequest`` holds what the command line asks for (its defaults are the CLI's); ``train`` turns it
into a ``RunConfig`` (the data source decides the channels, and flows their normalisation) and runs the
``Trainer``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import torch

from ..config import (
    ANGLE_MLP_PRESETS,
    ANGLE_PREFIX,
    DEFAULT_MAX_IMAGE_PIXELS,
    FLOW_PREFIX,
    BadImagePolicy,
    DataConfig,
    FlowNetworks,
    FlowNormalisation,
    ForwardStates,
    NonfinitePolicy,
    Objective,
    Precision,
    RunConfig,
    TrainConfig,
    TrainPrior,
    angle_model_config,
    flow_model_config,
    image_model_config,
)
from ..config_file import CONFIG_NAME
from ..data import (
    DATA_CHOICES,
    BatchSource,
    is_angle_spec,
    is_flow_spec,
    open_angle_source,
    open_flow_source,
    open_image_source,
    open_source,
)
from ..errors import UserError
from ..model import DiffusionModel
from ..nets import count_parameters
from ..nets.unet import UNET_PRESETS
from ..processes import KuramotoConfig, ProcessConfig, process_config
from ..processes.kuramoto import CouplingNorm, CouplingShape, Padding
from ..processes.priors import PriorKind
from ..processes.schedules import ScheduleShape
from ..runtime import DistributedContext, init_distributed, shutdown_distributed
from ..stopping import Stopped
from ..training import Trainer
from ..training.checkpointing import resumable_checkpoint
from ..training.run_lock import RunLock
from ..training.trainer import RESUME_CHANGEABLE
from ..training.validation import ValidationProbe, validation_steps
from .limits import MAX_BATCH_VALUES, check_values, values_per_example


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
    precision: Precision = "fp32"
    compile: bool = False
    draws: int = 1
    objective: Objective = "auto"
    window: int = 0
    anchor: int = 0
    forward_states: ForwardStates = "pool"
    pool_size: int = 0
    pool_advance: int = 0
    pool_fill_trajectories: int = 0
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    ema_warmup_steps: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 1000
    no_fit_prior: bool = False
    init_from: Path | None = None
    device: str = "auto"
    resume: bool = False
    resume_from: Path | None = None  # a checkpoint folder of the run in ``out`` to resume from (implies resume)
    on_nan: NonfinitePolicy = "stop"
    lazy: bool = False
    classes: bool = False
    class_dropout: float = 0.1
    flow_networks: FlowNetworks | None = None  # None: by the process
    context_frames: int = 0
    on_bad_image: BadImagePolicy = "error"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    steps: int = 100
    schedule: ScheduleShape = "linear"
    neighbourhood: int | None = None  # None: 5 for images, 4 for flows
    padding: Padding = "reflect"
    phase_range: float | None = None  # a fraction of π; None: KuramotoConfig's default (0.5)
    coupling_range: tuple[float, float] = KuramotoConfig.coupling_range  # Kuramoto K per step at T = 100 (LO, HI)
    coupling_shape: CouplingShape = KuramotoConfig.coupling_shape
    coupling_norm: CouplingNorm = KuramotoConfig.coupling_norm
    ref_strength: float = KuramotoConfig.ref_strength  # κ_ref ≥ 0
    prior: TrainPrior = KuramotoConfig.prior  # or "auto" (TrainConfig.prior)
    prior_relax_steps: int = KuramotoConfig.prior_relax_steps
    seed: int = 0
    quiet: bool = False
    given: frozenset[str] = frozenset()  # the options the user typed (a resume checks them against the run)


# Train options whose TrainConfig field has another name; every other option sets the field of its own name, if
# TrainConfig has one. option → (field, negated: the option says "no" to what the field says "yes" to).
RENAMED_TRAIN_OPTIONS: dict[str, tuple[str, bool]] = {
    "on_nan": ("on_nonfinite", False),
    "no_fit_prior": ("fit_prior", True),
}
_TRAIN_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainConfig))
# TrainRequest option → the TrainConfig field it sets (TrainConfig fields without an option keep their defaults).
TRAIN_OPTION_FIELDS: dict[str, str] = {
    option.name: field
    for option in dataclasses.fields(TrainRequest)
    if (field := RENAMED_TRAIN_OPTIONS.get(option.name, (option.name, False))[0]) in _TRAIN_CONFIG_FIELDS
}


def train_option_value(option: str, value: object) -> object:
    """A train option's value as its TrainConfig field's, or the field's as the option's (negation is its own inverse)."""
    negated = RENAMED_TRAIN_OPTIONS.get(option, (option, False))[1]
    return not value if negated else value


def train_config_from(request: TrainRequest) -> TrainConfig:
    """The TrainConfig that ``request``'s options set, matched by name (``TRAIN_OPTION_FIELDS``)."""
    values = {
        field: train_option_value(option, getattr(request, option)) for option, field in TRAIN_OPTION_FIELDS.items()
    }
    return TrainConfig(**values)  # type: ignore[arg-type]  # each value has its TrainRequest field's type, the field's own


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
    resuming = request.resume or request.resume_from is not None
    trainer = _resumed_trainer(request, context, device) if resuming else _new_trainer(request, context, device)
    if context.is_main:
        trainer.validation = validation_probe(trainer, open_validation_source(trainer.config.data))
    if not request.quiet and trainer.on_log is None:
        trainer.on_log = FirstEstimate(
            trainer.train_config.train_steps, trainer.train_config.batch_size * trainer.train_config.draws
        )
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
    """The Trainer of ``request.out`` at its newest whole checkpoint (or ``resume_from``), on the data it was
    trained on. Options the user gave must agree with the run, except those that only schedule files and
    logging (``RESUME_CHANGEABLE``) and ``--train-steps``, which extends (or shortens) the run's target."""
    # The run folder's lock first: a live writer is the first thing to report, and it may be replacing the newest
    # checkpoint. Trainer.resume keeps the lock, and the checkpoint validated here (a ResumePoint).
    lock = RunLock(request.out) if context.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        trainer = _resume_under_lock(request, context, device, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if trainer.step >= trainer.train_config.train_steps and not request.quiet:
        print(
            f"{request.out} is already at step {trainer.step}, its target; pass a larger --train-steps to train further"
        )
    return trainer


def _resume_under_lock(
    request: TrainRequest, context: DistributedContext, device: torch.device, lock: RunLock | None
) -> Trainer:
    """``_resumed_trainer``'s work once the run folder's lock is held (by the main process)."""
    point = resumable_checkpoint(request.out, request.resume_from)
    checkpoint, saved = point
    if saved.data is None:
        raise UserError(f"{checkpoint / CONFIG_NAME}: has no data settings; it cannot be resumed")
    disagreeing = resume_conflicts(request, saved)
    if disagreeing:
        raise UserError(
            f"--resume: {'; '.join(disagreeing)} (the run's settings are in {checkpoint / CONFIG_NAME}); drop "
            f"{'that option' if len(disagreeing) == 1 else 'those options'} to continue the run as it was, or start a new "
            f"run with --init-from {request.out} to change them"
        )
    data = dataclasses.replace(saved.data, source=resumed_data_spec(request, saved.data.source))
    if "max_image_pixels" in request.given:  # a safety limit, not part of the result
        data = dataclasses.replace(data, max_image_pixels=request.max_image_pixels)
    source = open_source(data)
    given = request.given
    # --train-steps and --grad-accum are passed on their own (Trainer.resume checks them against the run).
    changes = {
        field: train_option_value(option, getattr(request, option))
        for option, field in TRAIN_OPTION_FIELDS.items()
        if option in given and field in RESUME_CHANGEABLE and field not in ("train_steps", "grad_accum")
    }
    train_steps = request.train_steps if "train_steps" in given else None
    return Trainer.resume(
        request.out,
        source,
        checkpoint=point,
        train_steps=train_steps,
        device=device,
        quiet=request.quiet,
        context=context,
        grad_accum=request.grad_accum,
        training_changes=changes,
        lock=lock,
    )


def resumed_data_spec(request: TrainRequest, saved_spec: str) -> str:
    """The data a resumed run reads: its own (stored absolute since 2026-12-06). ``--data`` is accepted when it
    names the same place, however written; an older run's relative path that no longer resolves from here
    takes the ``--data`` given instead."""
    if request.data is None:
        return saved_spec
    given = canonical_data_spec(request.data)
    if given == canonical_data_spec(saved_spec):
        return saved_spec
    if not _spec_path_exists(saved_spec) and _spec_path_exists(given):
        return given  # a relative path saved by an older version, started from another folder
    raise UserError(
        f"{request.out} was trained on {saved_spec!r}, not {request.data!r}; drop --data when resuming "
        "(or start a new run with --init-from to fine-tune on other data)"
    )


def canonical_data_spec(spec: str) -> str:
    """A data spec with its path made absolute, so that a run resumes from any working directory (embedded
    sets and ``torus:NAME`` stay as they are; a path that does not exist is left for the reader to reject)."""
    path = _spec_path(spec)
    if path is None or not path.exists():
        return spec
    prefix = next((prefix for prefix in (ANGLE_PREFIX, FLOW_PREFIX) if spec.startswith(prefix)), "")
    return prefix + str(path.resolve())


def _spec_path_exists(spec: str) -> bool:
    path = _spec_path(spec)
    return path is None or path.exists()


def _spec_path(spec: str) -> Path | None:
    """The file or folder a data spec names, or None for the embedded sets and ``torus:NAME``."""
    for prefix in (ANGLE_PREFIX, FLOW_PREFIX):
        if spec.startswith(prefix):
            return Path(spec[len(prefix) :]).expanduser()
    if spec in DATA_CHOICES or is_angle_spec(spec):
        return None
    return Path(spec).expanduser()


def process_name_of(process: ProcessConfig) -> str:
    """The ``--process`` name of a process config."""
    coupling = getattr(process, "coupling", None)
    return f"{process.kind}-{coupling}" if coupling is not None else process.kind


def _saved_training_value(option: str) -> Callable[[RunConfig], object]:
    field = TRAIN_OPTION_FIELDS[option]
    return lambda run: train_option_value(option, getattr(run.training, field))


# Option → the run's saved value (None: the option does not apply to this run), for the options a resume
# cannot change: each defines the run's model, data or arithmetic. Every TrainConfig option but those a resume may
# change (RESUME_CHANGEABLE) is one (--objective is compared on its own: "auto" agrees with any resolved objective).
_SAVED_VALUES: dict[str, Callable[[RunConfig], object]] = {
    **{
        option: _saved_training_value(option)
        for option, field in TRAIN_OPTION_FIELDS.items()
        if field not in RESUME_CHANGEABLE and option != "objective"
    },
    "process": lambda run: process_name_of(run.model.process),
    "steps": lambda run: run.model.process.steps,
    "schedule": lambda run: getattr(run.model.process, "schedule", None),
    "neighbourhood": lambda run: getattr(run.model.process, "neighbourhood", None),
    "padding": lambda run: getattr(run.model.process, "padding", None),
    "coupling_range": lambda run: getattr(run.model.process, "coupling_range", None),
    "coupling_shape": lambda run: getattr(run.model.process, "coupling_shape", None),
    "coupling_norm": lambda run: getattr(run.model.process, "coupling_norm", None),
    "ref_strength": lambda run: getattr(run.model.process, "ref_strength", None),
    "prior": lambda run: getattr(run.model.process, "prior", None),
    "prior_relax_steps": lambda run: getattr(run.model.process, "prior_relax_steps", None),
    "image_size": lambda run: run.model.image_size if run.model.data_kind == "image" else None,
    "channels": lambda run: str(run.model.channels) if run.model.data_kind == "image" else None,
    "flow_networks": lambda run: run.model.flow_networks if run.model.data_kind == "flow" else None,
    "context_frames": lambda run: run.model.context_frames,
    "degrees": lambda run: None if run.data is None else run.data.degrees,
    "lazy": lambda run: None if run.data is None else run.data.lazy,
    "classes": lambda run: None if run.data is None else run.data.classes,
    "on_bad_image": lambda run: None if run.data is None else run.data.on_bad_image,
}


def resume_conflicts(request: TrainRequest, saved: RunConfig) -> list[str]:
    """'--lr 0.001 (the run: 0.0002)' for every option the user gave that disagrees with the saved run."""
    found = []

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in sorted(request.given):
        given = getattr(request, name, None)
        if name == "init_from" and given is not None:
            found.append("--init-from starts a new run; it cannot be combined with --resume")
        elif name == "objective" and saved.training is not None and given not in ("auto", saved.training.objective):
            found.append(f"--objective {given} (the run: {saved.training.objective})")
        elif name == "prior" and given == "auto":
            pass  # agrees with the prior it was resolved to, whichever
        elif name == "phase_range" and given is not None:
            saved_range = getattr(saved.model.process, "phase_range", None)
            if saved_range is None or not math.isclose(given * math.pi, saved_range, rel_tol=1e-9):
                found.append(
                    f"--phase-range {given} (the run: {'none' if saved_range is None else saved_range / math.pi:.4g})"
                )
        elif name == "preset" and isinstance(given, str) and not preset_matches(given, saved):
            found.append(f"--preset {given} (the run's network is another size)")
        elif name in _SAVED_VALUES:
            value = _SAVED_VALUES[name](saved)
            if isinstance(given, (list, tuple)):
                given = tuple(float(item) for item in given)
            if value is not None and given is not None and given != value:
                shown = "" if isinstance(given, bool) else f" {given}"
                found.append(f"{flag(name)}{shown} (the run: {value})")
    return found


def preset_matches(preset: str, saved: RunConfig) -> bool:
    """Whether the network size ``preset`` names is the saved run's (the fields the preset sets)."""
    model = saved.model
    if model.mlp is not None:
        sizes = ANGLE_MLP_PRESETS.get(preset)
        return sizes is not None and all(getattr(model.mlp, key) == value for key, value in sizes.items())
    fields = UNET_PRESETS.get(preset)
    if fields is None or model.unet is None:
        return False
    set_per_run = {"in_channels", "out_channels", "image_size", "num_classes", "padding_mode", "condition_channels"}
    return all(getattr(model.unet, key) == value for key, value in fields.items() if key not in set_per_run)


def _new_trainer(request: TrainRequest, context: DistributedContext, device: torch.device) -> Trainer:
    """A started Trainer for a new run (fresh or fine-tuned from ``init_from``): the data decides the model's shape."""
    channels = None if request.channels == "auto" else int(request.channels)
    data_spec = request.data if request.data is not None else "textures"
    check_fresh_out(request.out, data_spec)
    angles, flows = is_angle_spec(data_spec), is_flow_spec(data_spec)
    process_name = request.process or (
        "kuramoto-global" if angles else "phase-amplitude" if flows else "kuramoto-local"
    )
    check_process_fits_data(process_name, angles=angles, flows=flows)
    regime = kuramoto_regime(request, process_name)
    # M = 4 is SPEC §7's neighbourhood for flows; images default to 5.
    neighbourhood = request.neighbourhood if request.neighbourhood is not None else 4 if flows else 5
    if request.context_frames and not flows:
        raise UserError("--context-frames (forecasting) needs flow data: --data flows:PATH")
    if request.flow_networks is not None and not flows:
        raise UserError("--flow-networks is for flow models (--data flows:PATH)")
    if request.flow_networks == "split" and process_name != "phase-amplitude":
        raise UserError(
            "--flow-networks split is for phase-amplitude flow models; the euclidean baseline has one network"
        )
    # What the model's shape needs of the data is in ``data`` (flows: image_size is the grid, channels 2; angles:
    # channels are the angles per row; images: both) and ``class_names``; the trainer needs only a BatchSource.
    source: BatchSource
    class_names: tuple[str, ...] = ()
    if flows:
        if request.classes:
            raise UserError("--classes needs a folder of images with one subfolder per class; flow data has no classes")
        source = flow_source = open_flow_source(data_spec, split="train", seed=request.seed)
        if request.context_frames >= min(flow_source.frame_counts):
            raise UserError(
                f"{data_spec}: --context-frames {request.context_frames} needs trajectories of at least "
                f"{request.context_frames + 1} frames, and the shortest has {min(flow_source.frame_counts)}; use fewer context frames"
            )
        data = DataConfig(
            source=canonical_data_spec(data_spec),
            image_size=flow_source.size,
            channels=2,
            flip=False,
            seed=request.seed,
        )
    elif angles:
        check_angle_training_options(process_name, request.classes)
        source = angle_source = open_angle_source(data_spec, degrees=request.degrees, split="train", seed=request.seed)
        data = DataConfig(
            source=canonical_data_spec(data_spec),
            image_size=0,
            channels=angle_source.dims,
            seed=request.seed,
            degrees=request.degrees,
        )
    else:
        source = image_source = open_image_source(
            data_spec,
            request.image_size,
            channels=channels,
            split="train",
            seed=request.seed,
            on_bad_image=request.on_bad_image,
            classes=request.classes,
            lazy=request.lazy,
            max_image_pixels=request.max_image_pixels,
        )
        data = DataConfig(
            source=canonical_data_spec(data_spec),
            image_size=request.image_size,
            channels=image_source.channels,
            seed=request.seed,
            on_bad_image=request.on_bad_image,
            classes=request.classes,
            degrees=request.degrees,
            lazy=request.lazy,
            max_image_pixels=request.max_image_pixels,
        )
        class_names = image_source.class_names if request.classes else ()
    per_example = values_per_example(data.channels, data.image_size) * (1 + request.context_frames)
    micro_batch = -(-request.batch_size // request.grad_accum)  # what one forward pass holds
    check_values(
        micro_batch * request.draws * per_example,
        MAX_BATCH_VALUES,
        f"--batch-size {request.batch_size} ÷ --grad-accum {request.grad_accum} × --draws {request.draws} × "
        f"{per_example:,} values per example",
        "lower --batch-size or --draws, or raise --grad-accum (micro-batches: same result, less memory)",
    )
    training = train_config_from(request)
    pretrained = DiffusionModel.from_pretrained(request.init_from) if request.init_from else None
    if pretrained is not None:
        model_config = pretrained.config
        if model_config.class_names != class_names:
            raise UserError(
                f"{request.init_from}: the model's classes ({', '.join(model_config.class_names) or 'none'}) differ from the "
                f"data's ({', '.join(class_names) or 'none'}); fine-tune on data with the same classes"
            )
        if angles and (model_config.data_kind, model_config.channels) != ("angle", data.channels):
            raise UserError(
                f"{request.init_from}: the model takes {model_config.channels} {model_config.data_kind} channel(s) but the "
                f"data has {data.channels} angle(s) per row; fine-tune an angle model of the same number of angles"
            )
        if flows and (model_config.data_kind, model_config.image_size, model_config.context_frames) != (
            "flow",
            data.image_size,
            request.context_frames,
        ):
            raise UserError(
                f"{request.init_from}: the model takes {model_config.data_kind} data at {model_config.image_size} px with "
                f"{model_config.context_frames} context frame(s) but the data is flows at {data.image_size} px and "
                f"--context-frames is {request.context_frames}; fine-tune a flow model of the same size and context"
            )
        if (
            not angles
            and not flows
            and (model_config.channels != data.channels or model_config.image_size != request.image_size)
        ):
            raise UserError(
                f"{request.init_from}: the model takes {model_config.channels} channel(s) at {model_config.image_size} px but "
                f"the data has {data.channels} at {request.image_size} px; match --channels and --image-size"
            )
        if regime:
            raise UserError(
                f"{request.init_from}: the pretrained model brings its own process; drop "
                f"{', '.join(REGIME_FLAGS[name] for name in regime)} (or train a new model without --init-from)"
            )
        training = dataclasses.replace(training, fit_prior=False)  # the pretrained model brings its prior
    else:
        if request.phase_range is not None and (angles or flows):
            raise UserError("--phase-range sets how images become phases; angle and flow data are phases already")
        process = process_config(
            process_name,
            steps=request.steps,
            schedule=request.schedule,
            neighbourhood=neighbourhood,
            padding=request.padding,
            phase_range=None if request.phase_range is None else request.phase_range * math.pi,
            **process_regime(request, regime),
        )
        if flows:
            normalisation = FlowNormalisation.measure(
                source.sample_batch(512, torch.Generator().manual_seed(request.seed))
            )
            model_config = flow_model_config(
                process,
                data.image_size,
                normalisation,
                request.preset,
                context_frames=request.context_frames,
                networks=request.flow_networks,
            )
        elif angles:
            model_config = angle_model_config(process, data.channels, request.preset)
        else:
            # --padding circular makes the whole model periodic in space (coupling and network), so that
            # samples tile seamlessly; otherwise the network pads with zeros.
            padding_mode = "circular" if request.padding == "circular" else "zeros"
            model_config = image_model_config(
                process,
                data.channels,
                request.image_size,
                request.preset,
                class_names=class_names,
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
        if report.gaps:
            from ..metrics.prior_gap import cheapest_passing, describe_gaps

            chosen = getattr(trainer.process.config, "prior", None)
            how = " (chosen by --prior auto: the cheapest within tolerance)" if request.prior == "auto" else ""
            print(f"prior gaps to the simulated t = T states (docs/priors.md); this model's prior: {chosen}{how}")
            for line in describe_gaps(report):
                print(f"  {line}")
            best = cheapest_passing(report)
            if best is not None and best != chosen and not next(g.passes for g in report.gaps if g.prior == chosen):
                print(f"  the {chosen} prior is outside tolerance; --prior {best} is the cheapest within it")
    return trainer


# What a run folder holds (training/trainer.py); a folder with other visible entries is someone else's.
RUN_ENTRIES = frozenset({CONFIG_NAME, "checkpoints", "samples", "tensorboard"})


def check_fresh_out(out: Path, data_spec: str) -> None:
    """--out of a fresh run: an empty or new folder, or a run folder (the trainer then refuses one with checkpoints);
    never a folder of other files, which the run would overwrite, nor a folder inside the image folder --data, where
    the run's sample grids would become training data."""
    from ..config import FLOW_PREFIX, is_angle_spec

    if data_spec not in DATA_CHOICES and not is_angle_spec(data_spec):
        data_path = Path(data_spec[len(FLOW_PREFIX) :] if data_spec.startswith(FLOW_PREFIX) else data_spec).expanduser()
        if data_path.is_dir():
            resolved_out, resolved_data = out.expanduser().resolve(), data_path.resolve()
            if resolved_out == resolved_data or resolved_data in resolved_out.parents:
                raise UserError(
                    f"{out}: is inside the --data folder {data_path}; the run's files (sample grids) would be "
                    "read as training data; put --out outside it"
                )
    if not out.is_dir():
        return  # new (created by the trainer) or not a folder (the trainer's check names it)
    foreign = sorted(
        entry.name for entry in out.iterdir() if not entry.name.startswith(".") and entry.name not in RUN_ENTRIES
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(
            f"{out}: is not empty and not a run folder (it holds {shown}); a new run would overwrite files "
            "there; pass a new or empty --out"
        )
    config = out / CONFIG_NAME
    if config.is_file():
        try:
            import json

            is_run = isinstance(json.loads(config.read_text(encoding="utf-8")).get("training"), dict)
        except (OSError, ValueError, AttributeError):
            is_run = False
        if not is_run:
            raise UserError(
                f"{config}: is not a run's config.json and a new run would overwrite it; pass a new or empty --out"
            )


REGIME_FLAGS = {
    "coupling_range": "--coupling-range",
    "coupling_shape": "--coupling-shape",
    "coupling_norm": "--coupling-norm",
    "ref_strength": "--ref-strength",
    "prior": "--prior",
    "prior_relax_steps": "--prior-relax-steps",
}


def kuramoto_regime(request: TrainRequest, process_name: str) -> dict[str, object]:
    """The Kuramoto regime settings of ``request`` that differ from KuramotoConfig's defaults, as ``process_config``
    keywords; a UserError naming the flags where the process is not a Kuramoto one."""
    regime = {name: getattr(request, name) for name in REGIME_FLAGS}
    regime["coupling_range"] = tuple(float(k) for k in regime["coupling_range"])
    changed = {name: value for name, value in regime.items() if value != getattr(KuramotoConfig, name)}
    if changed and not process_name.startswith("kuramoto-"):
        raise UserError(
            f"{', '.join(REGIME_FLAGS[name] for name in changed)} set(s) the Kuramoto coupling or prior; the {process_name} process "
            "has none: drop it or use --process kuramoto-local, kuramoto-global or kuramoto-none"
        )
    if "coupling_norm" in changed and process_name == "kuramoto-none":
        raise UserError(
            "--coupling-norm normalises a coupling, and --process kuramoto-none has none; drop --coupling-norm"
        )
    if request.prior == "auto" and request.no_fit_prior:
        raise UserError(
            "--prior auto chooses the prior at the prior fit, which --no-fit-prior turns off; drop "
            "--no-fit-prior or name the prior (--prior von-mises, relaxed or forward-chain)"
        )
    if "prior_relax_steps" in changed and request.prior not in ("relaxed", "auto"):
        raise UserError(
            f"--prior-relax-steps sets the relaxed prior, and --prior is {request.prior}; add --prior relaxed "
            "or drop --prior-relax-steps"
        )
    return changed


class KuramotoRegime(TypedDict, total=False):
    """``process_config``'s Kuramoto regime keywords (absent: the config's default)."""

    coupling_range: tuple[float, float]
    coupling_shape: CouplingShape
    coupling_norm: CouplingNorm
    ref_strength: float
    prior: PriorKind
    prior_relax_steps: int


def process_regime(request: TrainRequest, regime: Collection[str]) -> KuramotoRegime:
    """The settings ``regime`` (``kuramoto_regime``'s) names, from ``request`` as ``process_config`` takes them:
    --prior auto leaves the model's prior to the trainer, which resolves it at the prior fit (TrainConfig.prior)."""
    chosen = KuramotoRegime()
    if "coupling_range" in regime:
        low, high = request.coupling_range
        chosen["coupling_range"] = (float(low), float(high))
    if "coupling_shape" in regime:
        chosen["coupling_shape"] = request.coupling_shape
    if "coupling_norm" in regime:
        chosen["coupling_norm"] = request.coupling_norm
    if "ref_strength" in regime:
        chosen["ref_strength"] = request.ref_strength
    if "prior" in regime and request.prior != "auto":
        chosen["prior"] = request.prior
    if "prior_relax_steps" in regime:
        chosen["prior_relax_steps"] = request.prior_relax_steps
    return chosen


def check_process_fits_data(process_name: str, *, angles: bool, flows: bool) -> None:
    """The phase-amplitude process is for flows, and flows take it or the Euclidean baseline."""
    if flows and process_name not in ("phase-amplitude", "euclidean"):
        raise UserError(f"--process {process_name} does not model flows; use phase-amplitude (default) or euclidean")
    if not flows and process_name == "phase-amplitude":
        raise UserError(
            "--process phase-amplitude models flows; pass --data flows:PATH (see 'kuramoto-diffusion flows generate')"
        )


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
    return source if len(source) > 0 else None  # type: ignore[arg-type]  # every source open_source returns is Sized


def validation_probe(trainer: Trainer, val_source: object | None) -> ValidationProbe | None:
    """The validation loss of ``trainer``'s model on a fixed batch of ``val_source`` (None: no validation; also for
    forecasting models, whose loss needs previous frames)."""
    model = trainer.config.model
    if val_source is None or model.context_frames:
        return None
    batch = val_source.fixed_batch(VALIDATION_BATCH, seed=trainer.train_config.seed)  # type: ignore[attr-defined]  # image, angle and flow sources all have fixed_batch; BatchSource does not ask it
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
        return (
            f"decay {decay:g}, ramped as {ramp}: below {decay:g} for the whole run of {train_steps} steps "
            f"(at the end {(1 + train_steps) / (10 + train_steps):.4f}, an average over about the last "
            f"{(10 + train_steps) / 9:.0f} steps)"
        )
    return f"decay {decay:g}, ramped as {ramp}: reaches {decay:g} at step {full}"


def startup_summary(trainer: Trainer, request: TrainRequest, source: object, val_source: object | None) -> str:
    """What ``train`` found and chose, a few lines: data and split, shapes, process, network, objective, EMA and
    warm-ups, device and threads."""
    config, training = trainer.config, trainer.train_config
    model, data = config.model, config.data
    kind = model.data_kind
    unit = {"image": "image(s)", "angle": "row(s)", "flow": "trajectory(ies)"}[kind]
    held_out = f"{len(val_source)} held out for validation" if val_source is not None else "no validation split"  # type: ignore[arg-type]  # sources are Sized (above)
    if data is not None and data.source == "textures":
        found = f"textures: {len(source)} photo(s), random crops; validation: a strip of each photo never cropped for training"  # type: ignore[arg-type]  # sources are Sized (above)
    else:
        found = f"{data.source if data else 'data'}: {len(source)} {unit} for training, {held_out}"  # type: ignore[arg-type]  # sources are Sized (above)
    if kind == "image":
        shape = f"{model.channels} channel(s) ({'grey' if model.channels == 1 else 'RGB'}), {model.image_size}×{model.image_size} px"
    elif kind == "angle":
        shape = f"{model.channels} angle(s) per row, in {'degrees' if data is not None and data.degrees else 'radians'} in the file"
    else:
        shape = f"velocity fields (2 channels), {model.image_size}×{model.image_size} px"
    process = model.process
    if process.kind == "kuramoto":
        local = (
            f", neighbourhood {process.neighbourhood}, padding {process.padding}" if process.coupling == "local" else ""
        )
        name = f"Kuramoto {process.coupling}{local}"
    else:
        name = {"euclidean": "Euclidean VP (DDPM)", "phase-amplitude": "phase–amplitude"}.get(
            process.kind, process.kind
        )
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
        validation = (
            f"\n  validation: loss at t = {steps} on {min(VALIDATION_BATCH, len(val_source))} held-out example(s), "  # type: ignore[arg-type]  # sources are Sized (above)
            f"every {training.log_every * 4} steps (TensorBoard val/)"
        )
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

        tqdm.write(
            f"first estimate at step {step}: {per_step:.2f} s per step, {left} steps left: about "
            f"{describe_duration(left * per_step)} to finish (sample grids and checkpoints add to it)"
        )
