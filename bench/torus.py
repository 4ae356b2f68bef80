"""Known-density benchmark on the 2-torus: Kuramoto against Euclidean, samplers against NFE, DSM window.

    python bench/torus.py [--budget tiny|small|paper] [--densities NAME ...] [--part main sweep]
                          [--steps 100] [--seed 0] [--device auto] [--out bench/results/torus.json]

Two parts (SPEC §3, §5; densities from ``kuramoto_diffusion.data.torus``):

main   For each density, trains a Kuramoto model (global coupling) and a Euclidean VP model
       (data in radians as they are, samples wrapped back to [-π, π)) with the same MLP,
       budget and seed at T = --steps; then samples with each sampler (sde, ode, ode-heun) at
       NFE 10, 25, 50, 100 and T (those ≤ T) and reports the histogram KL (50 × 50 bins) beside
       the KL floor of the same number of exact samples, and the held-out NLL (periodic KDE with
       a cross-validated bandwidth) beside the true NLL and the KDE's NLL of exact samples.
       A "prior" row gives the KL of the prior's own samples, for scale.
sweep  Kuramoto only, on --sweep-density (wrapped-mixture): the DSM window h ∈ {1, 2, 5, 10, 20}
       × draws ∈ {1, 5} at T = 100 and T = 1000; the reverse SDE at NFE = T, and at NFE 100
       (strided) where T > 100.

Budgets (one CPU thread; the network sees batch × draws examples per step):

tiny   30 steps of 64, MLP 32 × 2, 400 samples, a reduced sweep grid: seconds; checks the script.
small  4,000 steps of 256, MLP 128 × 3 (lr 1e-3, EMA 0.995), 10,000 samples, 2,000 held out:
       ≈ 45–60 min with OMP_NUM_THREADS=1 on the 2-core development machine (measured rates:
       ≈ 115 training steps/s with draws = 1, 42 with draws = 5; 10,000 samples cost ≈ 6.5 s per
       100 NFE). Main ≈ 10 min (6 models × 35 s training + ≈ 1 min of sampling and metrics);
       sweep ≈ 35 min (10 × 35 s + 10 × 95 s training; the T = 1000 models ≈ 75 s of sampling each).
paper  SPEC's 8,000 steps of 512, MLP 256 × 4 (lr 1e-3, EMA 0.999), 20,000 samples, 5,000 held
       out: roughly 10 h or more on this CPU (the draws = 5 runs dominate); meant for a GPU or a
       long unattended run.

Writes the JSON after every trained model ("complete": false until the end) and prints Markdown
tables. Real runs go to bench/results/torus.json; send trial runs elsewhere with --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, train_quietly, write_json
from kuramoto_diffusion.data.torus import TORUS_DENSITIES, TorusDensity, open_torus_source
from kuramoto_diffusion.metrics.density import heldout_nll, histogram_kl, kl_floor, true_nll
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.sampling import SAMPLERS
from kuramoto_diffusion.settings import RunConfig, TrainConfig, angle_model_config
from kuramoto_diffusion.training import resolve_device

BINS = 50


@dataclasses.dataclass(frozen=True)
class Budget:
    train_steps: int
    batch_size: int
    hidden: int
    layers: int
    lr: float
    warmup_steps: int
    ema_decay: float
    samples: int
    heldout: int
    nfes: tuple[int, ...]  # plus T, for the main part
    windows: tuple[int, ...]
    draws: tuple[int, ...]
    sweep_steps: tuple[int, ...]
    floor_repeats: int = 3


BUDGETS = {
    "tiny": Budget(30, 64, 32, 2, 1e-3, 5, 0.9, 400, 400, (10,), (1, 20), (1, 5), (100, 1000), 1),
    "small": Budget(4000, 256, 128, 3, 1e-3, 100, 0.995, 10_000, 2_000, (10, 25, 50, 100), (1, 2, 5, 10, 20), (1, 5), (100, 1000)),
    "paper": Budget(8000, 512, 256, 4, 1e-3, 200, 0.999, 20_000, 5_000, (10, 25, 50, 100), (1, 2, 5, 10, 20), (1, 5), (100, 1000)),
}

MAIN_COLUMNS = ["density", "process", "T", "sampler", "nfe", "kl", "kl_floor", "nll", "nll_exact_samples", "true_nll",
                "train_s", "sample_s"]
SWEEP_COLUMNS = ["density", "T", "window", "draws", "sampler", "nfe", "kl", "kl_floor", "nll", "train_s", "sample_s"]


class Evaluator:
    """Metrics of sample sets against one density, with the references cached."""

    def __init__(self, density: TorusDensity, budget: Budget, seed: int) -> None:
        self.density = density
        self.budget = budget
        self.heldout = density.sample(budget.heldout, torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
        self.floor = kl_floor(density, budget.samples, BINS, seed=20_000 + seed, repeats=budget.floor_repeats)
        self.true_nll = true_nll(density, self.heldout)
        exact = density.sample(budget.samples, torch.Generator().manual_seed(30_000 + seed))
        self.nll_exact = heldout_nll(exact, self.heldout)

    def metrics(self, angles: torch.Tensor) -> dict[str, float]:
        return {"kl": histogram_kl(self.density, angles, BINS), "kl_floor": self.floor,
                "nll": heldout_nll(angles, self.heldout), "nll_exact_samples": self.nll_exact,
                "true_nll": self.true_nll}


def train(density: TorusDensity, process, budget: Budget, seed: int, device: torch.device,
          window: int = 1, draws: int = 1) -> tuple[DiffusionModel, float]:
    config = RunConfig(
        model=angle_model_config(process, 2, hidden_features=budget.hidden, num_layers=budget.layers),
        training=TrainConfig(train_steps=budget.train_steps, batch_size=budget.batch_size, draws=draws, window=window,
                             lr=budget.lr, warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay,
                             checkpoint_every=10**9, sample_every=0, log_every=max(1, budget.train_steps // 10),
                             seed=seed),
    )
    return train_quietly(config, density, device)


def sample_angles(model: DiffusionModel, num: int, sampler: str, nfe: int, seed: int) -> tuple[torch.Tensor, int, float]:
    start = time.perf_counter()
    result = model.sample(num, sampler=sampler, nfe=nfe, generator=torch.Generator().manual_seed(seed),
                          batch_size=min(num, 5000))
    angles, _ = model.decode(result.states)
    return angles.cpu(), result.function_evaluations, time.perf_counter() - start


def nfe_grid(nfes: tuple[int, ...], steps: int) -> list[int]:
    return sorted({n for n in (*nfes, steps) if n <= steps})


def run_main(args, budget: Budget, device: torch.device, rows: list[dict], save) -> None:
    processes = {"kuramoto-global": KuramotoConfig(coupling="global", steps=args.steps),
                 "euclidean": EuclideanConfig(steps=args.steps)}
    for name in args.densities:
        density = open_torus_source(name)
        evaluator = Evaluator(density, budget, args.seed)
        for label, process in processes.items():
            model, train_s = train(density, process, budget, args.seed, device)
            base = {"part": "main", "density": name, "process": label, "T": args.steps, "train_s": train_s}
            prior = model.process.prior_sample((budget.samples, 2), generator=torch.Generator().manual_seed(args.seed))
            rows.append({**base, "sampler": "prior", "nfe": 0, **evaluator.metrics(model.decode(prior)[0]), "sample_s": 0.0})
            for sampler in SAMPLERS:
                for nfe in nfe_grid(budget.nfes, args.steps):
                    angles, used, sample_s = sample_angles(model, budget.samples, sampler, nfe, args.seed + 1)
                    row = {**base, "sampler": sampler, "nfe": used, **evaluator.metrics(angles), "sample_s": sample_s}
                    rows.append(row)
                    print(f"main  {name:18s} {label:15s} {sampler:8s} nfe {used:4d}  KL {row['kl']:.4f} "
                          f"(floor {row['kl_floor']:.4f})  NLL {row['nll']:.4f}", flush=True)
            save(complete=False)


def run_sweep(args, budget: Budget, device: torch.device, rows: list[dict], save) -> None:
    density = open_torus_source(args.sweep_density)
    evaluator = Evaluator(density, budget, args.seed)
    for steps in budget.sweep_steps:
        for draws in budget.draws:
            for window in budget.windows:
                process = KuramotoConfig(coupling="global", steps=steps)
                model, train_s = train(density, process, budget, args.seed, device, window=window, draws=draws)
                for nfe in sorted({steps, min(steps, 100)}):
                    angles, used, sample_s = sample_angles(model, budget.samples, "sde", nfe, args.seed + 1)
                    row = {"part": "sweep", "density": args.sweep_density, "process": "kuramoto-global", "T": steps,
                           "window": window, "draws": draws, "sampler": "sde", "nfe": used, **evaluator.metrics(angles),
                           "train_s": train_s, "sample_s": sample_s}
                    rows.append(row)
                    print(f"sweep T {steps:4d} h {window:2d} draws {draws}  sde nfe {used:4d}  KL {row['kl']:.4f} "
                          f"(floor {row['kl_floor']:.4f})  NLL {row['nll']:.4f}  train {train_s:.0f} s", flush=True)
                save(complete=False)


def plot_main(rows: list[dict], path: Path) -> None:
    """KL against NFE, one panel per density, one line per process and sampler, floor and prior dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kuramoto_diffusion.viz import figure_to_image, save_image_atomic

    main_rows = [r for r in rows if r["part"] == "main"]
    densities = list(dict.fromkeys(r["density"] for r in main_rows))
    figure, axes = plt.subplots(1, len(densities), figsize=(4.6 * len(densities), 3.6), squeeze=False)
    styles = {"sde": "-o", "ode": "--s", "ode-heun": ":^"}
    for axis, density in zip(axes[0], densities):
        chosen = [r for r in main_rows if r["density"] == density]
        for colour, process in enumerate(dict.fromkeys(r["process"] for r in chosen)):
            for sampler, style in styles.items():
                points = sorted((r["nfe"], r["kl"]) for r in chosen if r["process"] == process and r["sampler"] == sampler)
                if points:
                    axis.plot(*zip(*points), style, color=f"C{colour}", label=f"{process} {sampler}", markersize=4)
        axis.axhline(chosen[0]["kl_floor"], color="grey", linestyle=":", label="floor (exact samples)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("NFE")
        axis.set_ylabel("KL(true ‖ samples), 50×50 bins")
        axis.set_title(density)
        axis.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    save_image_atomic(figure_to_image(figure), path)
    plt.close(figure)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--densities", nargs="+", choices=list(TORUS_DENSITIES), default=list(TORUS_DENSITIES))
    parser.add_argument("--sweep-density", choices=list(TORUS_DENSITIES), default="wrapped-mixture")
    parser.add_argument("--part", nargs="+", choices=["main", "sweep"], default=["main", "sweep"])
    parser.add_argument("--steps", type=int, default=100, help="T of the main comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "torus.json")
    parser.add_argument("--plot-only", action="store_true", help="redraw the KL-against-NFE plot from --out and stop")
    args = parser.parse_args()
    plot_path = args.out.with_name(args.out.stem + "_kl_vs_nfe.png")
    if args.plot_only:
        plot_main(json.loads(args.out.read_text())["rows"], plot_path)
        return
    budget = BUDGETS[args.budget]
    device = resolve_device(args.device)
    rows: list[dict] = []
    started = time.perf_counter()
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "budget_settings": dataclasses.asdict(budget), "bins": BINS}

    def save(complete: bool, tables: dict[str, str] | None = None) -> None:
        payload = {"command": "python bench/torus.py " + f"--budget {args.budget}", "settings": settings,
                   "complete": complete, "wall_s": time.perf_counter() - started, "rows": rows, **(tables or {})}
        write_json(args.out, payload, quiet=not complete)

    if "main" in args.part:
        run_main(args, budget, device, rows, save)
    if "sweep" in args.part:
        run_sweep(args, budget, device, rows, save)
    tables = {}
    if "main" in args.part:
        print("\nMain comparison")
        tables["table_main"] = print_table([r for r in rows if r["part"] == "main"], MAIN_COLUMNS)
    if "sweep" in args.part:
        print("\nDSM window and draws (Kuramoto, global coupling)")
        tables["table_sweep"] = print_table([r for r in rows if r["part"] == "sweep"], SWEEP_COLUMNS)
    save(complete=True, tables=tables)
    if "main" in args.part:
        plot_main(rows, plot_path)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
