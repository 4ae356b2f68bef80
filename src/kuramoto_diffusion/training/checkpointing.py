"""A training run's checkpoints: everything that an exact resume needs, written atomically.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNNNN/`` holding the weights, the EMA weights
(both safetensors), the AdamW state, the generators' states, the chain pool and the fp16 loss
scale (``trainer.safetensors``), ``config.json``, and last ``state.json``, whose presence marks the
checkpoint complete. It is written under a temporary name and renamed into place, so a run killed
while writing keeps its previous checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import (
    COMPLETE_MARKER,
    checkpoint_name,
    commit_directory,
    latest_checkpoint,
    load_module_weights,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_tensors,
)
from ..config import RunConfig
from ..errors import UserError
from ..model import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, load_run_config
from ..serialization import write_json_atomic
from .chain_pool import ChainPool

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


def write_checkpoint(run_dir: Path, step: int, state: TrainingState, config_payload: dict) -> Path:
    """Write ``state`` at ``step`` to RUN/checkpoints/step-N/ atomically and return that directory; an OSError
    leaves no partial directory behind."""
    folder = run_dir / "checkpoints"
    final = folder / checkpoint_name(step)
    temporary = folder / f".tmp-{final.name}"
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
            trainer_tensors.update({f"scaler.{k}": torch.as_tensor(v) for k, v in state.scaler.state_dict().items()
                                    if isinstance(v, (int, float))})
        save_tensors(trainer_tensors, temporary / TRAINER_TENSORS)
        write_json_atomic(temporary / CONFIG_NAME, config_payload)
        # state.json is written last: its presence marks the checkpoint as complete.
        write_json_atomic(temporary / COMPLETE_MARKER, {"step": step, "optimizer": optimizer_meta})
        commit_directory(temporary, final)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)  # never leave half a checkpoint taking the space
        raise
    return final


def read_checkpoint(checkpoint: Path, state: TrainingState) -> int:
    """Restore ``state`` from a checkpoint directory in place; returns its step."""
    load_module_weights(state.network, checkpoint / WEIGHTS_NAME)
    load_module_weights(state.ema_network, checkpoint / EMA_WEIGHTS_NAME)
    saved = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    optimizer_from_tensors(state.optimizer, load_tensors(checkpoint / OPTIMIZER_TENSORS), saved["optimizer"])
    tensors = load_tensors(checkpoint / TRAINER_TENSORS)
    state.data_generator.set_state(tensors["rng.data"])
    state.noise_generator.set_state(tensors["rng.noise"])
    torch.set_rng_state(tensors["rng.global"])
    if state.pool is not None:
        state.pool.load_state_dict({k.removeprefix("pool."): v for k, v in tensors.items() if k.startswith("pool.")})
    scaler_state = {k.removeprefix("scaler."): v.item() for k, v in tensors.items() if k.startswith("scaler.")}
    if state.scaler.is_enabled() and scaler_state:
        state.scaler.load_state_dict({**state.scaler.state_dict(), **scaler_state})
    return int(saved["step"])


def last_run_config(run_dir: str | Path) -> tuple[Path, RunConfig]:
    """The last complete checkpoint of a run and its run config (which has training settings), or a
    UserError saying why the run cannot be resumed."""
    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"{run_dir}: no complete checkpoint to resume from; start without resume=True")
    _, run_config = load_run_config(checkpoint / CONFIG_NAME)
    if run_config is None or run_config.training is None:
        raise UserError(f"{checkpoint / CONFIG_NAME}: has no training settings; it cannot be resumed")
    return checkpoint, run_config


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
