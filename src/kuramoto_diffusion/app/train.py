"""``kuramoto-diffusion train``: a fresh run, fine-tuning (``init_from``) or ``resume``; data-parallel under torchrun.

``TrainRequest`` holds what the command line asks for (its defaults are the CLI's); ``train`` turns it
into a ``RunConfig`` (the data source decides the channels, and flows their normalisation) and runs the
``Trainer``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import (
    DataConfig,
    FlowNormalisation,
    RunConfig,
    angle_model_config,
    flow_model_config,
    image_model_config,
)
from ..data import (
    BatchSource,
    is_angle_spec,
    is_flow_spec,
    open_angle_source,
    open_flow_source,
    open_image_source,
)
from ..errors import UserError
from ..model import DiffusionModel
from ..processes import process_config
from ..runtime import DistributedContext, init_distributed, shutdown_distributed
from ..stopping import Stopped
from ..training import Trainer
from .limits import MAX_BATCH_VALUES, check_values, values_per_example
from .train_checks import (
    REGIME_FLAGS,
    check_angle_training_options,
    check_fresh_out,
    check_process_fits_data,
    kuramoto_regime,
    process_regime,
)
from .train_checks import KuramotoRegime as KuramotoRegime  # re-exported
from .train_request import RENAMED_TRAIN_OPTIONS as RENAMED_TRAIN_OPTIONS  # re-exported
from .train_request import TRAIN_OPTION_FIELDS as TRAIN_OPTION_FIELDS  # re-exported
from .train_request import TrainRequest, train_config_from
from .train_request import train_option_value as train_option_value  # re-exported
from .train_resume import canonical_data_spec, resumed_trainer
from .train_summary import (
    FirstEstimate,
    describe_duration,
    open_validation_source,
    startup_summary,
    validation_probe,
)
from .train_summary import ema_description as ema_description  # re-exported


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
    trainer = resumed_trainer(request, context, device) if resuming else _new_trainer(request, context, device)
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
        took = describe_duration(trainer.train_seconds)  # over every session of a resumed run
        print(f"trained to step {trainer.step} in {took}; checkpoints in {request.out / 'checkpoints'}")
        example = {"angle": "samples.csv", "flow": "samples.npz"}.get(trainer.config.model.data_kind, "samples.png")
        print(f"sample with: kuramoto-diffusion sample --checkpoint {request.out} --num 16 --out {example}")
    return model


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
