"""Writing Navier–Stokes trajectories to a folder: ``generate_flows`` (and ``kuramoto-diffusion flows generate``).

Folder layout (read back by ``data.flows.FlowSource``):

- ``flows.json``: the format tag, the generation settings (``FlowSettings``), the number of
  trajectories asked for so far, and a description of the layout;
- ``trajectory_00000.npz``, ``trajectory_00001.npz``, …: one trajectory each, holding
  ``velocity`` float32 (frames, 2, N, N), channels (vx, vy), indexed [frame, channel, y, x];
  ``vorticity`` float32 (frames, N, N); ``time`` float64 (frames,) the simulated time of each frame;
  ``seed`` (the trajectory's own seed), ``solver_steps`` and ``max_solver_dt`` (scalars).

Every file is written to a hidden temporary name and renamed into place, so a killed run leaves
complete files only; running the same command again skips the trajectories already present
(resuming), and a larger ``num`` adds trajectories. Trajectory i depends only on (seed, i) and
the settings, so the files are the same however the work was split across runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..serialization import atomic_path, config_from_dict, config_to_dict, read_json, write_json_atomic
from .navier_stokes import FORCINGS, NavierStokes2D, check_grid_size, forcing_field, random_vorticity

FORMAT = "kuramoto-diffusion-flows/1"
METADATA_NAME = "flows.json"
TRAJECTORY_PATTERN = "trajectory_{index:05d}.npz"
_STALE_TEMPORARY = re.compile(r"^\.trajectory_\d+\.npz\.tmp-(\d+)$")
LAYOUT = (
    "one trajectory_NNNNN.npz per trajectory: velocity float32 (frames, 2, N, N) with channels (vx, vy) indexed "
    "[frame, channel, y, x]; vorticity float32 (frames, N, N); time float64 (frames,); grid x_j = 2*pi*j/N, "
    "y_i = 2*pi*i/N on the periodic box [0, 2*pi)^2"
)
EQUATIONS = (
    "d(omega)/dt + u.grad(omega) = viscosity * lap(omega) - drag * omega + F;  lap(psi) = -omega, u = d(psi)/dy, "
    "v = -d(psi)/dx; kolmogorov: body force (A sin(k_f y), 0), i.e. F = -A k_f cos(k_f y)"
)


@dataclass(frozen=True)
class FlowSettings:
    """Everything that decides the trajectories' contents (units: the box is 2π wide, time is dimensionless)."""

    size: int = 64  # grid points per side N (64 or 128 intended; any even number ≥ 8 works)
    frames: int = 8  # snapshots saved per trajectory
    seed: int = 0  # trajectory i draws from a generator seeded with (seed, i)
    viscosity: float = 1e-3  # ν > 0
    drag: float = 0.1  # linear drag α ≥ 0 (removes the energy that the inverse cascade piles up at large scales)
    forcing: str = "kolmogorov"  # kolmogorov | random | none
    forcing_amplitude: float = 1.0  # A: body-force amplitude (Kolmogorov) / matching RMS (random)
    forcing_wavenumber: int = 4  # k_f
    spinup_time: float = 10.0  # simulated time before the first saved frame
    frame_interval: float = 0.5  # simulated time between saved frames
    cfl: float = 0.5  # CFL number of the solver's steps
    initial_peak_wavenumber: float = 4.0  # k_p of the random initial field's spectrum
    initial_velocity_rms: float = 1.0  # RMS speed of the random initial field

    def __post_init__(self) -> None:
        check_grid_size(self.size)
        for name in ("frames", "forcing_wavenumber"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"seed must be a whole number ≥ 0, got {self.seed!r}")
        if self.forcing not in FORCINGS:
            raise UserError(f"unknown forcing {self.forcing!r}; valid values are {', '.join(FORCINGS)}")
        for name, low, inclusive in (
            ("viscosity", 0.0, False),
            ("drag", 0.0, True),
            ("forcing_amplitude", 0.0, True),
            ("spinup_time", 0.0, True),
            ("frame_interval", 0.0, False),
            ("initial_peak_wavenumber", 0.0, False),
            ("initial_velocity_rms", 0.0, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not (value >= low if inclusive else value > low):
                raise UserError(f"{name} must be a finite number {'≥' if inclusive else '>'} {low:g}, got {value!r}")
        if not (isinstance(self.cfl, (int, float)) and 0 < self.cfl <= 1.2):
            raise UserError(f"cfl must be a number in (0, 1.2], got {self.cfl!r}")
        if self.forcing_wavenumber >= self.size // 3:
            raise UserError(
                f"forcing_wavenumber {self.forcing_wavenumber} is beyond the resolved modes (< {self.size // 3}) of a "
                f"{self.size} × {self.size} grid; use a smaller wavenumber or a larger size"
            )


@dataclass(frozen=True)
class GenerationReport:
    """What ``generate_flows`` did: the trajectory files written now and those already present (skipped)."""

    out_dir: Path
    written: tuple[Path, ...]
    skipped: tuple[Path, ...]


def trajectory_seed(seed: int, index: int) -> int:
    """The 64-bit seed of trajectory ``index`` under ``seed`` (independent streams per pair)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def simulate_trajectory(
    settings: FlowSettings, index: int, *, device: torch.device | str = "cpu"
) -> dict[str, np.ndarray]:
    """Trajectory ``index`` of ``settings`` as the arrays of its .npz file (see the module docstring)."""
    seed = trajectory_seed(settings.seed, index)
    generator = torch.Generator().manual_seed(seed)
    initial = random_vorticity(
        settings.size,
        generator,
        peak_wavenumber=settings.initial_peak_wavenumber,
        velocity_rms=settings.initial_velocity_rms,
    )
    forcing = forcing_field(
        settings.forcing,
        settings.size,
        amplitude=settings.forcing_amplitude,
        wavenumber=settings.forcing_wavenumber,
        generator=generator,
    )
    solver = NavierStokes2D(
        settings.size,
        viscosity=settings.viscosity,
        drag=settings.drag,
        forcing=forcing,
        cfl=settings.cfl,
        device=device,
    )
    state = solver.advance(
        solver.to_spectral(initial.to(device)), settings.spinup_time, max_chunk=settings.frame_interval
    )
    velocity, vorticity = [], []
    for frame in range(settings.frames):
        if frame:
            state = solver.advance(state, settings.frame_interval, max_chunk=settings.frame_interval)
        velocity.append(solver.to_velocity(state).to(torch.float32).cpu().numpy())
        vorticity.append(solver.to_vorticity(state).to(torch.float32).cpu().numpy())
    return {
        "velocity": np.stack(velocity),
        "vorticity": np.stack(vorticity),
        "time": settings.spinup_time + settings.frame_interval * np.arange(settings.frames, dtype=np.float64),
        "seed": np.asarray(seed, dtype=np.uint64),
        "solver_steps": np.asarray(solver.steps_taken, dtype=np.int64),
        "max_solver_dt": np.asarray(solver.largest_dt, dtype=np.float64),
    }


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed .npz via a hidden temporary file and ``os.replace``."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub lets **arrays stand for allow_pickle
        handle.flush()
        os.fsync(handle.fileno())


def generate_flows(
    out_dir: str | os.PathLike[str],
    num: int,
    settings: FlowSettings = FlowSettings(),
    *,
    device: torch.device | str = "cpu",
    quiet: bool = True,
) -> GenerationReport:
    """Write ``num`` trajectories of ``settings`` to ``out_dir`` (created if needed), skipping those present.

    Refuses (UserError) a folder whose ``flows.json`` holds other settings, a file where the folder
    should be, and a folder that holds other files but no ``flows.json``. ``quiet=False`` shows a
    tqdm progress bar. The solver runs in float64 on ``device``; all random draws are on the CPU.
    """
    from tqdm.auto import tqdm

    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise UserError(f"num must be a whole number ≥ 1, got {num!r}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; out_dir must be a folder (new, or one written by generate_flows)")
    out.mkdir(parents=True, exist_ok=True)
    metadata_path = out / METADATA_NAME
    if metadata_path.exists():
        _check_same_settings(metadata_path, settings)
        num_recorded = max(num, int(read_json(metadata_path).get("num", 0)))
    else:
        if any(not entry.name.startswith(".") for entry in out.iterdir()):
            raise UserError(f"{out}: holds files but no {METADATA_NAME}; pick a new or empty folder for out_dir")
        num_recorded = num
    write_json_atomic(
        metadata_path,
        {
            "format": FORMAT,
            "num": num_recorded,
            "settings": config_to_dict(settings),
            "layout": LAYOUT,
            "equations": EQUATIONS,
        },
    )
    _remove_stale_temporaries(out)
    written, skipped = [], []
    with tqdm(total=num, disable=quiet, desc="flows", unit="trajectory") as progress:
        for index in range(num):
            path = out / TRAJECTORY_PATTERN.format(index=index)
            if path.exists():
                skipped.append(path)
            else:
                save_npz_atomic(path, simulate_trajectory(settings, index, device=device))
                written.append(path)
            progress.set_postfix(written=len(written), skipped=len(skipped), refresh=False)
            progress.update(1)
    return GenerationReport(out, tuple(written), tuple(skipped))


def _check_same_settings(metadata_path: Path, settings: FlowSettings) -> None:
    metadata = read_json(metadata_path)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT or "settings" not in metadata:
        raise UserError(f"{metadata_path}: not a {FORMAT} metadata file; pick a new folder for out_dir")
    saved = config_from_dict(FlowSettings, metadata["settings"], where=str(metadata_path))
    differences = [
        f"{field.name} {getattr(saved, field.name)!r} (now {getattr(settings, field.name)!r})"
        for field in dataclasses.fields(FlowSettings)
        if getattr(saved, field.name) != getattr(settings, field.name)
    ]
    if differences:
        raise UserError(
            f"{metadata_path.parent}: was generated with {', '.join(differences)}; "
            "use the same settings to resume, or another out_dir"
        )


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files that killed runs left behind (those whose process is gone)."""
    for entry in folder.iterdir():
        match = _STALE_TEMPORARY.match(entry.name)
        if match and not _process_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # left over by an earlier run that had our number
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
