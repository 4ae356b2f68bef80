"""Side by side on images: Euclidean VP against Kuramoto global and local coupling.

    python bench/quality.py [--budget tiny|small|paper] [--data fingerprints textures PATH ...]
                            [--methods euclidean kuramoto-global kuramoto-local] [--seed 0]
                            [--device auto] [--out bench/results/quality.json]
                            [--figures bench/results/quality]
                            [--objective auto|markov|antithetic|flow|flow-antithetic|propagated] [--window H] [--anchor A] [--draws D]
                            [--sweeps sde:0 ode:50 ...] [--save-models DIR] [--ema-decay D] [--steps T]

For every data set, trains each method with the same UNet, the same number of training
examples (steps × batch), the same optimiser settings and the same seed; then samples with the
reverse SDE at NFE = T (and 50) and the ODE at NFE 10, 25, 50, and evaluates every weight-free
metric of ``kuramoto_diffusion.metrics`` (plus FID/KID with --inception-weights) against random
crops of the held-out split. A "real" row compares two independent held-out sets of the same
size: the metrics' own floor at that sample size.

--objective, --window, --anchor and --draws set the Kuramoto models' DSM objective (training/loss.py;
the Euclidean model always trains on DDPM's ε-loss), --pool-advance n the chains their pool advances
per step (label "n n"), --pool-size N the chains in it (label "N N"; fresh data enters at n/T examples per step). With D draws per starting state the batch
holds batch ÷ D starting states, so every method's network sees the same examples. A Kuramoto
method trained with other than the default objective is labelled e.g. ``kuramoto-local[flow h20]``.
--sweeps replaces the budget's (sampler, NFE) list; NFE 0 means T. A sampler is sde, ode, ode-heun, pc
(one corrector step, snr 0.16) or euler-maruyama, with "-rho" for the ρ = 7 time grid (``sampling.Sampler``):
pc-rho:100. euler-maruyama on the Euclidean model is the paper's protocol for its "SGM" baseline (as we
infer it: Euler–Maruyama on the reverse VP-SDE); on the Kuramoto models it is the sde step itself.
--clip-sweeps gives the clipped Euclidean variant ("euclidean-clip") its own list; with no values
it is not sampled (its rows cost as much as the plain model's).
--phase-range a trains the Kuramoto models with the image encoding θ = a·π·x (label "r<a>π"; without it
KuramotoConfig's default, 0.5 since 2026-12-03: unlabelled Kuramoto rows written before then are at the
paper's 0.9). Every row counts the values that crossed the seam at ±π along the sweep, per sample
(``seam_crossings_per_sample``), and those in the sweep's last tenth (``late_seam_crossings_per_sample``).
--coupling-range LO HI, --coupling-shape constant, --coupling-norm unit and --ref-strength κ set the Kuramoto
models' regime (KuramotoConfig; labels "K<lo>,<hi>", "Kconst", "unit", "κ<value>"); --methods kuramoto-none trains
the process without a coupling term (wrapped Ornstein–Uhlenbeck; with --ref-strength 0 wrapped Brownian motion).
--steps T trains and samples every method at T diffusion steps instead of the budget's; its rows are
labelled e.g. ``euclidean T1000`` so that --merge keeps them apart.
--load-models DIR samples and evaluates the models that --save-models DIR wrote instead of training.

Figures in --figures: metric against NFE per data set (one line per method and sampler), sample
grids side by side (real first), and R(t) along the reverse SDE of the Kuramoto models beside
the real data's R.

Budgets (32 px grey images; one CPU thread unless you allow more):

tiny   20 steps, 16 samples at T = 20: seconds; checks the script end to end.
small  'tiny' UNet preset, 2,000 steps of 32 (lr 5e-4, EMA 0.995) at T = 100, 256 samples:
       7–10 min of training and 3–6 min of sampling per model: 84 min for 2 data sets ×
       3 methods with OMP_NUM_THREADS=1 on the 2-core development machine (while it was shared).
medium 'small' with 4× the training (8,000 steps) and only the SDE at T and the ODE at NFE 50:
       about 35 min per model on one thread; checks how the gap changes with training.
paper  'small' preset at 64 px, 100,000 steps of 64 at T = 1,000, 5,000 samples: GPU only.

Writes the JSON after every model ("complete": false until the end) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, train_quietly, write_json
from kuramoto_diffusion.circular import order_parameter
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.metrics import evaluate_images
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, ProcessConfig
from kuramoto_diffusion.sampling.sweep import Sampler
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.viz.images import figure_to_image, image_grid, labelled_rows, save_image_atomic

METHODS = ("euclidean", "kuramoto-global", "kuramoto-local")
# Also trainable with --methods: no coupling term (wrapped Ornstein–Uhlenbeck; with --ref-strength 0 wrapped Brownian motion).
EXTRA_METHODS = ("kuramoto-none",)


@dataclasses.dataclass(frozen=True)
class Budget:
    preset: str
    image_size: int
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
    "tiny": Budget("tiny", 32, 20, 20, 8, 1e-3, 5, 0.9, 16, 16, (("sde", 0), ("ode", 5))),
    "small": Budget("tiny", 32, 100, 2000, 32, 5e-4, 100, 0.995, 256, 128,
                    (("sde", 0), ("sde", 50), ("ode", 10), ("ode", 25), ("ode", 50))),
    "medium": Budget("tiny", 32, 100, 8000, 32, 5e-4, 100, 0.995, 256, 128, (("sde", 0), ("ode", 50))),
    "paper": Budget("small", 64, 1000, 100_000, 64, 2e-4, 1000, 0.9999, 5000, 250,
                    (("sde", 0), ("sde", 100), ("ode", 10), ("ode", 25), ("ode", 50))),
}

COLUMNS = ["data", "method", "sampler", "nfe", "swd_mean", "orientation_w1", "coherence_gap",
           "log_spectral_distance", "pixel_w1", "clipped_fraction", "ridge_frequency_w1", "fid", "kid",
           "train_s", "sample_s"]


def process_for(method: str, steps: int) -> ProcessConfig:
    if method == "euclidean":
        return EuclideanConfig(steps=steps)
    return KuramotoConfig(coupling=method.removeprefix("kuramoto-"), steps=steps)


def real_sets(data: str, budget: Budget, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent sets of held-out random crops: the reference and the floor's second set."""
    source = open_image_source(data, budget.image_size, channels=1, split="val", seed=seed)
    first = source.sample_batch(budget.samples, torch.Generator().manual_seed(50_000 + seed))
    second = source.sample_batch(budget.samples, torch.Generator().manual_seed(60_000 + seed))
    return first, second


