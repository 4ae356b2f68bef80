"""Continuing a run from a checkpoint: which settings may change, the run folder's lock, and the checks.

The trainer is built by the caller's ``build`` (``Trainer.resume``); this module knows only the little of it
that a resume touches (``Resumable``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..config import RunConfig, TrainConfig
from ..errors import UserError
from .checkpointing import ResumePoint, resumable_checkpoint
from .run_lock import NO_LOCK, NoLock, RunLock

# TrainConfig fields a resume may change: they schedule logging and files, not the arithmetic of a step.
RESUME_CHANGEABLE = (
    "train_steps",
    "grad_accum",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "log_every",
    "on_nonfinite",
)


class Resumable(Protocol):
    """What a resume needs of a freshly built trainer."""

    step: int
    lock: RunLock | NoLock
    train_config: TrainConfig

    def restore(self, checkpoint: Path) -> None:
        """Load the whole training state of ``checkpoint`` (sets ``step``)."""
        ...

    def write_config(self) -> None:
        """Write the run's config.json (the settings a resume changed)."""
        ...


ResumableT = TypeVar("ResumableT", bound=Resumable)


def resume_run(
    build: Callable[[RunConfig], ResumableT],
    run_dir: str | Path,
    *,
    checkpoint: str | Path | ResumePoint | None = None,
    train_steps: int | None = None,
    grad_accum: int | None = None,
    training_changes: dict[str, Any] | None = None,
    lock: RunLock | None = None,
    is_main: bool = True,
) -> ResumableT:
    """``build`` a trainer from the run config of ``checkpoint``, or of the newest whole checkpoint of ``run_dir``
    (damaged newer ones are skipped with a warning; ``checkpointing.resumable_checkpoint``), and restore it there.

    ``checkpoint`` may be a ``ResumePoint`` the caller already validated (under ``lock``): it is not checked
    again. ``lock``: the run folder's lock, when the caller took it before choosing the checkpoint (a live
    writer may be replacing the newest one); the trainer keeps it, and it is released if the resume fails.
    Without one the main process (``is_main``) takes the lock itself, before reading.

    ``train_steps`` sets a new total (below the checkpoint's step is an error); ``grad_accum`` and
    ``training_changes`` (TrainConfig fields that do not change the result: see ``RESUME_CHANGEABLE``) replace
    the saved settings. A changed setting is written into the run's config.json.
    """
    changes = dict(training_changes or {})
    unsafe = sorted(set(changes) - set(RESUME_CHANGEABLE))
    if unsafe:
        raise UserError(f"{', '.join(unsafe)} cannot change when a run resumes; start a new run (init_from) instead")
    if grad_accum is not None:  # a memory setting: it does not change the result
        changes["grad_accum"] = grad_accum
    if train_steps is not None:
        changes["train_steps"] = train_steps
    if lock is not None and Path(lock.run_dir).resolve() != Path(run_dir).resolve():
        raise ValueError(f"the lock given is {lock.run_dir}'s, not {run_dir}'s")
    held: RunLock | NoLock = lock if lock is not None else RunLock(Path(run_dir)) if is_main else NO_LOCK
    held.acquire()  # before reading: a live writer may be replacing the newest checkpoint (a no-op if held)
    try:
        if isinstance(checkpoint, ResumePoint):
            chosen, run_config = checkpoint
        else:
            chosen, run_config = resumable_checkpoint(run_dir, checkpoint)
        saved_training = run_config.training
        if saved_training is None:
            raise UserError(f"{chosen}: the run config has no training settings; it cannot be resumed")
        trainer = build(dataclasses.replace(run_config, training=dataclasses.replace(saved_training, **changes)))
        trainer.lock = held
        trainer.restore(chosen)
        if trainer.step > trainer.train_config.train_steps:
            raise UserError(
                f"train_steps {trainer.train_config.train_steps} is below the step {trainer.step} of {chosen}; "
                "give a larger total to train further"
            )
        if is_main and trainer.train_config != saved_training:
            trainer.write_config()
    except BaseException:
        held.release()
        raise
    return trainer
