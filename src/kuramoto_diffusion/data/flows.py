"""Velocity-field data for the flow experiments: ``FlowSource`` and the phase/amplitude split.

``FlowSource(path)`` reads one of

- a folder written by ``generate_flows`` / ``kuramoto-diffusion flows generate`` (its
  ``flows.json`` becomes ``source.metadata``), or any folder of ``.npz`` files, or one ``.npz``
  file, each file holding one trajectory: ``velocity``, float (frames, 2, N, N) with channels
  (vx, vy) indexed [frame, channel, y, x] (other arrays are ignored). These are read into memory;
- HDF5 files in PDEArena's NavierStokes2D layout (one ``.h5``/``.hdf5`` file, or a folder of
  them; needs ``pip install h5py``): a group per split ("train", "valid" or "test") with datasets
  ``vx`` and ``vy`` of shape (samples, time, x, y) (PDEArena adds ``u`` (smoke), ``t``, ``x``,
  ``y``, ``dt``, ``dx``, ``dy``, ``buo_y``, none of which is needed). The axes are transposed to
  [y, x] on reading. These files are large, so frames are read lazily, per batch.

Velocities are handed out as float32 in the data's own physical units, never normalised.
Train/validation splits are by trajectory (``data.images.split_indices``). Bad input raises a
one-line ``UserError`` that names the file and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import FLOW_PREFIX, is_flow_spec
from ..errors import UserError
from ..serialization import read_json
from .flow_files import (
    DEFAULT_MAX_FLOW_BYTES,
    _choose_group,
    _common_size,
    _find_flow_files,
    _hdf5_samples,
    _HDF5Files,
    _HDF5Trajectory,
    _in_bytes,
    _npz_velocity_bytes,
    _read_npz_trajectory,
    _Trajectory,
)
from .flow_generation import METADATA_NAME
from .splits import check_split, check_val_fraction, split_counts, split_indices


def open_flow_source(
    spec: str,
    *,
    split: str = "train",
    val_fraction: float = 0.1,
    seed: int = 0,
    max_bytes: int = DEFAULT_MAX_FLOW_BYTES,
) -> FlowSource:
    """The ``FlowSource`` of a ``flows:PATH`` spec."""
    path = spec[len(FLOW_PREFIX) :] if is_flow_spec(spec) else spec
    if not path:
        raise UserError("flows: needs a path, e.g. flows:data/flows (a folder written by 'flows generate')")
    return FlowSource(path, split=split, val_fraction=val_fraction, seed=seed, max_bytes=max_bytes)


class FlowSource:
    """Velocity snapshots and sequences of 2-D flows, sampled as float32 batches (module docstring).

    - ``split``: "train", "val" or "all"; the trajectories are split into a seeded random validation
      subset of ``val_fraction`` (at least one) and the training rest.
    - ``group``: for HDF5 files, the group to read ("train", "valid", "test"); None takes the one
      group the files hold (an error if they hold several).
    - ``max_bytes``: .npz files are read whole; their ``velocity`` arrays may take at most this many bytes as
      float32 together (default 4 GiB), checked from the array headers before anything is decompressed.

    Attributes: ``name`` (the path), ``size`` (N), ``channels`` (2: vx, vy), ``frame_counts``
    (frames per trajectory of this split), ``metadata`` (the generator's flows.json, or None).
    """

    channels = 2

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        split: str = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        group: str | None = None,
        max_bytes: int = DEFAULT_MAX_FLOW_BYTES,
    ) -> None:
        split = check_split(split)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise UserError(f"max_bytes must be a positive whole number of bytes, got {max_bytes!r}")
        val_fraction = check_val_fraction(val_fraction)
        path = Path(path).expanduser()
        self.name = str(path)
        self.metadata: dict[str, Any] | None = None
        self._hdf5 = _HDF5Files()
        npz_paths, hdf5_paths = _find_flow_files(path)
        if npz_paths:
            if (path / METADATA_NAME).is_file():
                self.metadata = read_json(path / METADATA_NAME)
            total = len(npz_paths)
        else:
            hdf5_group = _choose_group(hdf5_paths, group, self._hdf5)
            hdf5_samples = _hdf5_samples(hdf5_paths, hdf5_group, self._hdf5)
            total = len(hdf5_samples)
        if split == "val" and split_counts(total, val_fraction)[1] == 0:
            raise UserError(
                f"{path}: {total} trajectory(ies) with val_fraction {val_fraction} leave nothing for validation; "
                "add trajectories, raise val_fraction or use split 'all'"
            )
        chosen = split_indices(total, split, val_fraction, seed, where=str(path))
        if npz_paths:
            chosen_paths = [npz_paths[int(i)] for i in chosen]
            total_bytes = 0
            for npz_path in chosen_paths:  # every header first: nothing is decompressed before all fit
                total_bytes += _npz_velocity_bytes(npz_path)
                if total_bytes > max_bytes:
                    raise UserError(
                        f"{npz_path}: the 'velocity' arrays read so far declare {_in_bytes(total_bytes)} as float32, "
                        f"more than the limit of {_in_bytes(max_bytes)} (max_bytes={max_bytes}); use fewer or smaller "
                        "trajectories, or raise max_bytes if the memory is there"
                    )
            self.trajectories: list[_Trajectory] = [_read_npz_trajectory(npz_path) for npz_path in chosen_paths]
        else:
            self.trajectories = [
                _HDF5Trajectory(self._hdf5, file, hdf5_group, index, frames)
                for file, index, frames in (hdf5_samples[int(i)] for i in chosen)
            ]
        self.size = _common_size(self.trajectories, path)
        self.frame_counts = [trajectory.frames for trajectory in self.trajectories]

    def __len__(self) -> int:
        """Number of trajectories in this split."""
        return len(self.trajectories)

    def __repr__(self) -> str:
        return f"FlowSource(name={self.name!r}, trajectories={len(self)}, size={self.size})"

    def close(self) -> None:
        """Close HDF5 files held open (they reopen on the next read)."""
        self._hdf5.close()

    def trajectory(self, index: int) -> Tensor:
        """All frames of trajectory ``index`` of this split: float32 (frames, 2, N, N)."""
        trajectory = self.trajectories[index]
        return torch.from_numpy(np.array(trajectory.read(0, trajectory.frames), dtype=np.float32))

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(batch_size, 2, N, N) float32 velocity snapshots: uniform random trajectories, uniform random frames.

        All randomness comes from ``generator``: the same state gives the same batch.
        """
        return self.sample_sequences(batch_size, 1, generator)[:, 0]

    def sample_sequences(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        """(batch_size, length, 2, N, N) float32: ``length`` consecutive frames from uniform random
        trajectories, starting at a uniform random frame (for forecasting). Deterministic given ``generator``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        shortest = min(self.frame_counts)
        if length > shortest:
            raise UserError(
                f"{self.name}: sequences of {length} frames asked for, but a trajectory has only {shortest}; ask for ≤ {shortest}"
            )
        which = torch.randint(len(self.trajectories), (batch_size,), generator=generator).tolist()
        positions = torch.rand(batch_size, generator=generator, dtype=torch.float64).tolist()
        batch = np.empty((batch_size, length, 2, self.size, self.size), dtype=np.float32)
        for row, (index, position) in enumerate(zip(which, positions)):
            trajectory = self.trajectories[index]
            starts = trajectory.frames - length + 1
            start = min(int(position * starts), starts - 1)  # floor(u · n), uniform on 0 … n − 1
            batch[row] = trajectory.read(start, start + length)
        return torch.from_numpy(batch)

    def fixed_batch(self, num: int, seed: int = 0) -> Tensor:
        """(num, 2, N, N) float32 snapshots, the same for the same (num, seed): for plots and evaluation."""
        return self.sample_batch(num, torch.Generator().manual_seed(seed))
