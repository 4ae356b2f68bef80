"""Users' own angle data: (N, D) arrays of angles from .npy or .csv files, and the torus densities by name.

``open_angle_source(spec, degrees=...)`` opens

- ``angles:PATH``: a ``.npy`` file (read with ``allow_pickle=False``: never unpickled) or a
  comma-separated ``.csv`` file (one optional header line, ``#`` comments) holding an array of
  N rows (examples) by D columns (angles, 1 to hundreds). A 1-D array of N values is read as
  (N, 1): N examples of one angle. Values are radians, or degrees with ``degrees=True``;
- ``torus:NAME``: one of the 2-torus densities with a known density (``data.torus``), in radians.

Units: every source hands out float32 radians wrapped to [-π, π), which is what an angle model
(``config.angle_model_config``) takes. A file's values may use any convention inside one turn
either side of zero ([-π, π), [0, 2π), [-180°, 180°), [0°, 360°)): values in
[-2π, 2π] (radians) or [-360°, 360°] (degrees) are wrapped silently; anything outside is an
error, because it nearly always means the unit is wrong (degrees read as radians). Bad files
raise one-line ``UserError``s that name the file and the fix.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..circular import TWO_PI, wrap
from ..config import ANGLE_PREFIX, TORUS_PREFIX, is_angle_spec
from ..errors import UserError
from ..serialization import atomic_path
from .splits import check_split, check_val_fraction, split_indices
from .torus import TORUS_DENSITIES, TorusDensity, open_torus_source

ANGLE_EXTENSIONS = (".npy", ".csv")
# Largest accepted |value|, in radians after unit conversion: one full turn, plus slack for
# values such as 2π printed with 4 decimals (6.2832).
RANGE_LIMIT = TWO_PI + 1e-3
_DEGREES_PER_RADIAN = 180.0 / math.pi


@runtime_checkable
class AngleSource(Protocol):
    """Flat angle data: float32 batches (B, dims) of radians in [-π, π)."""

    name: str  # the spec it was opened from
    dims: int  # D, angles per example
    degrees: bool  # whether the user's own units are degrees (for writing samples back)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(batch_size, dims) float32 radians; all randomness from ``generator``."""
        ...

    def fixed_batch(self, num: int, seed: int = 0) -> Tensor:
        """(num, dims) float32 radians, the same for the same (num, seed): for plots and evaluation."""
        ...


