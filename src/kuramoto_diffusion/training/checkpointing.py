"""A training run's checkpoints: everything that an exact resume needs, written atomically.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNNNN/`` holding the weights, the EMA weights
(both safetensors), the AdamW state, the generators' states, the chain pool and the fp16 loss
scale (``trainer.safetensors``), ``config.json``, and last ``state.json`` (the step, the optimiser's settings and
the wall-clock seconds the run has trained up to this step, across resumes), whose presence marks the
checkpoint complete. It is written under a temporary name and renamed into place, so a run killed
while writing keeps its previous checkpoint.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..checkpoint import (
    CHECKPOINT_PATTERN,
    COMPLETE_MARKER,
    DamagedCheckpoint,
    checkpoint_name,
    commit_directory,
    latest_checkpoint,
    list_checkpoints,
    load_module_weights,
    load_tensors,
    newest_loadable,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_tensors,
    temporary_directory_name,
)
from ..config import RunConfig
from ..config_file import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, load_run_config
from ..errors import UserError
from ..model import build_network
from ..serialization import read_json, write_json_atomic
from .chain_pool import ChainPool
from .failures import check_finite_weights, unwritable_checkpoint

OPTIMIZER_TENSORS = "optimizer.safetensors"
TRAINER_TENSORS = "trainer.safetensors"


@dataclass
class TrainingState:
    """The mutable state of a run that a checkpoint saves and restores (the config travels beside it)."""

    network: torch.nn.Module
    ema_network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data_generator: torch.Generator
    noise_generator: torch.Generator
    pool: ChainPool | None
    scaler: torch.amp.GradScaler


class Progress(NamedTuple):
    """How far a checkpoint's run got: its step, and the wall-clock seconds of training that reached it (summed
    over the sessions of a resumed run; 0 for checkpoints written before these were recorded, 2026-12-07)."""

    step: int
    train_seconds: float


def write_checkpoint(run_dir: Path, progress: Progress, state: TrainingState, config_payload: dict) -> Path:
    """Write ``state`` at ``progress.step`` to RUN/checkpoints/step-N/ atomically and return that directory; an
    OSError leaves no partial directory behind."""
    step = progress.step
    folder = run_dir / "checkpoints"
    final = folder / checkpoint_name(step)
    temporary = folder / temporary_directory_name(final.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        save_tensors(state.network.state_dict(), temporary / WEIGHTS_NAME)
        save_tensors(state.ema_network.state_dict(), temporary / EMA_WEIGHTS_NAME)
        optimizer_tensors, optimizer_meta = optimizer_to_tensors(state.optimizer)
        save_tensors(optimizer_tensors, temporary / OPTIMIZER_TENSORS)
        trainer_tensors = {
            "rng.data": state.data_generator.get_state(),
            "rng.noise": state.noise_generator.get_state(),
            "rng.global": torch.get_rng_state(),
        }
        if state.pool is not None:
            trainer_tensors.update({f"pool.{k}": v for k, v in state.pool.state_dict().items()})
        if state.scaler.is_enabled():
            trainer_tensors.update(
                {
                    f"scaler.{k}": torch.as_tensor(v)
                    for k, v in state.scaler.state_dict().items()
                    if isinstance(v, (int, float))
                }
            )
        save_tensors(trainer_tensors, temporary / TRAINER_TENSORS)
        write_json_atomic(temporary / CONFIG_NAME, config_payload)
        # state.json is written last: its presence marks the checkpoint as complete.
        marker = {"step": step, "train_seconds": progress.train_seconds, "optimizer": optimizer_meta}
        write_json_atomic(temporary / COMPLETE_MARKER, marker)
        commit_directory(temporary, final)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)  # never leave half a checkpoint taking the space
        raise
    return final


def estimated_checkpoint_bytes(network: torch.nn.Module, pool_values: int) -> int:
    """Estimated size of one checkpoint in bytes: weights, EMA, two AdamW moments and a float32 chain pool of
    ``pool_values`` numbers."""
    weights = sum(p.numel() * p.element_size() for p in network.state_dict().values())
    return 4 * weights + 4 * pool_values


def save_checked_checkpoint(run_dir: Path, progress: Progress, state: TrainingState, config_payload: dict) -> Path:
    """``write_checkpoint`` after checking that the weights are finite (else ``TrainingDiverged``: a checkpoint
    of NaN weights would replace a good one); a write that fails is a one-line ``UserError``."""
    check_finite_weights({"weights": state.network, "EMA weights": state.ema_network}, run_dir, progress.step)
    try:
        return write_checkpoint(run_dir, progress, state, config_payload)
    except OSError as error:
        raise unwritable_checkpoint(error, run_dir) from None


GENERATOR_KEYS = ("rng.data", "rng.noise", "rng.global")


def read_checkpoint(checkpoint: Path, state: TrainingState) -> Progress:
    """Restore ``state`` in place from a checkpoint that ``validate_checkpoint`` passed (``resumable_checkpoint``
    returns only such); returns its progress. A chain pool that does not fit the run is a ``DamagedCheckpoint``."""
    load_module_weights(state.network, checkpoint / WEIGHTS_NAME)
    load_module_weights(state.ema_network, checkpoint / EMA_WEIGHTS_NAME)
    saved = read_json(checkpoint / COMPLETE_MARKER)
    optimizer_from_tensors(state.optimizer, load_tensors(checkpoint / OPTIMIZER_TENSORS), saved["optimizer"])
    tensors = load_tensors(checkpoint / TRAINER_TENSORS)
    state.data_generator.set_state(tensors["rng.data"])
    state.noise_generator.set_state(tensors["rng.noise"])
    torch.set_rng_state(tensors["rng.global"])
    if state.pool is not None:
        pool_state = {k.removeprefix("pool."): v for k, v in tensors.items() if k.startswith("pool.")}
        try:
            state.pool.load_state_dict(pool_state)
        except (KeyError, ValueError, RuntimeError) as error:
            reason = f"no {error}" if isinstance(error, KeyError) else str(error)
            raise DamagedCheckpoint(
                f"{checkpoint / TRAINER_TENSORS}: the chain pool does not fit the run ({reason})"
            ) from None
    scaler_state = {k.removeprefix("scaler."): v.item() for k, v in tensors.items() if k.startswith("scaler.")}
    if state.scaler.is_enabled() and scaler_state:
        state.scaler.load_state_dict({**state.scaler.state_dict(), **scaler_state})
    return Progress(int(saved["step"]), float(saved.get("train_seconds", 0.0)))


def validate_checkpoint(checkpoint: Path) -> tuple[int, RunConfig]:
    """Check a checkpoint whole before it is used: every file parses, every expected key and tensor is there,
    the weights fit the config's network and are finite, and the optimizer state fits those weights.

    Returns (step, run config); raises ``DamagedCheckpoint`` naming the file and the reason.
    """
    checkpoint = Path(checkpoint)
    try:
        marker = checkpoint / COMPLETE_MARKER
        saved = read_json(marker)
        if (
            not isinstance(saved, dict)
            or not isinstance(saved.get("step"), int)
            or not isinstance(saved.get("optimizer"), dict)
        ):
            raise UserError(f"{marker}: lacks its 'step' number or 'optimizer' settings; the file is damaged")
        seconds = saved.get("train_seconds", 0.0)  # absent in checkpoints written before 2026-12-07
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.0 <= seconds < math.inf:
            raise UserError(f"{marker}: 'train_seconds' is {seconds!r}, not a finite number ≥ 0; the file is damaged")
        match = CHECKPOINT_PATTERN.match(checkpoint.name)
        if match is not None and int(match.group(1)) != saved["step"]:
            raise UserError(
                f"{marker}: says step {saved['step']} in a folder named {checkpoint.name}; the file is damaged"
            )
        _, run_config = load_run_config(checkpoint / CONFIG_NAME)
        if run_config is None or run_config.training is None:
            raise UserError(f"{checkpoint / CONFIG_NAME}: has no training settings; it cannot be resumed")
        with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the caller's RNG alone
            network = build_network(run_config.model)
        for name in (WEIGHTS_NAME, EMA_WEIGHTS_NAME):
            load_module_weights(network, checkpoint / name)
        optimizer = torch.optim.AdamW(network.parameters(), lr=run_config.training.lr)
        try:
            optimizer_from_tensors(optimizer, load_tensors(checkpoint / OPTIMIZER_TENSORS), saved["optimizer"])
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            raise UserError(
                f"{checkpoint / OPTIMIZER_TENSORS}: does not fit the weights ({error}); the file is damaged"
            ) from None
        tensors = load_tensors(checkpoint / TRAINER_TENSORS)
        missing = [key for key in GENERATOR_KEYS if key not in tensors]
        if missing:
            raise UserError(f"{checkpoint / TRAINER_TENSORS}: lacks {', '.join(missing)}; the file is damaged")
    except DamagedCheckpoint:
        raise
    except UserError as error:
        raise DamagedCheckpoint(str(error)) from None
    return saved["step"], run_config


class ResumePoint(NamedTuple):
    """A checkpoint that passed ``validate_checkpoint``, and its run config: what ``Trainer.resume`` continues from
    without checking it again."""

    checkpoint: Path
    run_config: RunConfig


def resumable_checkpoint(run_dir: str | Path, chosen: str | Path | None = None) -> ResumePoint:
    """The checkpoint to resume ``run_dir`` from, and its run config: ``chosen`` if given (it must be whole), else
    the newest complete checkpoint that passes ``validate_checkpoint``. Each newer one that fails is skipped with
    a one-line warning naming its file and the reason."""
    run_dir = Path(run_dir)
    if chosen is not None:
        chosen = Path(chosen)
        if not (chosen / COMPLETE_MARKER).is_file():
            raise UserError(
                f"{chosen}: not a complete checkpoint (no {COMPLETE_MARKER}); choose one of {run_dir / 'checkpoints'}"
            )
        return ResumePoint(chosen, validate_checkpoint(chosen)[1])
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise UserError(f"{run_dir}: no complete checkpoint to resume from; start without resume=True")
    checkpoint, (_, run_config) = newest_loadable(run_dir, candidates, validate_checkpoint, "resuming from")
    return ResumePoint(checkpoint, run_config)


def check_new_run_folder(run_dir: Path, checkpoint_bytes: int) -> None:
    """A UserError unless ``run_dir`` holds no checkpoint yet, is writable and has room for two checkpoints."""
    if latest_checkpoint(run_dir) is not None:
        raise UserError(
            f"{run_dir}: already holds checkpoints; pass resume=True to continue it or choose another run_dir"
        )
    check_writable(run_dir)
    check_free_space(run_dir, checkpoint_bytes)


def check_writable(folder: Path) -> None:
    """A UserError unless a file can be created in ``folder``."""
    probe = folder / ".write-test"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{folder}: cannot write there ({error.strerror}); choose another run_dir") from None


def check_free_space(folder: Path, checkpoint_bytes: int) -> None:
    """Refuse to start when the disk cannot hold two checkpoints (one is written before the old is pruned)."""
    needed = 2 * checkpoint_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(
            f"{folder}: only {free / 2**20:.1f} MiB free, but a checkpoint takes about {checkpoint_bytes / 2**20:.1f} MiB "
            f"and two must fit; free some space or choose another run_dir"
        )
