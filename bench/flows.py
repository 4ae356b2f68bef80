"""Flows side by side: phase–amplitude Kuramoto diffusion against Euclidean VP diffusion of (v_x, v_y).

    python bench/flows.py --budget small [--data DIR] [--methods phase-amplitude euclidean] [--seed 0]

Generates 2-D Kolmogorov-forced turbulence with the project's pseudo-spectral solver (or reads --data, any
``flows:`` folder), trains both methods with the same UNet, the same examples (steps × batch), the same
optimiser settings and seed, samples with the reverse SDE and the probability-flow ODE (Heun) at NFE = T,
and compares the samples with held-out fields: energy-spectrum log-MSE, spectral-slope difference in the
inertial range, vorticity W1 and relative divergence (``metrics.flows.evaluate_flows``), beside a
real-vs-real floor row (two disjoint held-out sets).

Budgets:
tiny   32 px, 20 steps, T = 20, 16 samples: seconds; checks the script end to end.
small  64 px, 'tiny' UNet preset, 1,500 steps of 16 at T = 100, 128 samples: about an hour and a half
       on the 2-core CPU machine with OMP_NUM_THREADS=1 (the issue's bound is two hours).
paper  64 px, 'small' preset, 50,000 steps of 64 at T = 1,000, 2,000 samples: GPU only.

Writes bench/results/flows.json (after every model) and, in --figures, vorticity/arrow grids of real and
generated fields, their energy spectra on one log–log plot, and vorticity histograms.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, train_quietly, write_json
from kuramoto_diffusion.data import open_flow_source
from kuramoto_diffusion.data.flow_generation import FlowSettings, generate_flows
from kuramoto_diffusion.metrics.flows import evaluate_flows
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, PhaseAmplitudeConfig, ProcessConfig
from kuramoto_diffusion.settings import DataConfig, FlowNormalisation, RunConfig, TrainConfig, flow_model_config
from kuramoto_diffusion.training import resolve_device
from kuramoto_diffusion.viz import save_image_atomic
from kuramoto_diffusion.viz_flows import energy_spectra_plot, flow_field_grid, vorticity_histogram_plot

METHODS = ("phase-amplitude", "euclidean")
COLUMNS = ["method", "sampler", "nfe", "spectrum_log_mse", "slope_difference", "vorticity_w1", "divergence_fake",
           "clipped_fraction", "train_s", "sample_s"]


@dataclasses.dataclass(frozen=True)
class Budget:
    size: int
    trajectories: int
    frames: int
    preset: str
    steps: int  # T
    train_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    samples: int
    sample_batch: int
    sweeps: tuple[tuple[str, int], ...]  # (sampler, NFE); NFE 0 means T


BUDGETS = {
    "tiny": Budget(32, 8, 8, "tiny", 20, 20, 8, 1e-3, 5, 0.9, 16, 16, (("sde", 0), ("ode-heun", 0))),
    "small": Budget(64, 64, 16, "tiny", 100, 1500, 16, 5e-4, 100, 0.995, 128, 64, (("sde", 0), ("ode-heun", 0))),
    "paper": Budget(64, 512, 32, "small", 1000, 50_000, 64, 2e-4, 1000, 0.9999, 2000, 250,
                    (("sde", 0), ("sde", 100), ("ode-heun", 100))),
}


def process_for(method: str, steps: int) -> ProcessConfig:
    return PhaseAmplitudeConfig(steps=steps) if method == "phase-amplitude" else EuclideanConfig(steps=steps)


def train(data: str, method: str, budget: Budget, seed: int, device: torch.device) -> tuple[DiffusionModel, float]:
    source = open_flow_source(data, split="train", seed=seed)
    normalisation = FlowNormalisation.measure(source.sample_batch(512, torch.Generator().manual_seed(seed)))
    config = RunConfig(
        model=flow_model_config(process_for(method, budget.steps), source.size, normalisation, budget.preset),
        data=DataConfig(source=data, image_size=source.size, channels=2, flip=False, seed=seed),
        training=TrainConfig(train_steps=budget.train_steps, batch_size=budget.batch_size, lr=budget.lr,
                             warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay,
                             checkpoint_every=10**9, sample_every=0, log_every=max(1, budget.train_steps // 20),
                             seed=seed),
    )
    return train_quietly(config, source, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--data", default=None, help="a flows folder (default: generate one for the budget)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "flows.json")
    parser.add_argument("--figures", type=Path, default=RESULTS / "flows")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        generate_s = 0.0
        if data is None:
            start = time.perf_counter()
            settings = FlowSettings(size=budget.size, frames=budget.frames, seed=args.seed)
            generate_flows(Path(scratch) / "flows", budget.trajectories, settings, quiet=True)
            generate_s = time.perf_counter() - start
            data = str(Path(scratch) / "flows")
        run(f"flows:{data}", budget, args, device, generate_s)


def run(data: str, budget: Budget, args: argparse.Namespace, device: torch.device, generate_s: float) -> None:
    held_out = open_flow_source(data, split="val", seed=args.seed, val_fraction=0.25)
    real = held_out.sample_batch(budget.samples, torch.Generator().manual_seed(50_000 + args.seed))
    second = held_out.sample_batch(budget.samples, torch.Generator().manual_seed(60_000 + args.seed))
    rows: list[dict] = [{"method": "real", "sampler": "-", "nfe": 0, **evaluate_flows(real, second), "clipped_fraction": 0.0}]
    fields = {"real (held out)": real}

    def save(complete: bool) -> None:
        payload = {"command": f"python bench/flows.py --budget {args.budget}", "complete": complete,
                   "settings": dataclasses.asdict(budget), "seed": args.seed, "data": data,
                   "generate_s": generate_s, "methods": args.methods, "rows": rows}
        write_json(args.out, payload, quiet=not complete)

    for method in args.methods:
        model, train_s = train(data, method, budget, args.seed, device)
        for sampler, nfe in budget.sweeps:
            start = time.perf_counter()
            result = model.sample(budget.samples, sampler=sampler, nfe=nfe or budget.steps,
                                  generator=torch.Generator().manual_seed(args.seed + 1), batch_size=budget.sample_batch)
            velocity, clipped = model.decode(result.states)
            velocity = velocity.cpu()
            sample_s = time.perf_counter() - start
            row = {"method": method, "sampler": sampler, "nfe": result.function_evaluations,
                   **evaluate_flows(real, velocity), "clipped_fraction": clipped / velocity[:, :1].numel(),
                   "train_s": train_s, "sample_s": sample_s}
            rows.append(row)
            if sampler == "sde" and nfe == 0:
                fields[f"{method} SDE {row['nfe']}"] = velocity
            print(f"{method} {sampler} NFE {row['nfe']}: spectrum {row['spectrum_log_mse']:.3f} "
                  f"vorticity W1 {row['vorticity_w1']:.3f} ({sample_s:.0f} s)", flush=True)
        save(False)
    args.figures.mkdir(parents=True, exist_ok=True)
    save_image_atomic(flow_field_grid(fields, columns=4), args.figures / "fields.png")
    save_image_atomic(energy_spectra_plot(fields), args.figures / "spectra.png")
    save_image_atomic(vorticity_histogram_plot(fields), args.figures / "vorticity.png")
    save(True)
    print_table(rows, [c for c in COLUMNS if any(c in row for row in rows)])


if __name__ == "__main__":
    main()
