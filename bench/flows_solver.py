"""Cost of the Navier–Stokes data generator (kuramoto_diffusion.data.navier_stokes / flow_generation).

    OMP_NUM_THREADS=1 python bench/flows_solver.py [--sizes 64 128] [--num 16] [--frames 8] [--out flows_solver.json]

Reports, per grid size N: the time of one integrating-factor RK4 step (float64, one trajectory),
the time of one reference FFT of the same size measured in the same run (rfft2 + irfft2 of an
N × N float64 field), and their ratio (a step does 4 × (one batched irfft2 of 4 fields + one
rfft2), so the ratio is ≈ 10–20 when FFTs dominate and higher when per-call overhead does).
Then the wall time of ``generate_flows`` for --num trajectories × --frames frames at the
first size with the default settings (spin-up 10, frame interval 0.5, Kolmogorov forcing).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from common import print_table, time_call, write_json
from kuramoto_diffusion.data.flow_generation import FlowSettings, generate_flows
from kuramoto_diffusion.data.navier_stokes import NavierStokes2D, forcing_field, random_vorticity


def step_timing(size: int, repeat: int) -> dict[str, object]:
    solver = NavierStokes2D(size, viscosity=1e-3, drag=0.1, forcing=forcing_field("kolmogorov", size))
    state = solver.to_spectral(random_vorticity(size, torch.Generator().manual_seed(0)))
    dt = solver.stable_dt(state)
    step = time_call(lambda: solver.step(state, dt), repeat=repeat, warmup=3)
    field = torch.randn(size, size, dtype=torch.float64)
    fft = time_call(lambda: torch.fft.irfft2(torch.fft.rfft2(field), s=(size, size)), repeat=repeat, warmup=3)
    return {
        "size": size,
        "step_ms": step * 1e3,
        "fft_pair_ms": fft * 1e3,
        "step_per_fft_pair": step / fft,
        "cfl_dt": dt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", default="flows_solver.json")
    args = parser.parse_args()
    rows = [step_timing(size, args.repeat) for size in args.sizes]
    print_table(rows, ["size", "step_ms", "fft_pair_ms", "step_per_fft_pair", "cfl_dt"])
    settings = FlowSettings(size=args.sizes[0], frames=args.frames)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate_flows(folder, args.num, settings)
        seconds = time.perf_counter() - start
    generation = {
        "size": settings.size,
        "num": args.num,
        "frames": args.frames,
        "seconds": seconds,
        "seconds_per_trajectory": seconds / args.num,
    }
    print_table([generation], list(generation))
    write_json(args.out, {"steps": rows, "generation": generation, "settings": settings.__dict__})


if __name__ == "__main__":
    main()
