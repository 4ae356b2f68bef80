"""Reading flow files for ``FlowSource`` (flows.py): finding and checking .npz and PDEArena HDF5 files, their
memory checked from the array headers before anything is decompressed, and one trajectory of each."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

NPZ_EXTENSIONS = (".npz",)
HDF5_EXTENSIONS = (".h5", ".hdf5")
PDEARENA_DATASETS = ("vx", "vy")
PDEARENA_GROUPS = ("train", "valid", "test")
# The most memory the velocity arrays of the .npz files of one source may take as float32 (they are read whole):
# 4 GiB. Checked from the array headers in the zip archives before any data is decompressed, since a small
# compressed file can declare a huge array (a 29 MB file reached 10 GB). ``max_bytes`` raises it.
DEFAULT_MAX_FLOW_BYTES = 4 * 2**30


class _Trajectory:
    """One trajectory: ``frames`` snapshots of an N × N velocity field, read with ``read(start, stop)``."""

    where: str
    frames: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop − start, 2, N, N)."""
        raise NotImplementedError


class _ArrayTrajectory(_Trajectory):
    def __init__(self, velocity: np.ndarray, where: str) -> None:
        self.velocity, self.where, self.frames = velocity, where, velocity.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.velocity[start:stop]


class _HDF5Trajectory(_Trajectory):
    def __init__(self, files: _HDF5Files, path: Path, group: str, index: int, frames: int) -> None:
        self.files, self.path, self.group, self.index, self.frames = files, path, group, index, frames
        self.where = f"{path} (group {group!r}, sample {index})"

    def read(self, start: int, stop: int) -> np.ndarray:
        data = self.files.open(self.path)[self.group]
        vx = np.asarray(data["vx"][self.index, start:stop], dtype=np.float32)
        vy = np.asarray(data["vy"][self.index, start:stop], dtype=np.float32)
        velocity = np.stack([vx, vy], axis=1).transpose(0, 1, 3, 2)  # [t, c, x, y] -> [t, c, y, x]
        if not np.isfinite(velocity).all():
            raise UserError(
                f"{self.where}: frames {start}-{stop - 1} hold NaN or infinite values; remove or regenerate that sample"
            )
        return np.ascontiguousarray(velocity)


class _HDF5Files:
    """Open h5py files, kept open between batches (closed by ``close``)."""

    def __init__(self) -> None:
        self.handles: dict[Path, Any] = {}

    def open(self, path: Path) -> Any:
        if path not in self.handles:
            self.handles[path] = _import_h5py(path).File(path, "r")
        return self.handles[path]

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def _import_h5py(path: Path) -> Any:
    try:
        import h5py
    except ImportError:
        raise UserError(
            f"{path}: reading HDF5 files needs h5py; pip install h5py (or pip install 'kuramoto-diffusion[flows]')"
        ) from None
    return h5py


def _find_flow_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(npz files, HDF5 files) at ``path``: exactly one of the lists is non-empty."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; check the path")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in NPZ_EXTENSIONS:
            return [path], []
        if suffix in HDF5_EXTENSIONS:
            return [], [path]
        raise UserError(
            f"{path}: flow data is a .npz or .h5/.hdf5 file, or a folder of them; got a {path.suffix or 'suffix-less'} file"
        )
    visible = sorted(entry for entry in path.iterdir() if not entry.name.startswith("."))
    npz = [entry for entry in visible if entry.is_file() and entry.suffix.lower() in NPZ_EXTENSIONS]
    hdf5 = [entry for entry in visible if entry.is_file() and entry.suffix.lower() in HDF5_EXTENSIONS]
    if not visible:
        raise UserError(
            f"{path}: folder is empty; generate trajectories into it first ('kuramoto-diffusion flows generate', or generate_flows)"
        )
    if npz and hdf5:
        raise UserError(f"{path}: holds both .npz and .h5 files; keep one kind per folder")
    if not npz and not hdf5:
        raise UserError(
            f"{path}: no .npz or .h5/.hdf5 flow files found; generate data with 'kuramoto-diffusion flows generate'"
        )
    return npz, hdf5