@dataclasses.dataclass(frozen=True)
class Objective:
    """The Kuramoto models' DSM objective (the Euclidean model keeps DDPM's ε-loss)."""

    name: str = "auto"  # TrainConfig's default: propagated for Kuramoto (loss.resolve_objective)
    window: int = 0  # 0: the objective's default
    draws: int = 1
    anchor: int = 0  # queries at t ≤ anchor start from the data (TrainConfig.anchor)
    pool_advance: int = 0  # chains the pool advances per step (TrainConfig.pool_advance; 0: the default)
    phase_range: float = 0.0  # the image encoding θ = a·π·x, a in (0, 1) (KuramotoConfig.phase_range; 0: its default)
    pool_size: int = 0  # chains in the pool (TrainConfig.pool_size; 0: the default)
    # The Kuramoto regime (KuramotoConfig; None / the default: its default), labelled so that --merge keeps rows apart.
    coupling_range: tuple[float, float] | None = None  # K per step at T = 100 (label "K<lo>,<hi>")
    coupling_shape: str = "schedule"  # constant: K = coupling_range[1] every step (label "Kconst")
    coupling_norm: str = "mean-field"  # unit: sin(arg m − θ) (label "unit")
    ref_strength: float | None = None  # κ_ref (label "κ<value>")

    def regime(self) -> dict:
        """The KuramotoConfig fields this objective sets."""
        regime = {"coupling_shape": self.coupling_shape, "coupling_norm": self.coupling_norm}
        if self.coupling_range is not None:
            regime["coupling_range"] = tuple(self.coupling_range)
        if self.ref_strength is not None:
            regime["ref_strength"] = self.ref_strength
        return regime

    def label(self, method: str) -> str:
        if method == "euclidean" or self == Objective():
            return method
        window = f" h{self.window}" if self.window else ""
        draws = f" d{self.draws}" if self.draws != 1 else ""
        anchor = f" a{self.anchor}" if self.anchor else ""
        advance = f" n{self.pool_advance}" if self.pool_advance else ""
        pool = f" N{self.pool_size}" if self.pool_size else ""
        phase_range = f" r{self.phase_range:g}π" if self.phase_range else ""
        regime = f" K{self.coupling_range[0]:g},{self.coupling_range[1]:g}" if self.coupling_range is not None else ""
        regime += " Kconst" if self.coupling_shape == "constant" else ""
        regime += " unit" if self.coupling_norm == "unit" else ""
        regime += f" κ{self.ref_strength:g}" if self.ref_strength is not None else ""
        return f"{method}[{self.name}{window}{anchor}{draws}{pool}{advance}{phase_range}{regime}]"


