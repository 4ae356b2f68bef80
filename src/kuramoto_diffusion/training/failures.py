"""How a training run fails: non-finite steps skipped (``on_nonfinite="skip"``, a few in a row at most) or the run
stopped, and the one-line messages of a stopped run, each naming the checkpoint that is kept."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import first_nonfinite, latest_checkpoint
from ..errors import UserError
from ..runtime import DistributedContext

MAX_SKIPPED_IN_A_ROW = 10  # with on_nonfinite="skip": this many non-finite steps in a row stop the run


class TrainingDiverged(UserError):
    """The loss or the gradients became NaN/inf."""


def kept_checkpoint(run_dir: Path, adjective: str = "good") -> str:
    """'the last good checkpoint RUN/checkpoints/step-N is kept', or that none was written yet."""
    last = latest_checkpoint(run_dir)
    return f"the last {adjective} checkpoint {last} is kept" if last else "no checkpoint was written yet"


def diverged(run_dir: Path, what: str) -> TrainingDiverged:
    """The error of a run that stopped because ``what`` happened."""
    return TrainingDiverged(f"training stopped: {what}; {kept_checkpoint(run_dir)}; try a smaller learning rate")


def check_finite_weights(networks: Mapping[str, torch.nn.Module], run_dir: Path, step: int) -> None:
    """Raise ``TrainingDiverged`` if a network of ``networks`` ({name in the message: network}) holds NaN/inf."""
    for name, network in networks.items():
        if first_nonfinite(network.state_dict()) is not None:
            raise diverged(run_dir, f"the {name} are NaN or infinite at step {step}")


def unwritable_checkpoint(error: OSError, run_dir: Path) -> UserError:
    """The error of a checkpoint that could not be written (disk full, permissions)."""
    return UserError(
        f"{error.filename or run_dir}: cannot write the checkpoint ({error.strerror or error}); "
        f"{kept_checkpoint(run_dir)}; free some space or fix the permissions, then continue with resume=True"
    )


def lost_contact(error: RuntimeError, run_dir: Path, context: DistributedContext, step: int) -> UserError:
    """The error of a process whose collective failed at step ``step`` + 1: another process died or hung up."""
    reason = " ".join(str(error).split())[:160]
    return UserError(
        f"process {context.rank} of {context.world_size} lost contact with the others at step {step + 1} ({reason}); "
        f"{kept_checkpoint(run_dir, 'complete')}; restart the job with resume=True"
    )


class NonFiniteSteps:
    """Counts the non-finite steps of a session and decides, step by step, to skip one or to stop."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.skipped = 0  # non-finite steps dropped (on_nonfinite="skip"), this session
        self.in_a_row = 0

    def finite(self) -> None:
        """A step went through: the count in a row starts again."""
        self.in_a_row = 0

    def non_finite(self, what: str, step: int, *, skip: bool) -> None:
        """The ``what`` (loss, gradient) of the step after ``step`` is NaN/inf: return to skip it (``skip``, up to
        MAX_SKIPPED_IN_A_ROW in a row), else raise ``TrainingDiverged``."""
        self.in_a_row += 1
        if skip and self.in_a_row < MAX_SKIPPED_IN_A_ROW:
            self.skipped += 1
            return
        in_a_row = f" ({self.in_a_row} steps in a row)" if self.in_a_row > 1 else ""
        raise diverged(self.run_dir, f"the {what} became NaN or infinite at step {step + 1}{in_a_row}")