def _in_bytes(count: int) -> str:
    """A byte count in words: GiB or MiB with two decimals, or plain bytes below 1 MiB."""
    if count >= 2**30:
        return f"{count / 2**30:.2f} GiB"
    return f"{count / 2**20:.2f} MiB" if count >= 2**20 else f"{count} bytes"


def _npz_velocity_bytes(path: Path) -> int:
    """Bytes of the ``velocity`` array of the .npz file ``path`` as float32, from its .npy header alone (nothing is
    decompressed beyond the header); a one-line UserError for a file that is not a zip of .npy arrays, has no
    ``velocity``, or declares a shape or type that is not a float array (frames, 2, N, N)."""
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it
        raise UserError(f"{path}: not a readable .npz file (not a zip archive); regenerate it or save it with np.savez")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "velocity.npy" not in names:
                found = ", ".join(name.removesuffix(".npy") for name in names) or "nothing"
                raise UserError(
                    f"{path}: has no 'velocity' array (found {found}); expected velocity of shape (frames, 2, N, N)"
                )
            with archive.open("velocity.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unknown .npy format version {version}")
    except UserError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, NotImplementedError) as error:
        raise UserError(
            f"{path}: not a readable .npz file ({' '.join(str(error).split()) or type(error).__name__}); regenerate it"
        ) from None
    if dtype.hasobject:
        raise UserError(f"{path}: 'velocity' holds Python objects (never unpickled); save a float array")
    if dtype.kind not in "iuf":
        raise UserError(f"{path}: 'velocity' holds {dtype} values; save a float array")
    if len(shape) != 4 or shape[1] != 2:
        raise UserError(
            f"{path}: 'velocity' has shape {tuple(shape)}; expected (frames, 2, N, N) with channels (vx, vy)"
        )
    return math.prod(int(n) for n in shape) * 4  # Python ints: a forged shape cannot overflow


