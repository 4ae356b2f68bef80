"""Checkpoint files: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a directory written under a temporary name and renamed into place when
complete, so a run killed at any moment leaves either the previous checkpoint or the new
one, never half of one. Nothing is ever unpickled: only safetensors and JSON are read.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError
from .serialization import atomic_path

CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8})$")
COMPLETE_MARKER = "state.json"
T = TypeVar("T")


class DamagedCheckpoint(UserError):
    """A checkpoint that cannot be used whole: a file is missing, does not parse, lacks a key, or does not fit."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors to a safetensors file (contiguous CPU copies) via a temporary file and a rename.

    A failed write (a full disk, say) raises an OSError naming ``path`` and leaves no temporary file.
    """
    with atomic_path(path) as temporary:
        try:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(temporary))
        except SafetensorError as error:
            # safetensors reports I/O failures as its own error type; the disk's state is the user's to fix.
            text = " ".join(str(error).split())
            code = errno.ENOSPC if "No space left" in text or "StorageFull" in text else errno.EIO
            raise OSError(code, os.strerror(code) if code == errno.ENOSPC else text, str(path)) from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning missing or damaged files into a one-line UserError."""
    if not path.is_file():
        raise UserError(f"{path}: file missing; the checkpoint is incomplete, point to another checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(
            f"{path}: not a readable safetensors file ({error}); the file is damaged, use another checkpoint"
        ) from None


def load_module_weights(module: torch.nn.Module, path: Path) -> None:
    """Load weights into ``module``, with a clear message when names or shapes do not match the config."""
    tensors = load_tensors(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape of {wrong[0]} is {tuple(tensors[wrong[0]].shape)}, config needs {tuple(expected[wrong[0]].shape)}"
        )
        raise UserError(f"{path}: weights do not match config.json ({detail}); the weights belong to another model")
    check_finite(tensors, path)
    module.load_state_dict(tensors)


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None when all are finite."""
    return next(
        (
            name
            for name, tensor in tensors.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ),
        None,
    )


def check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A UserError naming the first tensor of ``path`` holding a NaN or an infinity: such weights sample garbage."""
    name = first_nonfinite(tensors)
    if name is not None:
        raise UserError(
            f"{path}: tensor {name} holds NaN or infinite values; the file is damaged or training diverged, "
            "use an earlier checkpoint"
        )


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of ``optimizer_to_tensors``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (incomplete temporary directories are ignored)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def newest_loadable(
    run_dir: Path, candidates: list[Path], load: Callable[[Path], T], done: str, stacklevel: int = 3
) -> tuple[Path, T]:
    """The newest of ``candidates`` (complete checkpoints, oldest first) that ``load`` reads, and what it returned.

    Each newer one whose ``load`` raised a UserError is skipped with a one-line warning naming its file, the reason
    and ``done`` with the checkpoint used ("resuming from step-N"); when none loads, a ``DamagedCheckpoint``.
    ``stacklevel``: the warning's, as ``warnings.warn`` counts from here (3: the caller's caller).
    """
    failures: list[str] = []
    for checkpoint in reversed(candidates):
        try:
            loaded = load(checkpoint)
        except UserError as error:
            failures.append(str(error))
            continue
        for failure in failures:
            warnings.warn(f"skipped a damaged checkpoint: {failure}; {done} {checkpoint.name}", stacklevel=stacklevel)
        return checkpoint, loaded
    raise DamagedCheckpoint(
        f"{run_dir}: every checkpoint is damaged (newest: {failures[0]}); start a new run or repair a checkpoint"
    )


def temporary_directory_name(final_name: str) -> str:
    """A name for ``final_name`` while it is written, unique to this process: ``.tmp-step-N.HOST.PID``, so that
    writers never share one and pruning can tell a dead writer's leftovers from a live one's."""
    return f".tmp-{final_name}.{_host_token()}.{os.getpid()}"


def _host_token() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


_LEGACY_TEMPORARY = re.compile(r"^\.tmp-step-\d{8}$")
_TEMPORARY_PATTERN = re.compile(r"^\.tmp-.+\.(?P<host>[^.]+)\.(?P<pid>\d+)$")


def _abandoned(path: Path) -> bool:
    """Whether a temporary directory was left by a process of this host that is gone (or by this process, whose
    writes are finished whenever pruning runs). Another host's, or an unrecognised name, is never touched."""
    if _LEGACY_TEMPORARY.match(path.name):  # written before names were unique (no PID to ask): always stale
        return True
    match = _TEMPORARY_PATTERN.match(path.name)
    if match is None or match["host"] != _host_token():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def commit_directory(temporary: Path, final: Path) -> None:
    """Atomically move a fully written directory into place (replacing an older one of the same name)."""
    for path in temporary.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        backup = final.with_name(final.name + ".old")
        os.replace(final, backup)
        os.replace(temporary, final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(temporary, final)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and temporary directories of writers that are gone.

    A ``step-N.old`` left by a kill between the two renames of ``commit_directory`` is put back when ``step-N``
    is missing (it is the complete checkpoint), and deleted otherwise.
    """
    folder = run_dir / "checkpoints"
    for stale in folder.glob(".tmp-*"):
        if _abandoned(stale):
            shutil.rmtree(stale, ignore_errors=True)
    for backup in folder.glob("step-*.old"):
        final = backup.with_name(backup.name.removesuffix(".old"))
        if CHECKPOINT_PATTERN.match(final.name) and not final.exists() and (backup / COMPLETE_MARKER).is_file():
            os.replace(backup, final)
        else:
            shutil.rmtree(backup, ignore_errors=True)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