# ----- reading files -----------------------------------------------------------------------------
def read_angle_file(path: str | os.PathLike[str], *, degrees: bool = False) -> np.ndarray:
    """The angles of a .npy or .csv file as float64 radians wrapped to [-π, π), shape (N, D).

    ``degrees``: the file holds degrees (converted with π/180). Raises a one-line UserError naming
    the file for a missing file, another extension, a non-numeric or pickled array, NaN/inf, a
    shape other than (N,) or (N, D), fewer than 2 rows, or values beyond one turn of the unit.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path (angle data is a .npy or .csv file)")
    if not path.is_file():
        raise UserError(f"{path}: is a folder; angle data is one .npy or .csv file of N rows by D angles")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = _read_npy(path)
    elif suffix == ".csv":
        values = _read_csv(path)
    else:
        raise UserError(
            f"{path}: unknown extension {path.suffix!r} for angle data; save the (N, D) array as .npy (np.save) "
            "or as comma-separated .csv"
        )
    values = _as_rows(values, path)
    _check_finite(values, path)
    radians = np.deg2rad(values) if degrees else values
    _check_range(values, radians, path, degrees=degrees)
    return wrap(torch.from_numpy(radians)).numpy()


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UserError(
                f"{path}: holds Python objects, which would need unpickling (it can run arbitrary code) and is "
                "never done; save a numeric array: np.save(path, np.asarray(angles, dtype=np.float64))"
            ) from None
        raise UserError(
            f"{path}: not a readable .npy file ({' '.join(str(error).split())}); re-create it with np.save"
        ) from None
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: not a readable .npy file ({error}); re-create it with np.save") from None
    if not isinstance(array, np.ndarray):  # np.load gives an NpzFile for .npz data under a .npy name
        array.close()
        raise UserError(f"{path}: is an .npz archive, not a .npy array; save one (N, D) array with np.save")
    if array.dtype.kind not in "iuf":
        raise UserError(
            f"{path}: holds {array.dtype} values, not real numbers; save the angles as a float array "
            "(np.save(path, angles.astype(np.float64)))"
        )
    return array.astype(np.float64)


def _read_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers, one example per line; a first line without any number is a header.

    Parsed by ``np.loadtxt``; when that fails, the lines are scanned again to name the bad cell.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; a .csv file must hold comma-separated numbers") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if lines and not any(_numeric_cells(cell) for cell in lines[0][1].split(",")):
        lines = lines[1:]  # a header line such as "phi,psi"
    if not lines:
        raise UserError(f"{path}: no data rows; put one example per line, its angles separated by commas")
    try:
        return np.loadtxt([line for _, line in lines], delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        pass
    first_number, first_line = lines[0]
    width = len(first_line.split(","))
    for number, line in lines:
        cells = line.split(",")
        for column, cell in enumerate(cells, start=1):
            if not _numeric_cells(cell):
                raise UserError(
                    f"{path}: line {number}, column {column}: {cell.strip()!r} is not a number; "
                    "the file must hold comma-separated numbers (one header line allowed)"
                )
        if len(cells) != width:
            raise UserError(
                f"{path}: line {number} has {len(cells)} values but line {first_number} has {width}; "
                "every row needs the same number of angles"
            )
    raise UserError(f"{path}: cannot read it as comma-separated numbers; check the file")


def _numeric_cells(line: str) -> bool:
    try:
        [float(cell) for cell in line.split(",")]
    except ValueError:
        return False
    return True


def _as_rows(values: np.ndarray, path: Path) -> np.ndarray:
    """(N,) → (N, 1); (N, D) as it is; any other shape is an error."""
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise UserError(
            f"{path}: array of shape {values.shape}, expected (N, D): N examples by D angles (or (N,) for one angle); "
            "reshape it, e.g. array.reshape(len(array), -1)"
        )
    if values.shape[1] == 0:
        raise UserError(f"{path}: array of shape {values.shape} has no angles; expected (N, D) with D ≥ 1")
    if values.shape[0] < 2:
        raise UserError(f"{path}: {values.shape[0]} row(s); training needs at least 2 examples (one per row)")
    return values


def _check_finite(values: np.ndarray, path: Path) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, column = (int(i) for i in bad[0])
        raise UserError(
            f"{path}: value {values[row, column]} at row {row + 1}, column {column + 1} (counting from 1, header "
            f"excluded; {len(bad)} such value(s) in all); remove or fill those rows"
        )


def _check_range(values: np.ndarray, radians: np.ndarray, path: Path, *, degrees: bool) -> None:
    """Values beyond one turn either side of zero are an error (wrong unit); all within ±2π with --degrees warns."""
    outside = np.argwhere(np.abs(radians) > RANGE_LIMIT)
    if len(outside):
        row, column = (int(i) for i in outside[0])
        where = f"value {values[row, column]:g} at row {row + 1}, column {column + 1} ({len(outside)} such value(s))"
        if degrees:
            raise UserError(
                f"{path}: {where} outside [-360, 360] degrees; wrap the angles first, e.g. (x + 180) % 360 - 180"
            )
        raise UserError(f"{path}: {where} outside [-2π, 2π] radians; if the file holds degrees, pass degrees=True")
    if degrees and float(np.abs(values).max()) <= RANGE_LIMIT and values.shape[0] >= 10:
        warnings.warn(
            f"{path}: every value lies within ±{TWO_PI:.4f}, as radians would, although degrees=True was given; "
            "if the file holds radians, drop degrees=True",
            stacklevel=3,
        )


# ----- sources -----------------------------------------------------------------------------------
def _float32_radians(radians: np.ndarray) -> Tensor:
    """float64 radians in [-π, π) to float32, keeping them below π (float32(π) rounds up past π)."""
    values = torch.from_numpy(np.ascontiguousarray(radians)).to(torch.float32)
    return torch.where(values >= math.pi, values - TWO_PI, values)


class AngleFileSource:
    """The rows of a .npy/.csv angle file: float32 radians (N, D) in [-π, π), split by rows.

    ``split`` "train" / "val" / "all": a seeded random ``val_fraction`` of the rows (at least one)
    is the validation split, the rest training; deterministic given (N, val_fraction, seed), and
    train and val never share a row (the image sources' ``split_indices``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        degrees: bool = False,
        split: str = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        split = check_split(split)
        val_fraction = check_val_fraction(val_fraction)
        self.path = Path(path).expanduser()
        self.name = f"{ANGLE_PREFIX}{path}"
        self.degrees = bool(degrees)
        radians = read_angle_file(self.path, degrees=self.degrees)
        self.rows = split_indices(radians.shape[0], split, val_fraction, seed, where=str(self.path))
        self.angles = _float32_radians(radians[self.rows])
        self.dims = int(self.angles.shape[1])

    def __len__(self) -> int:
        return int(self.angles.shape[0])

    def __repr__(self) -> str:
        return f"AngleFileSource(path={str(self.path)!r}, rows={len(self)}, dims={self.dims}, degrees={self.degrees})"

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(batch_size, D) float32 radians: rows drawn uniformly with replacement, by ``generator``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        which = torch.randint(len(self), (batch_size,), generator=generator)
        return self.angles[which]

    def fixed_batch(self, num: int, seed: int = 0) -> Tensor:
        """(num, D) float32 radians: the rows in a seeded random order, repeated when num > len(self)."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(self)) for _ in range(-(-num // len(self)))])[:num]
        return self.angles[torch.from_numpy(order)]


class TorusAngleSource:
    """A known 2-torus density (``data.torus``) as an angle source: exact samples, in radians.

    It has no finite set of rows, so there is no split: every batch is fresh exact samples.
    """

    degrees = False
    dims = 2

    def __init__(self, density: TorusDensity) -> None:
        self.density = density
        self.name = f"{TORUS_PREFIX}{density.name}"

    def __repr__(self) -> str:
        return f"TorusAngleSource({self.name!r})"

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return self.density.sample_batch(batch_size, generator)

    def fixed_batch(self, num: int, seed: int = 0) -> Tensor:
        return self.density.sample(num, torch.Generator().manual_seed(seed))


def open_angle_source(
    spec: str, *, degrees: bool = False, split: str = "train", val_fraction: float = 0.1, seed: int = 0
) -> AngleFileSource | TorusAngleSource:
    """``angles:PATH`` (a .npy/.csv file of N rows by D angles) or ``torus:NAME`` (a known density).

    ``degrees`` applies to files; ``split``/``val_fraction``/``seed`` choose rows of a file (see
    ``AngleFileSource``); torus densities ignore them (fresh exact samples).
    """
    if not is_angle_spec(spec):
        raise UserError(
            f"angle data is {ANGLE_PREFIX}FILE (.npy or .csv) or {TORUS_PREFIX}NAME "
            f"({', '.join(TORUS_DENSITIES)}), got {spec!r}"
        )
    if spec.startswith(TORUS_PREFIX):
        if degrees:
            raise UserError(f"{spec}: the torus densities are defined in radians; drop degrees=True")
        return TorusAngleSource(open_torus_source(spec[len(TORUS_PREFIX) :]))
    path = spec[len(ANGLE_PREFIX) :]
    if not path:
        raise UserError(f"{spec!r} names no file; write {ANGLE_PREFIX}PATH, e.g. {ANGLE_PREFIX}dihedrals.csv")
    return AngleFileSource(path, degrees=degrees, split=split, val_fraction=val_fraction, seed=seed)


# ----- writing -----------------------------------------------------------------------------------
def radians_to_user_units(radians: Tensor, *, degrees: bool) -> np.ndarray:
    """float64 (N, D) angles wrapped to [-π, π), or converted to degrees in [-180, 180)."""
    wrapped = wrap(radians.detach().to("cpu", torch.float64)).numpy()
    if not degrees:
        return wrapped
    converted = wrapped * _DEGREES_PER_RADIAN
    return np.where(converted >= 180.0, converted - 360.0, converted)


def save_array_atomic(
    path: str | os.PathLike[str], array: np.ndarray, *, csv_header: Sequence[str] = (), csv_decimals: int = 6
) -> None:
    """Write ``array`` as .npy (np.save) or .csv (comma-separated, ``csv_decimals`` decimals, optional header
    line) through a temporary file in the same folder and ``os.replace``: never half a file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise UserError(f"{path}: cannot write an array to a {path.suffix or 'suffix-less'} file; use .csv or .npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        if suffix == ".npy":
            with open(temporary, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
        else:
            with open(temporary, "w", encoding="utf-8", newline="") as handle:
                np.savetxt(
                    handle, array, fmt=f"%.{csv_decimals}f", delimiter=",", header=",".join(csv_header), comments=""
                )


def save_angles(path: str | os.PathLike[str], radians: Tensor, *, degrees: bool) -> np.ndarray:
    """Write (N, D) angles to .csv or .npy in the user's units; returns what was written (float64).

    Degrees lie in [-180, 180), radians in [-π, π). CSV has a header ``angle_1,…,angle_D`` and 6
    decimals for degrees, 8 for radians (beyond float32's precision), rounded so that no value
    prints as the excluded upper end; .npy holds the float64 values.
    """
    values = radians_to_user_units(radians, degrees=degrees)
    if values.ndim != 2:
        raise UserError(f"angle samples must have shape (N, D), got {values.shape}")
    if Path(path).suffix.lower() == ".csv":
        decimals, upper = (6, 180.0) if degrees else (8, math.pi)
        values = np.round(values, decimals)
        values = np.where(values >= upper, np.round(values - 2 * upper, decimals), values)
    header = [f"angle_{index + 1}" for index in range(values.shape[1])]
    save_array_atomic(path, values, csv_header=header, csv_decimals=6 if degrees else 8)
    return values


__all__ = [
    "ANGLE_EXTENSIONS",
    "ANGLE_PREFIX",
    "TORUS_PREFIX",
    "AngleFileSource",
    "AngleSource",
    "TorusAngleSource",
    "is_angle_spec",
    "open_angle_source",
    "radians_to_user_units",
    "read_angle_file",
    "save_angles",
    "save_array_atomic",
]
