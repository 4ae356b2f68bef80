"""Resuming a run (``--resume``, ``--resume-from``): its lock, its checkpoint, its data, and the options the user
gave that disagree with the saved run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import (
    ANGLE_MLP_PRESETS,
    ANGLE_PREFIX,
    FLOW_PREFIX,
    RunConfig,
)
from ..config_file import CONFIG_NAME
from ..data import (
    DATA_CHOICES,
    is_angle_spec,
    open_source,
)
from ..errors import UserError
from ..nets.unet import UNET_PRESETS
from ..processes import ProcessConfig
from ..runtime import DistributedContext
from ..training import Trainer
from ..training.checkpointing import resumable_checkpoint
from ..training.resume import RESUME_CHANGEABLE
from ..training.run_lock import RunLock
from .train_request import TRAIN_OPTION_FIELDS, TrainRequest, train_option_value


def resumed_trainer(request: TrainRequest, context: DistributedContext, device: torch.device) -> Trainer:
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
    """``resumed_trainer``'s work once the run folder's lock is held (by the main process)."""
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