def train(data: str, method: str, budget: Budget, seed: int, device: torch.device,
          groups: int | None = None, objective: Objective = Objective()) -> tuple[DiffusionModel, float]:
    source = open_image_source(data, budget.image_size, channels=1, split="train", seed=seed)
    kuramoto = method != "euclidean"
    draws = objective.draws if kuramoto else 1
    process = process_for(method, budget.steps)
    if kuramoto and objective.phase_range:
        process = dataclasses.replace(process, phase_range=objective.phase_range * math.pi)
    if kuramoto:
        process = dataclasses.replace(process, **objective.regime())
    config = RunConfig(
        model=image_model_config(process, 1, budget.image_size, budget.preset,
                                 **({} if groups is None else {"groups": groups})),
        data=DataConfig(source=str(data), image_size=budget.image_size, channels=1, seed=seed),
        training=TrainConfig(train_steps=budget.train_steps, batch_size=budget.batch_size // draws, draws=draws,
                             objective=objective.name if kuramoto else "markov",
                             window=objective.window if kuramoto else 0, anchor=objective.anchor if kuramoto else 0,
                             pool_size=objective.pool_size if kuramoto else 0,
                             pool_advance=objective.pool_advance if kuramoto else 0,
                             lr=budget.lr,
                             warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay,
                             checkpoint_every=10**9, sample_every=0, log_every=max(1, budget.train_steps // 20),
                             seed=seed),
    )
    return train_quietly(config, source, device)


def sample_and_evaluate(model: DiffusionModel, budget: Budget, sampler: str, nfe: int, real: torch.Tensor,
                        options: dict, seed: int) -> tuple[dict, torch.Tensor]:
    """Samples of one sampler at one NFE (0: T), their metrics against ``real``, and the images."""
    start = time.perf_counter()
    result = model.sample(budget.samples, sampler=sampler_from_spec(sampler), nfe=nfe or budget.steps,
                          generator=torch.Generator().manual_seed(seed + 1), batch_size=budget.sample_batch)
    images, clipped = model.decode(result.states)
    sample_s = time.perf_counter() - start
    metrics = evaluate_images(real, images.cpu(), **options)
    row = {"sampler": sampler, "nfe": result.function_evaluations, **metrics,
           "clipped_fraction": clipped / images.numel(), "sample_s": sample_s,
           # values that crossed ±π along the sweep (per sample), and in its last tenth of intervals
           "seam_crossings_per_sample": sum(result.seam_crossings) / budget.samples,
           "late_seam_crossings_per_sample": sum(result.seam_crossings[-max(1, len(result.seam_crossings) // 10):])
           / budget.samples}
    return row, images


def sampler_from_spec(spec: str) -> Sampler:
    """"pc-rho" -> Sampler("pc", grid="rho"); "sde" -> Sampler("sde")."""
    name, rho = (spec[: -len("-rho")], True) if spec.endswith("-rho") else (spec, False)
    return Sampler(name, grid="rho" if rho else "uniform")


def reverse_order_parameter(model: DiffusionModel, budget: Budget, seed: int) -> tuple[list[float], list[float]]:
    """Mean R of the sampled phases along the reverse SDE at NFE = T (16 samples): (t/T, R)."""
    result = model.sample(16, sampler="sde", generator=torch.Generator().manual_seed(seed), record_trajectory=True)
    times = [step / budget.steps for step in result.steps]
    return times, [float(r) for r in result.order_parameter]


def metric_plot(rows: list[dict], data: str, metrics: list[str]) -> "object":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    chosen = [row for row in rows if row["data"] == data and row["method"] != "real"]
    floor = {m: row[m] for row in rows if row["data"] == data and row["method"] == "real" for m in metrics if m in row}
    for axis, metric in zip(axes[0], metrics):
        for colour, method in enumerate(dict.fromkeys(row["method"] for row in chosen)):
            for sampler, style in (("sde", "-o"), ("ode", "--s")):
                points = sorted((r["nfe"], r[metric]) for r in chosen
                                if r["method"] == method and r["sampler"] == sampler and metric in r)
                if points:
                    axis.plot(*zip(*points), style, color=f"C{colour}", label=f"{method} {sampler}")
        if metric in floor:
            axis.axhline(floor[metric], color="grey", linewidth=1, label="real vs real")
        axis.set_xscale("log")
        axis.set_xlabel("NFE")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"{data}: metric against NFE (lower is better)", y=1.04)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


def order_plot(curves: dict[str, tuple[list[float], list[float]]], real_r: float, data: str) -> "object":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    for name, (times, values) in curves.items():
        axis.plot(times, values, label=name)
    axis.axhline(real_r, color="grey", linestyle=":", label="real data")
    axis.set_xlabel("diffusion time t / T (generation runs right to left)")
    axis.set_ylabel("order parameter R")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"{data}: R along the reverse SDE")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


METRIC_NAMES = ["swd_mean", "orientation_w1", "log_spectral_distance", "pixel_w1"]


def merge_results(paths: list[Path], figures: Path) -> list[dict]:
    """Rows of several result files, keyed by (data, method, sampler, NFE); metric plots per data set."""
    merged: dict[tuple, dict] = {}
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            merged[(row["data"], row["method"], row["sampler"], row["nfe"])] = row
    rows = list(merged.values())
    figures.mkdir(parents=True, exist_ok=True)
    for data in dict.fromkeys(row["data"] for row in rows):
        save_image_atomic(metric_plot(rows, data, METRIC_NAMES), figures / f"{data}_metrics.png")
    print_table(rows, [c for c in COLUMNS if any(c in row for row in rows)])
    return rows


def parse_sweeps(sweeps: list[str]) -> tuple[tuple[str, int], ...]:
    """``sampler:NFE`` strings as (sampler, NFE) pairs."""
    return tuple((sweep.split(":")[0], int(sweep.split(":")[1])) for sweep in sweeps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--data", nargs="+", default=["fingerprints", "textures"])
    parser.add_argument("--methods", nargs="+", choices=METHODS + EXTRA_METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps T instead of the budget's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--inception-weights", type=Path, default=None)
    parser.add_argument("--groups", type=int, default=None, help="GroupNorm groups of the UNet (default: the preset's)")
    parser.add_argument("--objective", default="auto", help="the Kuramoto models' DSM objective (auto: propagated)")
    parser.add_argument("--window", type=int, default=0, help="the Kuramoto models' DSM window (0: the objective's default)")
    parser.add_argument("--draws", type=int, default=1, help="kernel draws per starting state (the batch is divided by it)")
    parser.add_argument("--anchor", type=int, default=0, help="the Kuramoto models' anchor horizon (TrainConfig.anchor)")
    parser.add_argument("--pool-advance", type=int, default=0,
                        help="chains the Kuramoto models' pool advances per step (0: TrainConfig's default)")
    parser.add_argument("--pool-size", type=int, default=0,
                        help="chains in the Kuramoto models' pool (0: TrainConfig's default, max(T, 4·batch))")
    parser.add_argument("--phase-range", type=float, default=0.0,
                        help="the Kuramoto models' image encoding θ = a·π·x: a in (0, 1) (0: KuramotoConfig's default, 0.5)")
    parser.add_argument("--coupling-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="the Kuramoto models' K per step at T = 100 (default: KuramotoConfig's, 3e-05 0.03)")
    parser.add_argument("--coupling-shape", choices=("schedule", "constant"), default="schedule",
                        help="the Kuramoto models' K along the chain: the schedule's shape, or HI every step")
    parser.add_argument("--coupling-norm", choices=("mean-field", "unit"), default="mean-field",
                        help="the Kuramoto models' coupling: mean of sines, or the unit-modulus sin(arg m − θ)")
    parser.add_argument("--ref-strength", type=float, default=None,
                        help="the Kuramoto models' κ_ref (default: KuramotoConfig's, 1.5)")
    parser.add_argument("--ema-decay", type=float, default=None, help="override the budget's EMA decay (all methods)")
    parser.add_argument("--save-models", type=Path, default=None, help="save each trained model (EMA) under this folder")
    parser.add_argument("--load-models", type=Path, default=None, help="evaluate the models --save-models wrote, without training")
    parser.add_argument("--sweeps", nargs="+", default=None, help="(sampler:NFE ...) instead of the budget's; NFE 0 is T")
    parser.add_argument("--clip-sweeps", nargs="*", default=None,
                        help="(sampler:NFE ...) for the clipped Euclidean variant (default: --sweeps; none: skip it)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--figures", type=Path, default=RESULTS / "quality")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="only merge the rows of these result files (later ones win), redraw the metric plots "
                             "into --figures and print the table")
    args = parser.parse_args()
    if args.merge:
        merge_results(args.merge, args.figures)
        return
    budget = BUDGETS[args.budget]
    if args.sweeps:
        budget = dataclasses.replace(budget, sweeps=parse_sweeps(args.sweeps))
    clip_sweeps = budget.sweeps if args.clip_sweeps is None else parse_sweeps(args.clip_sweeps)
    objective = Objective(args.objective, args.window, args.draws, args.anchor, args.pool_advance, args.phase_range,
                          pool_size=args.pool_size,
                          coupling_range=None if args.coupling_range is None else tuple(args.coupling_range),
                          coupling_shape=args.coupling_shape, coupling_norm=args.coupling_norm,
                          ref_strength=args.ref_strength)
    if args.ema_decay is not None:
        budget = dataclasses.replace(budget, ema_decay=args.ema_decay)
    if args.steps is not None:
        budget = dataclasses.replace(budget, steps=args.steps)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    rows: list[dict] = []
    order_curves: dict[str, dict] = {}

    def save(complete: bool) -> None:
        payload = {"command": shlex.join(["python", "bench/quality.py", *sys.argv[1:]]), "complete": complete,
                   "objective": dataclasses.asdict(objective),
                   "settings": dataclasses.asdict(budget), "seed": args.seed, "data": args.data,
                   "methods": args.methods, "rows": rows, "order_parameter": order_curves}
        write_json(args.out, payload, quiet=not complete)

    for data in args.data:
        label = Path(data).name if data not in ("fingerprints", "textures") else data
        fingerprints = data == "fingerprints"
        real, second = real_sets(data, budget, args.seed)
        options = {"seed": args.seed, "inception_weights": args.inception_weights, "fingerprints": fingerprints}
        rows.append({"data": label, "method": "real", "sampler": "-", "nfe": 0,
                     **evaluate_images(real, second, **options), "clipped_fraction": 0.0})
        grids = [("real (held out)", image_grid(real[:32], columns=16, upscale=2))]
        curves = {}
        for method in args.methods:
            if args.load_models:
                trained, train_s = DiffusionModel.from_pretrained(args.load_models / f"{label}_{objective.label(method)}", device=device), 0.0
            else:
                trained, train_s = train(data, method, budget, args.seed, device, args.groups, objective)
            if args.save_models:
                trained.save_pretrained(args.save_models / f"{label}_{objective.label(method)}")
            # The Euclidean model is also sampled with DDPM's x₀ clipping (same weights): both
            # conventions exist in the literature, and at small budgets they differ a lot.
            # With --steps the rows say their T, so --merge keeps them apart from the budget's.
            horizon = f" T{budget.steps}" if args.steps is not None else ""
            variants = [(objective.label(method) + horizon, trained)]
            if method == "euclidean" and clip_sweeps:
                clipped_process = dataclasses.replace(trained.config.process, clip_denoised=True)
                variants.append(("euclidean-clip" + horizon, trained.with_process(clipped_process)))
            for name, model in variants:
                for sampler, nfe in (clip_sweeps if name.startswith("euclidean-clip") else budget.sweeps):
                    row, images = sample_and_evaluate(model, budget, sampler, nfe, real, options, args.seed)
                    rows.append({"data": label, "method": name, **row, "train_s": train_s})
                    if sampler == "sde" and nfe == 0:
                        grids.append((f"{name} SDE {row['nfe']}", image_grid(images[:32], columns=16, upscale=2)))
                    print(f"{label} {name} {sampler} NFE {row['nfe']}: swd {row['swd_mean']:.2f} "
                          f"orientation {row['orientation_w1']:.3f} ({row['sample_s']:.0f} s)", flush=True)
            if trained.config.periodic:
                curves[objective.label(method)] = reverse_order_parameter(trained, budget, args.seed + 2)
            save(False)
        real_r = float(order_parameter(open_image_source(data, budget.image_size, channels=1, split="val")
                                       .sample_batch(16, torch.Generator().manual_seed(0)) * (0.9 * torch.pi))[0].mean())
        order_curves[label] = {"real_R": real_r, "curves": curves}
        args.figures.mkdir(parents=True, exist_ok=True)
        save_image_atomic(labelled_rows(grids), args.figures / f"{label}_samples.png")
        save_image_atomic(metric_plot(rows, label, METRIC_NAMES), args.figures / f"{label}_metrics.png")
        if curves:
            save_image_atomic(order_plot(curves, real_r, label), args.figures / f"{label}_order_parameter.png")
    save(True)
    print_table(rows, [c for c in COLUMNS if any(c in row for row in rows)])


if __name__ == "__main__":
    main()
