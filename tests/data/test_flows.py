"""Flow data: the Navier–Stokes solver, the trajectory generator, FlowSource and the CLI round trip."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import shared_cli
from kuramoto_diffusion.codecs import phase_amplitude_to_velocity, velocity_to_phase_amplitude
from kuramoto_diffusion.data.flow_generation import FlowSettings, generate_flows
from kuramoto_diffusion.data.flows import FlowSource
from kuramoto_diffusion.data.navier_stokes import (
    NavierStokes2D,
    divergence,
    enstrophy,
    forcing_field,
    grid_coordinates,
    kinetic_energy,
    random_vorticity,
    velocity_from_vorticity,
    vorticity_from_velocity,
)
from kuramoto_diffusion.errors import UserError

# Small, fast settings: 32 × 32 grid, short spin-up.
QUICK = FlowSettings(size=32, frames=3, spinup_time=0.5, frame_interval=0.25)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


# ----- the solver -----------------------------------------------------------------------------------------
def test_taylor_green_vortex_decays_at_the_viscous_rate():
    # ω = 2 sin x sin y (ψ = sin x sin y, u = sin x cos y, v = −cos x sin y): the |k|² = 2 mode, an exact
    # solution whose advection vanishes, so ω(t) = ω(0) exp(−(2ν + α) t).
    x, y = grid_coordinates(32)
    initial = 2.0 * torch.sin(x) * torch.sin(y)
    viscosity, drag, duration = 0.05, 0.1, 1.0
    solver = NavierStokes2D(32, viscosity=viscosity, drag=drag)
    state = solver.advance(solver.to_spectral(initial), duration, max_dt=0.02)
    expected = initial * math.exp(-(2.0 * viscosity + drag) * duration)
    assert relative_error(solver.to_vorticity(state), expected) < 1e-8
    velocity = solver.to_velocity(state)
    assert (
        relative_error(velocity[0], torch.sin(x) * torch.cos(y) * math.exp(-(2 * viscosity + drag) * duration)) < 1e-8
    )


def test_kolmogorov_forcing_approaches_the_laminar_profile():
    # Body force (A sin(k y), 0) from rest: u(t) = A sin(k y) (1 − e^{−λt}) / λ, v = 0, λ = ν k² + α (signs end to end).
    amplitude, wavenumber, viscosity, drag, duration = 0.7, 3, 0.02, 0.1, 2.0
    solver = NavierStokes2D(
        32,
        viscosity=viscosity,
        drag=drag,
        forcing=forcing_field("kolmogorov", 32, amplitude=amplitude, wavenumber=wavenumber),
    )
    state = solver.advance(solver.to_spectral(torch.zeros(32, 32)), duration, max_dt=0.02)
    rate = viscosity * wavenumber**2 + drag
    _, y = grid_coordinates(32)
    expected_u = amplitude * torch.sin(wavenumber * y) * (1.0 - math.exp(-rate * duration)) / rate
    velocity = solver.to_velocity(state)
    assert relative_error(velocity[0], expected_u) < 1e-8
    assert velocity[1].abs().max() < 1e-12


def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity():
    vorticity = random_vorticity(32, torch.Generator().manual_seed(1), batch_shape=(3,))
    velocity = velocity_from_vorticity(vorticity)
    assert velocity.shape == (3, 2, 32, 32)
    scale = velocity.abs().max() * 32  # |∇u| ≲ |u| k_max
    assert divergence(velocity).abs().max() < 1e-13 * scale
    assert relative_error(vorticity_from_velocity(velocity), vorticity) < 1e-12
    assert abs(vorticity.mean()) < 1e-14
    assert torch.allclose(kinetic_energy(velocity), torch.full((3,), 0.5, dtype=torch.float64))  # RMS speed 1


def test_energy_and_enstrophy_are_conserved_without_viscosity_and_forcing():
    # The 2/3-rule truncation is a Galerkin system that conserves both exactly; what is left is the
    # RK4 time error, O(dt⁴): measured about 1e-8 (energy) and 6e-7 (enstrophy) at CFL 0.5.
    solver = NavierStokes2D(64, viscosity=0.0, cfl=0.5)
    state = solver.to_spectral(random_vorticity(64, torch.Generator().manual_seed(0)))
    energy, enstrophy_before = kinetic_energy(solver.to_velocity(state)), enstrophy(solver.to_vorticity(state))
    state = solver.advance(state, 1.0, max_chunk=0.25)
    assert solver.steps_taken > 50
    assert abs(kinetic_energy(solver.to_velocity(state)) / energy - 1) < 1e-6
    assert abs(enstrophy(solver.to_vorticity(state)) / enstrophy_before - 1) < 1e-5
    assert divergence(solver.to_velocity(state)).abs().max() < 1e-11


def test_random_forcing_is_large_scale_and_matches_the_kolmogorov_rms():
    forcing = forcing_field("random", 32, amplitude=1.0, wavenumber=4, generator=torch.Generator().manual_seed(0))
    assert forcing.square().mean().sqrt().item() == pytest.approx(4 / math.sqrt(2))
    spectrum = torch.fft.rfft2(forcing).abs()
    ky = torch.fft.fftfreq(32, 1 / 32)[:, None]
    kx = torch.fft.rfftfreq(32, 1 / 32)[None, :]
    wavenumber = (kx**2 + ky**2).sqrt()
    assert spectrum[(wavenumber - 4).abs() > 1].max() < 1e-9 * spectrum.max()


def test_solver_blow_up_is_a_user_error():
    solver = NavierStokes2D(16, viscosity=0.0, cfl=0.5)
    state = solver.to_spectral(random_vorticity(16, torch.Generator().manual_seed(0), velocity_rms=1.0))
    with pytest.raises(UserError, match="blew up"):
        solver.advance(state * float("nan"), 0.1)


# ----- phase and amplitude --------------------------------------------------------------------------------
def test_phase_amplitude_matches_a_brute_force_loop_and_inverts():
    velocity = torch.randn(2, 2, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    velocity[0, :, 0, 0] = 0.0  # a stagnation point
    phase, log_amplitude = velocity_to_phase_amplitude(velocity, eps=1e-4)
    assert phase.shape == log_amplitude.shape == (2, 1, 5, 4)
    for b in range(2):
        for i in range(5):
            for j in range(4):
                vx, vy = float(velocity[b, 0, i, j]), float(velocity[b, 1, i, j])
                assert float(phase[b, 0, i, j]) == pytest.approx(math.atan2(vy, vx), abs=1e-12)
                assert float(log_amplitude[b, 0, i, j]) == pytest.approx(math.log(math.hypot(vx, vy) + 1e-4), abs=1e-12)
    assert torch.allclose(phase_amplitude_to_velocity(phase, log_amplitude, eps=1e-4), velocity, atol=1e-12)


# ----- the generator ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flows") / "data"
    report = generate_flows(out, 3, QUICK)
    assert len(report.written) == 3 and not report.skipped
    return out


def test_generator_writes_documented_files(generated):
    names = sorted(p.name for p in generated.iterdir())
    assert names == ["flows.json", "trajectory_00000.npz", "trajectory_00001.npz", "trajectory_00002.npz"]
    with np.load(generated / "trajectory_00001.npz") as archive:
        velocity, vorticity, time = archive["velocity"], archive["vorticity"], archive["time"]
        assert int(archive["solver_steps"]) > 0 and 0 < float(archive["max_solver_dt"]) <= 0.25
    assert velocity.dtype == np.float32 and velocity.shape == (3, 2, 32, 32)
    assert vorticity.dtype == np.float32 and vorticity.shape == (3, 32, 32)
    assert np.allclose(time, [0.5, 0.75, 1.0])
    assert np.isfinite(velocity).all() and velocity.std() > 0.1
    # The stored velocity and vorticity agree (curl), and successive frames differ.
    curl = vorticity_from_velocity(torch.from_numpy(velocity).double())
    assert relative_error(curl, torch.from_numpy(vorticity).double()) < 1e-5
    assert not np.allclose(velocity[0], velocity[1])


def test_generator_is_deterministic_and_resumes(generated, tmp_path):
    again = tmp_path / "again"
    generate_flows(again, 2, QUICK)
    for name in ("trajectory_00000.npz", "trajectory_00001.npz"):
        with np.load(generated / name) as first, np.load(again / name) as second:
            assert np.array_equal(first["velocity"], second["velocity"])
    with np.load(generated / "trajectory_00000.npz") as first, np.load(generated / "trajectory_00001.npz") as second:
        assert not np.allclose(first["velocity"], second["velocity"])  # trajectories differ from each other
    # Resume: a present file is skipped untouched; a missing one is written, equal to the one made in one go.
    (again / "trajectory_00001.npz").unlink()
    stale = again / ".trajectory_00002.npz.tmp-999999999"  # left by a killed run whose process is gone
    stale.write_bytes(b"partial")
    before = os.stat(again / "trajectory_00000.npz").st_mtime_ns
    report = generate_flows(again, 3, QUICK)
    assert [p.name for p in report.written] == ["trajectory_00001.npz", "trajectory_00002.npz"]
    assert [p.name for p in report.skipped] == ["trajectory_00000.npz"]
    assert os.stat(again / "trajectory_00000.npz").st_mtime_ns == before and not stale.exists()
    for name in ("trajectory_00001.npz", "trajectory_00002.npz"):
        with np.load(generated / name) as first, np.load(again / name) as second:
            assert np.array_equal(first["velocity"], second["velocity"])
    with pytest.raises(UserError, match=r"viscosity 0\.001 \(now 0\.002\)"):
        generate_flows(again, 3, dataclasses.replace(QUICK, viscosity=2e-3))


def test_generator_refuses_bad_settings_and_folders(tmp_path):
    with pytest.raises(UserError, match="even"):
        FlowSettings(size=33)
    with pytest.raises(UserError, match="forcing_wavenumber"):
        FlowSettings(size=16, forcing_wavenumber=6)
    with pytest.raises(UserError, match="unknown forcing"):
        FlowSettings(forcing="gusty")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files but no flows.json"):
        generate_flows(tmp_path, 1, QUICK)
    with pytest.raises(UserError, match="is a file"):
        generate_flows(tmp_path / "notes.txt", 1, QUICK)


# ----- the loader ------------------------------------------------------------------------------------------
def test_flow_source_reads_the_generator_folder(generated):
    source = FlowSource(generated, split="all")
    assert len(source) == 3 and source.size == 32 and source.channels == 2 and source.frame_counts == [3, 3, 3]
    assert source.metadata["settings"]["viscosity"] == 1e-3
    batch = source.sample_batch(5, torch.Generator().manual_seed(0))
    assert batch.dtype == torch.float32 and batch.shape == (5, 2, 32, 32)
    assert torch.equal(batch, source.sample_batch(5, torch.Generator().manual_seed(0)))
    assert torch.equal(source.fixed_batch(4, seed=1), source.fixed_batch(4, seed=1))
    sequences = source.sample_sequences(4, 3, torch.Generator().manual_seed(2))
    assert sequences.shape == (4, 3, 2, 32, 32)
    # Every sequence is 3 consecutive frames of one stored trajectory.
    stored = [source.trajectory(i) for i in range(3)]
    assert all(any(torch.equal(sequence, frames) for frames in stored) for sequence in sequences)
    with pytest.raises(UserError, match="only 3"):
        source.sample_sequences(1, 4, torch.Generator())
    train, val = (
        FlowSource(generated, split="train", val_fraction=0.34),
        FlowSource(generated, split="val", val_fraction=0.34),
    )
    assert len(train) == 2 and len(val) == 1
    train_data = {train.trajectory(i).numpy().tobytes() for i in range(2)}
    assert val.trajectory(0).numpy().tobytes() not in train_data
    single = FlowSource(generated / "trajectory_00002.npz", split="all")
    assert torch.equal(single.trajectory(0), stored[2])


def test_flow_source_bad_input(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        FlowSource(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="folder is empty"):
        FlowSource(empty)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no .npz or .h5"):
        FlowSource(empty)

    def folder_with(name: str, **arrays: np.ndarray) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        np.savez(folder / "a.npz", **arrays)
        return folder

    good = np.zeros((2, 2, 8, 8), dtype=np.float32)
    with pytest.raises(UserError, match=r"a\.npz: has no 'velocity' array \(found vorticity\)"):
        FlowSource(folder_with("novelocity", vorticity=np.zeros((2, 8, 8))), split="all")
    nan = good.copy()
    nan[1, 0, 3, 3] = np.nan
    with pytest.raises(UserError, match=r"a\.npz: 'velocity' holds NaN .*frame 1"):
        FlowSource(folder_with("nan", velocity=nan), split="all")
    with pytest.raises(UserError, match="8 × 6"):
        FlowSource(folder_with("nonsquare", velocity=np.zeros((2, 2, 8, 6), dtype=np.float32)), split="all")
    with pytest.raises(UserError, match=r"shape \(2, 3, 8, 8\)"):
        FlowSource(folder_with("channels", velocity=np.zeros((2, 3, 8, 8), dtype=np.float32)), split="all")
    mixed = folder_with("mixed", velocity=good)
    np.savez(mixed / "b.npz", velocity=np.zeros((2, 2, 16, 16), dtype=np.float32))
    with pytest.raises(UserError, match=r"8 × 8 in .*a\.npz and 16 × 16 in .*b\.npz"):
        FlowSource(mixed, split="all")
    with pytest.raises(UserError, match="nothing for validation"):
        FlowSource(folder_with("one", velocity=good), split="val")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="broken.npz: not a readable .npz"):
        FlowSource(tmp_path / "broken.npz")


# ----- PDEArena HDF5 ---------------------------------------------------------------------------------------
def write_pdearena_file(path: Path, vx: np.ndarray, vy: np.ndarray, group: str = "train", with_vy: bool = True) -> None:
    import h5py  # the "flows" extra, installed by make install

    samples, times, nx, ny = vx.shape
    with h5py.File(path, "w") as handle:
        data = handle.create_group(group)
        data.create_dataset("u", data=np.abs(vx))
        data.create_dataset("vx", data=vx)
        if with_vy:
            data.create_dataset("vy", data=vy)
        data.create_dataset("t", data=np.tile(np.linspace(18, 102, times), (samples, 1)))
        data.create_dataset("x", data=np.tile(np.linspace(0, 32, nx), (samples, 1)))
        data.create_dataset("y", data=np.tile(np.linspace(0, 32, ny), (samples, 1)))


def test_flow_source_reads_pdearena_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    vx, vy = rng.normal(size=(4, 5, 8, 8)), rng.normal(size=(4, 5, 8, 8))
    path = tmp_path / "NavierStokes2D_train_1_0.50000_4.h5"
    write_pdearena_file(path, vx, vy)
    source = FlowSource(path, split="all")
    assert len(source) == 4 and source.size == 8 and source.frame_counts == [5] * 4
    frames = source.trajectory(2).numpy()
    # PDEArena arrays are [sample, t, x, y]; ours are [t, channel, y, x].
    assert np.allclose(frames[3, 0, 1, 6], vx[2, 3, 6, 1]) and np.allclose(frames[3, 1, 1, 6], vy[2, 3, 6, 1])
    batch = source.sample_sequences(3, 2, torch.Generator().manual_seed(0))
    assert batch.shape == (3, 2, 2, 8, 8) and batch.dtype == torch.float32
    assert torch.equal(batch, source.sample_sequences(3, 2, torch.Generator().manual_seed(0)))
    assert len(FlowSource(tmp_path, split="train", val_fraction=0.25)) == 3
    source.close()

    valid = tmp_path / "NavierStokes2D_valid_1_0.50000_4.h5"
    write_pdearena_file(valid, vx, vy, group="valid")
    with pytest.raises(UserError, match="holds groups train, valid; choose one"):
        FlowSource(tmp_path)
    with pytest.raises(UserError, match="has no group 'test'"):
        FlowSource(valid, group="test")
    assert len(FlowSource(valid, group="valid", split="all")) == 4


def test_flow_source_hdf5_bad_input(tmp_path, monkeypatch):
    vx = np.zeros((2, 3, 8, 8))
    write_pdearena_file(tmp_path / "novy.h5", vx, vx, with_vy=False)
    with pytest.raises(UserError, match=r"novy\.h5: group 'train' lacks dataset\(s\) vy"):
        FlowSource(tmp_path / "novy.h5", split="all")
    write_pdearena_file(tmp_path / "rect.h5", np.zeros((2, 3, 8, 6)), np.zeros((2, 3, 8, 6)))
    with pytest.raises(UserError, match="8 × 6"):
        FlowSource(tmp_path / "rect.h5", split="all")
    nan = np.zeros((1, 3, 8, 8))
    nan[0, 1, 2, 2] = np.nan
    write_pdearena_file(tmp_path / "nan.h5", nan, np.zeros_like(nan))
    source = FlowSource(tmp_path / "nan.h5", split="all")
    with pytest.raises(UserError, match=r"nan\.h5 \(group 'train', sample 0\): frames 0-2 hold NaN"):
        source.trajectory(0)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="junk.h5: not a readable HDF5"):
        FlowSource(tmp_path / "junk.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(UserError, match="pip install h5py"):
        FlowSource(tmp_path / "rect.h5")


# ----- the command line ------------------------------------------------------------------------------------
def test_cli_generate_round_trip(tmp_path):
    out = tmp_path / "flows"

    def run(*args: str) -> subprocess.CompletedProcess:
        return shared_cli().run(["flows", "generate", "--out", str(out), *args], timeout=120, cwd=Path.cwd())

    common = (
        "--num",
        "2",
        "--size",
        "32",
        "--frames",
        "3",
        "--spinup-time",
        "0.5",
        "--frame-interval",
        "0.25",
        "--seed",
        "0",
    )
    result = run(*common, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    source = FlowSource(out, split="all")
    assert len(source) == 2 and source.trajectory(0).shape == (3, 2, 32, 32)
    # The CLI and the Python API make the same files.
    generate_flows(tmp_path / "api", 1, QUICK)
    with (
        np.load(out / "trajectory_00000.npz") as cli_file,
        np.load(tmp_path / "api" / "trajectory_00000.npz") as api_file,
    ):
        assert np.array_equal(cli_file["velocity"], api_file["velocity"])
    again = run(*common)
    assert again.returncode == 0 and "wrote 0 trajectory file(s)" in again.stdout and "2 already there" in again.stdout
    bad = run("--num", "2", "--size", "31")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "even" in bad.stderr.strip().splitlines()[-1]