def _read_npz_trajectory(path: Path) -> _ArrayTrajectory:
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it
        raise UserError(f"{path}: not a readable .npz file (not a zip archive); regenerate it or save it with np.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "velocity" not in archive.files:
                found = ", ".join(archive.files) or "nothing"
                raise UserError(
                    f"{path}: has no 'velocity' array (found {found}); expected velocity of shape (frames, 2, N, N)"
                )
            velocity = archive["velocity"]
    except UserError:
        raise
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UserError(f"{path}: 'velocity' holds Python objects (never unpickled); save a float array") from None
        raise UserError(f"{path}: not a readable .npz file ({' '.join(str(error).split())}); regenerate it") from None
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: not a readable .npz file ({' '.join(str(error).split())}); regenerate it") from None
    if velocity.dtype.kind not in "iuf":
        raise UserError(f"{path}: 'velocity' holds {velocity.dtype} values; save a float array")
    if velocity.ndim != 4 or velocity.shape[1] != 2:
        raise UserError(
            f"{path}: 'velocity' has shape {velocity.shape}; expected (frames, 2, N, N) with channels (vx, vy)"
        )
    if velocity.shape[0] < 1:
        raise UserError(f"{path}: 'velocity' holds no frames")
    if velocity.shape[2] != velocity.shape[3]:
        raise UserError(
            f"{path}: frames are {velocity.shape[2]} × {velocity.shape[3]} (rows × columns); flow frames must be square N × N"
        )
    velocity = velocity.astype(np.float32, copy=False)
    if not np.isfinite(velocity).all():
        bad = np.flatnonzero(~np.isfinite(velocity).reshape(velocity.shape[0], -1).all(axis=1))
        raise UserError(
            f"{path}: 'velocity' holds NaN or infinite values (frame {int(bad[0])}); remove or regenerate the file"
        )
    return _ArrayTrajectory(velocity, str(path))


def _choose_group(paths: Sequence[Path], group: str | None, files: _HDF5Files) -> str:
    """The HDF5 group to read: ``group`` if given (every file must have it), else the one group there is."""
    groups_per_file = {path: sorted(_open_hdf5(path, files).keys()) for path in paths}
    if group is not None:
        lacking = [path for path, groups in groups_per_file.items() if group not in groups]
        if lacking:
            path = lacking[0]
            raise UserError(
                f"{path}: has no group {group!r} (groups: {', '.join(groups_per_file[path]) or 'none'}); pick another group"
            )
        return group
    all_groups = sorted({name for groups in groups_per_file.values() for name in groups})
    if len(all_groups) != 1:
        where = paths[0] if len(paths) == 1 else paths[0].parent
        raise UserError(
            f"{where}: holds groups {', '.join(all_groups) or '(none)'}; choose one with group= "
            f"(PDEArena NavierStokes2D files have one of {', '.join(PDEARENA_GROUPS)})"
        )
    return all_groups[0]


def _open_hdf5(path: Path, files: _HDF5Files) -> Any:
    try:
        return files.open(path)
    except OSError as error:  # h5py reports unreadable and non-HDF5 files as OSError
        raise UserError(
            f"{path}: not a readable HDF5 file ({' '.join(str(error).split())}); re-download or regenerate it"
        ) from None


def _hdf5_samples(paths: Sequence[Path], group: str, files: _HDF5Files) -> list[tuple[Path, int, int]]:
    """(file, sample index, frames) for every sample of ``group`` in ``paths``, after checking the layout."""
    samples: list[tuple[Path, int, int]] = []
    for path in paths:
        data = files.open(path)[group]
        missing = [name for name in PDEARENA_DATASETS if name not in data]
        if missing:
            found = ", ".join(sorted(data.keys())) or "nothing"
            raise UserError(
                f"{path}: group {group!r} lacks dataset(s) {', '.join(missing)} (found {found}); expected PDEArena "
                "NavierStokes2D datasets vx, vy of shape (samples, time, x, y)"
            )
        vx, vy = data["vx"], data["vy"]
        if vx.ndim != 4 or vx.shape != vy.shape:
            raise UserError(
                f"{path}: group {group!r} has vx {vx.shape} and vy {vy.shape}; expected two equal shapes (samples, time, x, y)"
            )
        if vx.shape[2] != vx.shape[3]:
            raise UserError(
                f"{path}: group {group!r} frames are {vx.shape[2]} × {vx.shape[3]} (x × y); flow frames must be square N × N"
            )
        if vx.shape[1] < 1:
            raise UserError(f"{path}: group {group!r} holds no time steps")
        samples.extend((path, index, vx.shape[1]) for index in range(vx.shape[0]))
    if not samples:
        raise UserError(f"{paths[0]}: group {group!r} holds no samples")
    return samples


def _common_size(trajectories: Sequence[_Trajectory], path: Path) -> int:
    """N shared by all trajectories; a UserError naming two files of different sizes otherwise."""
    sizes: dict[int, str] = {}
    for trajectory in trajectories:
        size = _trajectory_size(trajectory)
        sizes.setdefault(size, trajectory.where)
    if len(sizes) > 1:
        (first, first_where), (second, second_where) = list(sizes.items())[:2]
        raise UserError(
            f"{path}: frames of different sizes, {first} × {first} in {first_where} and {second} × {second} in {second_where}; "
            "keep one grid size per data set"
        )
    return next(iter(sizes))


def _trajectory_size(trajectory: _Trajectory) -> int:
    if isinstance(trajectory, _ArrayTrajectory):
        return int(trajectory.velocity.shape[-1])
    assert isinstance(trajectory, _HDF5Trajectory)
    return int(trajectory.files.open(trajectory.path)[trajectory.group]["vx"].shape[-1])
