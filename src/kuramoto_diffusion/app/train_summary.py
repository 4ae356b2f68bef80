"""What a training run is doing: the start-up summary, the first estimate of the time, the validation loss."""

from __future__ import annotations

import math
import time

import torch

from ..config import (
    DataConfig,
)
from ..data import (
    open_source,
)
from ..errors import UserError
from ..nets import count_parameters
from ..training import Trainer
from ..training.validation import ValidationProbe, validation_steps
from .train_request import TrainRequest

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
