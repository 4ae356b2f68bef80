"""What a training run reports as it goes: the progress bar, the logged scalars (to TensorBoard and ``on_log``),
the validation cadence and the grids of samples. Nothing here changes the weights or draws training randomness."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..model import DiffusionModel

VALIDATE_EVERY = 4  # logs (of log_every steps) between validation losses


def due(step: int, every: int, last: int) -> bool:
    """Whether a thing done every ``every`` steps (0: never) is due after ``step``; always at the ``last`` step."""
    return bool(every) and (step % every == 0 or step == last)


def summary_writer(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` writing to ``folder``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class RunLog:
    """The log of one training session: every ``log_every`` optimiser steps (and at ``total_steps``), the window's
    mean loss, examples per second and learning rate, plus ``validate()``'s scalars every ``VALIDATE_EVERY`` logs,
    go to the progress bar, to TensorBoard under ``run_dir/tensorboard`` (``write``) and to ``on_log``.

    ``close`` ends the progress bar and the writer.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        step: int,
        total_steps: int,
        log_every: int,
        examples_per_step: int,
        write: bool,
        quiet: bool,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
        validate: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        from tqdm.auto import tqdm  # here: importing it costs time that a run without a loop need not pay

        self.total_steps = total_steps
        self.log_every = log_every
        self.examples_per_step = examples_per_step
        self.on_log = on_log
        self.validate = validate
        self.writer = summary_writer(run_dir / "tensorboard") if write else None
        self.progress = tqdm(total=total_steps, initial=step, disable=quiet, desc="train", unit="step")
        self._window_start, self._window_loss, self._window_steps = time.perf_counter(), 0.0, 0

    def skipped(self, count: int) -> None:
        """A non-finite step was skipped; ``count`` of them so far in this session."""
        self.progress.set_postfix(skipped=count)

    def stepped(self, step: int, loss: float, lr: float) -> None:
        """Optimiser step ``step`` (1-based) is done with mean loss ``loss`` at learning rate ``lr``."""
        self._window_loss += loss
        self._window_steps += 1
        self.progress.update(1)
        if due(step, self.log_every, self.total_steps):
            self._log(step, lr)

    def _log(self, step: int, lr: float) -> None:
        elapsed = time.perf_counter() - self._window_start
        scalars = {
            "loss": self._window_loss / self._window_steps,
            "examples_per_second": self.examples_per_step * self._window_steps / max(elapsed, 1e-9),
            "lr": lr,
        }
        self.progress.set_postfix(loss=f"{scalars['loss']:.4f}", ex_s=f"{scalars['examples_per_second']:.0f}")
        if self.validate is not None and due(step, self.log_every * VALIDATE_EVERY, self.total_steps):
            scalars.update(self.validate())
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name if "/" in name else f"train/{name}", value, step)
        if self.on_log is not None:
            self.on_log(step, scalars)
        # The window restarts after the log: validation and on_log do not count as training time.
        self._window_start, self._window_loss, self._window_steps = time.perf_counter(), 0.0, 0

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()


def write_sample_grid(model: DiffusionModel, path: Path, writer: Any, step: int, num: int = 16) -> Path:
    """A grid of ``num`` samples of ``model`` (reverse SDE, fixed seed 0) to ``path`` (PNG) and TensorBoard."""
    from ..viz.images import image_grid, save_image_atomic

    result = model.sample(num, nfe=min(model.process.steps, 100), generator=torch.Generator().manual_seed(0))
    images, _ = model.decode(result.states)
    save_image_atomic(image_grid(images, upscale=2), path)
    if writer is not None:
        writer.add_images("samples", (images.cpu() + 1) / 2, step)
    return path
