"""Flows side by side: phase–amplitude Kuramoto diffusion against Euclidean VP diffusion of (v_x, v_y).

    python bench/flows.py --budget small [--data DIR] [--methods phase-amplitude euclidean] [--seed 0]
    python bench/flows.py --merge A.json B.json    # join runs of single methods (e.g. run in parallel)

Generates 2-D Kolmogorov-forced turbulence with the project's pseudo-spectral solver (or reads --data, any
``flows:`` folder), trains both methods with the same UNet, the same examples (steps × batch), the same
optimiser settings and seed, samples with the reverse SDE and the probability-flow ODE (Heun) at NFE = T,
and compares the samples with held-out fields: energy-spectrum log-MSE, spectral-slope difference in the
inertial range, vorticity W1 and relative divergence (``metrics.flows.evaluate_flows``), beside a
real-vs-real floor row (two disjoint held-out sets). Then it trains each method again as a forecaster on
3 previous frames and rolls out held-out trajectories (guidance w = 0, 1, 2), reporting the relative L2
error per frame against the solver, beside persistence (the last context frame repeated).

Budgets:
tiny   32 px, 20 steps, T = 20, 16 samples: seconds; checks the script end to end.
small  64 px, 'tiny' UNet preset, 1,500 steps of 16 at T = 100, 128 samples: about an hour and a half
       on the 2-core CPU machine with OMP_NUM_THREADS=1 (the issue's bound is two hours).
networks  32 px, 'tiny' preset, 1,500 steps of 16, no forecasting: for --methods phase-amplitude-joint
       phase-amplitude-split (one network for both fields against one per field); 8–14 min per model.
paper  64 px, 'small' preset, 50,000 steps of 64 at T = 1,000, 2,000 samples: GPU only.

Writes bench/results/flows.json (after every model) and, in --figures, vorticity/arrow grids of real and
generated fields, their energy spectra on one log–log plot, and vorticity histograms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, print_table, train_quietly, write_json
from kuramoto_diffusion.config import DataConfig, FlowNormalisation, RunConfig, TrainConfig, flow_model_config
from kuramoto_diffusion.data import open_flow_source
from kuramoto_diffusion.data.flow_generation import FlowSettings, generate_flows
from kuramoto_diffusion.metrics.flows import evaluate_flows, forecast_error
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, PhaseAmplitudeConfig, ProcessConfig
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.viz.flows import energy_spectra_plot, flow_field_grid, vorticity_histogram_plot
from kuramoto_diffusion.viz.images import save_image_atomic

# phase-amplitude-split: one network per field (the default of flow models); -joint: one network for both
METHODS = ("phase-amplitude-split", "phase-amplitude-joint", "euclidean")
CONTEXT_FRAMES = 3  # SPEC §7
VAL_FRACTION = 0.25  # held-out trajectories: the reference sets and the forecasting cases
COLUMNS = [
    "method",
    "sampler",
    "nfe",
    "spectrum_log_mse",
    "slope_difference",
    "vorticity_w1",
    "divergence_fake",
    "clipped_fraction",
    "train_s",
    "sample_s",
]


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
    forecast_train_steps: int  # forecasting models (3 context frames); 0: no forecasting part
    rollout: int  # frames forecast autoregressively after the context
    forecast_cases: int  # held-out trajectories whose rollouts are scored (2 rollouts each)


BUDGETS = {
    "tiny": Budget(32, 8, 8, "tiny", 20, 20, 8, 1e-3, 5, 0.9, 16, 16, (("sde", 0), ("ode-heun", 0)), 20, 2, 2),
    "small": Budget(
        64, 64, 16, "tiny", 100, 1500, 16, 5e-4, 100, 0.995, 128, 64, (("sde", 0), ("ode-heun", 0)), 1500, 4, 8
    ),
    # one network for both fields against one per field (SPEC §7), at 32 px and without forecasting
    "networks": Budget(
        32, 64, 16, "tiny", 100, 1500, 16, 5e-4, 100, 0.995, 128, 64, (("sde", 0), ("ode-heun", 0)), 0, 0, 0
    ),
    "paper": Budget(
        64,
        512,
        32,
        "small",
        1000,
        50_000,
        64,
        2e-4,
        1000,
        0.9999,
        2000,
        250,
        (("sde", 0), ("sde", 100), ("ode-heun", 100)),
        50_000,
        8,
        64,
    ),
}


def process_for(method: str, steps: int) -> ProcessConfig:
    return PhaseAmplitudeConfig(steps=steps) if method.startswith("phase-amplitude") else EuclideanConfig(steps=steps)


def train(
    data: str, method: str, budget: Budget, seed: int, device: torch.device, context_frames: int = 0
) -> tuple[DiffusionModel, float]:
    source = open_flow_source(data, split="train", seed=seed, val_fraction=VAL_FRACTION)
    normalisation = FlowNormalisation.measure(source.sample_batch(512, torch.Generator().manual_seed(seed)))
    steps = budget.forecast_train_steps if context_frames else budget.train_steps
    config = RunConfig(
        model=flow_model_config(
            process_for(method, budget.steps),
            source.size,
            normalisation,
            budget.preset,
            context_frames=context_frames,
            networks="joint" if method != "phase-amplitude-split" else "split",
        ),
        data=DataConfig(
            source=data, image_size=source.size, channels=2, flip=False, seed=seed, val_fraction=VAL_FRACTION
        ),
        training=TrainConfig(
            train_steps=steps,
            batch_size=budget.batch_size,
            lr=budget.lr,
            warmup_steps=budget.warmup_steps,
            ema_decay=budget.ema_decay,
            checkpoint_every=10**9,
            sample_every=0,
            log_every=max(1, steps // 20),
            seed=seed,
        ),
    )
    return train_quietly(config, source, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--data", default=None, help="a flows folder (default: generate one for the budget)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["phase-amplitude-split", "euclidean"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "flows.json")
    parser.add_argument("--figures", type=Path, default=RESULTS / "flows")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="only merge these result files (runs of single --methods, e.g. in parallel), draw the "
        "figures from their saved fields, write --out and print the tables",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out, args.figures)
        return
    budget = BUDGETS[args.budget]
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        generate_s = 0.0
        if data is None:
            start = time.perf_counter()
            # Frames 0.25 time units apart: the next frame is predictable (at 0.5, persistence is already 67 % off).
            settings = FlowSettings(size=budget.size, frames=budget.frames, seed=args.seed, frame_interval=0.25)
            generate_flows(Path(scratch) / "flows", budget.trajectories, settings, quiet=True)
            generate_s = time.perf_counter() - start
            data = str(Path(scratch) / "flows")
        run(f"flows:{data}", budget, args, device, generate_s)


def run(data: str, budget: Budget, args: argparse.Namespace, device: torch.device, generate_s: float) -> None:
    held_out = open_flow_source(data, split="val", seed=args.seed, val_fraction=VAL_FRACTION)
    real = held_out.sample_batch(budget.samples, torch.Generator().manual_seed(50_000 + args.seed))
    second = held_out.sample_batch(budget.samples, torch.Generator().manual_seed(60_000 + args.seed))
    rows: list[dict] = [
        {"method": "real", "sampler": "-", "nfe": 0, **evaluate_flows(real, second), "clipped_fraction": 0.0}
    ]
    fields = {"real (held out)": real}
    forecasts: list[dict] = []
    cases = [held_out.trajectory(i) for i in range(min(budget.forecast_cases, len(held_out)))]
    if budget.forecast_train_steps:
        # Persistence (the last context frame, repeated) is the reference every forecast has to beat.
        persistence = [
            forecast_error(
                case[CONTEXT_FRAMES - 1][None, None].expand(1, budget.rollout, -1, -1, -1),
                case[CONTEXT_FRAMES : CONTEXT_FRAMES + budget.rollout],
            )
            for case in cases
        ]
        forecasts.append({"method": "persistence", "guidance": "-", "relative_error": mean_curve(persistence)})

    def save(complete: bool) -> None:
        payload = {
            "command": f"python bench/flows.py --budget {args.budget}",
            "complete": complete,
            "settings": dataclasses.asdict(budget),
            "seed": args.seed,
            "data": data,
            "generate_s": generate_s,
            "methods": args.methods,
            "rows": rows,
            "forecasts": forecasts,
        }
        write_json(args.out, payload, quiet=not complete)

    for method in args.methods:
        model, train_s = train(data, method, budget, args.seed, device)
        for sampler, nfe in budget.sweeps:
            start = time.perf_counter()
            result = model.sample(
                budget.samples,
                sampler=sampler,
                nfe=nfe or budget.steps,
                generator=torch.Generator().manual_seed(args.seed + 1),
                batch_size=budget.sample_batch,
            )
            velocity, clipped = model.decode(result.states)
            velocity = velocity.cpu()
            sample_s = time.perf_counter() - start
            row = {
                "method": method,
                "sampler": sampler,
                "nfe": result.function_evaluations,
                **evaluate_flows(real, velocity),
                "clipped_fraction": clipped / velocity[:, :1].numel(),
                "train_s": train_s,
                "sample_s": sample_s,
            }
            rows.append(row)
            if sampler == "sde" and nfe == 0:
                fields[f"{method} SDE {row['nfe']}"] = velocity
            print(
                f"{method} {sampler} NFE {row['nfe']}: spectrum {row['spectrum_log_mse']:.3f} "
                f"vorticity W1 {row['vorticity_w1']:.3f} ({sample_s:.0f} s)",
                flush=True,
            )
        save(False)
        if budget.forecast_train_steps:
            forecaster, train_s = train(data, method, budget, args.seed, device, context_frames=CONTEXT_FRAMES)
            for guidance in (0.0, 1.0, 2.0):  # w = 0 ignores the context: what the context is worth
                start = time.perf_counter()
                errors = []
                for index, case in enumerate(cases):
                    rollout = forecaster.rollout(
                        case[None, :CONTEXT_FRAMES].expand(2, -1, -1, -1, -1),
                        budget.rollout,
                        guidance=guidance,
                        generator=torch.Generator().manual_seed(args.seed + index),
                        batch_size=budget.sample_batch,
                    ).cpu()
                    errors.append(forecast_error(rollout, case[CONTEXT_FRAMES : CONTEXT_FRAMES + budget.rollout]))
                forecasts.append(
                    {
                        "method": method,
                        "guidance": guidance,
                        "relative_error": mean_curve(errors),
                        "train_s": train_s,
                        "sample_s": time.perf_counter() - start,
                    }
                )
                print(
                    f"{method} forecast w={guidance}: relative error per frame "
                    f"{', '.join(f'{e:.3f}' for e in forecasts[-1]['relative_error'])}",
                    flush=True,
                )
            save(False)
    save_fields(fields_path(args.out), fields)
    draw(fields, forecasts, args.figures)
    save(True)
    print_tables(rows, forecasts)


def fields_path(out: Path) -> Path:
    """Where a run keeps the first SAVED_FIELDS fields of each set, for the figures of ``--merge``."""
    return out.with_name(out.stem + "_fields.npz")


SAVED_FIELDS = 32


def save_fields(path: Path, fields: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{label: velocity[:SAVED_FIELDS].numpy() for label, velocity in fields.items()})


def draw(fields: dict[str, torch.Tensor], forecasts: list[dict], figures: Path) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    save_image_atomic(flow_field_grid(fields, columns=4), figures / "fields.png")
    save_image_atomic(energy_spectra_plot(fields), figures / "spectra.png")
    save_image_atomic(vorticity_histogram_plot(fields), figures / "vorticity.png")
    if forecasts:
        save_image_atomic(forecast_plot(forecasts), figures / "forecast.png")


def print_tables(rows: list[dict], forecasts: list[dict]) -> None:
    print_table(rows, [c for c in COLUMNS if any(c in row for row in rows)])
    if forecasts:
        frames = max(len(f["relative_error"]) for f in forecasts)
        table = [
            {
                "method": f["method"],
                "guidance": f["guidance"],
                **{f"frame {k + 1}": e for k, e in enumerate(f["relative_error"])},
            }
            for f in forecasts
        ]
        print_table(table, ["method", "guidance", *[f"frame {k + 1}" for k in range(frames)]])


def merge(paths: list[Path], out: Path, figures: Path) -> None:
    """Join runs of single methods: the real and persistence rows once, every method's rows, all fields."""
    rows: list[dict] = []
    forecasts: list[dict] = []
    fields: dict[str, torch.Tensor] = {}
    payloads = [json.loads(path.read_text()) for path in paths]
    for path, payload in zip(paths, payloads):
        rows += [row for row in payload["rows"] if row["method"] != "real" or not rows]
        forecasts += [
            f
            for f in payload["forecasts"]
            if f["method"] != "persistence" or not any(g["method"] == "persistence" for g in forecasts)
        ]
        with np.load(fields_path(path)) as saved:
            fields.update({label: torch.from_numpy(saved[label]) for label in saved.files})
    draw(fields, forecasts, figures)
    merged = {key: payloads[0][key] for key in ("command", "settings", "seed", "generate_s")}
    write_json(
        out,
        {
            **merged,
            "complete": all(p["complete"] for p in payloads),
            "data": "generated (see settings)",
            "methods": [m for p in payloads for m in p["methods"]],
            "merged_from": [str(p) for p in paths],
            "rows": rows,
            "forecasts": forecasts,
        },
    )
    save_fields(fields_path(out), fields)
    print_tables(rows, forecasts)


def mean_curve(curves: list[list[float]]) -> list[float]:
    """The mean over cases of per-frame errors (cases may be shorter than the rollout at the end of a trajectory)."""
    length = max(len(curve) for curve in curves)
    return [sum(c[k] for c in curves if len(c) > k) / sum(1 for c in curves if len(c) > k) for k in range(length)]


def forecast_plot(forecasts: list[dict]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kuramoto_diffusion.viz.images import figure_to_image

    figure, axis = plt.subplots(figsize=(5, 3.4))
    for entry in forecasts:
        label = entry["method"] if entry["guidance"] == "-" else f"{entry['method']} w={entry['guidance']:g}"
        style = "k:" if entry["method"] == "persistence" else "-o"
        axis.plot(range(1, len(entry["relative_error"]) + 1), entry["relative_error"], style, label=label)
    axis.set_xlabel("forecast frame")
    axis.set_ylabel("relative L2 error")
    axis.set_title("rollout error against the solver (lower is better)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


if __name__ == "__main__":
    main()
