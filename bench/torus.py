"""Known-density benchmark on the 2-torus: Kuramoto against Euclidean, samplers against NFE, DSM window.

    python bench/torus.py [--budget tiny|small|paper] [--densities NAME ...] [--part main sweep truth]
                          [--steps 100] [--processes LABEL ...] [--samplers NAME ...] [--truth-steps 100 1000] [--truth-grid 128] [--truth-models I ...] [--seed 0] [--device auto]
                          [--out bench/results/torus.json (torus_truth.json for --part truth alone)]

Three parts (SPEC §3, §5, §11; densities from ``kuramoto_diffusion.data.torus``); main and sweep run by default:

main   For each density, trains a Kuramoto model (global coupling) and a Euclidean VP model (``--processes``
       adds the no-coupling baselines: ``kuramoto-none``, a wrapped Ornstein–Uhlenbeck chain, and ``torus-brownian``,
       wrapped Brownian motion with a uniform prior)
       (data in radians as they are, samples wrapped back to [-π, π)) with the same MLP,
       budget and seed at T = --steps; then samples with each sampler (sde, ode, ode-heun) at
       NFE 10, 25, 50, 100 and T (those ≤ T) and reports the histogram KL (50 × 50 bins) beside
       the KL floor of the same number of exact samples, and the held-out NLL (periodic KDE with
       a cross-validated bandwidth) beside the true NLL and the KDE's NLL of exact samples.
       A "prior" row gives the KL of the prior's own samples, for scale.
sweep  Kuramoto only, on --sweep-density (wrapped-mixture): the DSM window h ∈ {1, 2, 5, 10, 20}
       × draws ∈ {1, 5} at T = 100 and T = 1000; the reverse SDE at NFE = T, and at NFE 100
       (strided) where T > 100.
truth  Against the exact marginal of the discrete chain (``metrics.chain_marginal``: p_t propagated on a
       G × G grid, float64), on "wrapped-mixture" at each T of the budget's ``truth_steps``:
       - the EXACT grid score in the samplers: reverse SDE and probability-flow ODE (Euler) at NFE = T
         through ``sampling.reverse_sweep`` with a score function from ``ChainMarginal.score_at``, started
         from the von Mises prior (κ fitted exactly to the grid's p_T) and from exact samples of p_T (the data
         pushed through the forward chain): the method's own floor, beside the histogram floor;
       - one Kuramoto-global model per objective (``TRUTH_MODELS``): markov (window 10, 5, 1), antithetic,
         linearised, linearised-antithetic (window 0 = the objective's default: markov 10, linearised T; "flow" in
         results before 2026-12), linearised with window 20,
         markov with windows 10 and 5 anchored at the data for t ≤ T/4, and propagated (indices 9 and 10, the
         second with antithetic pairs); the antithetic objectives draw ±z
         pairs (draws = 2) from half the batch, so every model sees batch_size network examples per step.
         Per t: the learned score's p_t-weighted relative L2 error against the grid score,
         sqrt(Σ w |s_θ − s|² / Σ w |s|²), and the least-squares slope through the origin of learned on true
         score, Σ w s_θ·s / Σ w |s|² (< 1: too small), w = p_t · cell area on every ``G/64``-th node per axis
         (T = 100: every t; T = 1000: every 5th t). Tables pool the sums over t-buckets 1–5, 6–10, 11–25,
         26–50, 51–100 (scaled by T/100). Plus each model's reverse SDE at NFE = T (KL, NLL, as in main).
       The per-t values are in the JSON rows of kind "per_t".

Budgets (one CPU thread; the network sees batch × draws examples per step):

tiny   30 steps of 64, MLP 32 × 2, 400 samples, a reduced sweep grid: seconds; checks the script.
       Truth on a 64 × 64 grid at T = 100 only: 11 s end to end.
small  4,000 steps of 256, MLP 128 × 3 (lr 1e-3, EMA 0.995), 10,000 samples, 2,000 held out:
       ≈ 45–60 min with OMP_NUM_THREADS=1 on the 2-core development machine (measured rates:
       ≈ 115 training steps/s with draws = 1, 42 with draws = 5; 10,000 samples cost ≈ 6.5 s per
       100 NFE). Main ≈ 10 min (6 models × 35 s training + ≈ 1 min of sampling and metrics);
       sweep ≈ 35 min (10 × 35 s + 10 × 95 s training; the T = 1000 models ≈ 75 s of sampling each).
       Truth (G = 128, T = 100 and 1000): ≈ 50–60 min estimated (not run yet), measured pieces with two
       other benchmarks sharing the 2 cores: grid build 6–11 s (T = 100) and 78–83 s (T = 1000); a sweep
       of 10,000 samples with the grid score 5.5 ms per step; training ≈ 10–35 ms per step except the
       linearised objectives with window T = 1000, ≈ 0.23 s per step (the linearised kernel walks the whole
       window): ≈ 15 min each of the ≈ 35 min of training at T = 1000; the models' sampling ≈ 6 min.
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
import shlex
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, train_quietly, write_json
from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.config import RunConfig, TrainConfig, angle_model_config
from kuramoto_diffusion.data.torus import TORUS_DENSITIES, TorusDensity, open_torus_source
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.metrics.density import heldout_nll, histogram_kl, kl_floor, true_nll
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.processes.kuramoto import KuramotoProcess
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.sampling.sweep import reverse_sweep
from kuramoto_diffusion.training.objectives import build_objective

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
    truth_grid: int = 128  # G of the exact chain marginal (part truth)
    truth_steps: tuple[int, ...] = (100, 1000)  # the T of part truth


BUDGETS = {
    "tiny": Budget(30, 64, 32, 2, 1e-3, 5, 0.9, 400, 400, (10,), (1, 20), (1, 5), (100, 1000), 1, 64, (100,)),
    "small": Budget(
        4000, 256, 128, 3, 1e-3, 100, 0.995, 10_000, 2_000, (10, 25, 50, 100), (1, 2, 5, 10, 20), (1, 5), (100, 1000)
    ),
    "paper": Budget(
        8000, 512, 256, 4, 1e-3, 200, 0.999, 20_000, 5_000, (10, 25, 50, 100), (1, 2, 5, 10, 20), (1, 5), (100, 1000)
    ),
}

MAIN_COLUMNS = [
    "density",
    "process",
    "T",
    "sampler",
    "nfe",
    "kl",
    "kl_floor",
    "nll",
    "nll_exact_samples",
    "true_nll",
    "train_s",
    "sample_s",
]
SWEEP_COLUMNS = ["density", "T", "window", "draws", "sampler", "nfe", "kl", "kl_floor", "nll", "train_s", "sample_s"]
TRUTH_DENSITY = "wrapped-mixture"
# (objective, window, draws, anchor as a fraction of T): window 0 is the objective's default (markov 10, linearised T)
TRUTH_MODELS = (
    ("markov", 0, 1, 0.0),
    ("markov", 5, 1, 0.0),
    ("markov", 1, 1, 0.0),
    ("antithetic", 0, 2, 0.0),
    ("linearised", 0, 1, 0.0),
    ("linearised", 20, 1, 0.0),
    ("linearised-antithetic", 0, 2, 0.0),
    ("markov", 0, 1, 0.25),
    ("markov", 5, 1, 0.25),
    ("propagated", 0, 1, 0.0),
    ("propagated-antithetic", 0, 2, 0.0),
)
TRUTH_BUCKETS = ((1, 5), (6, 10), (11, 25), (26, 50), (51, 100))  # at T = 100; scaled by T/100
TRUTH_SAMPLER_COLUMNS = [
    "T",
    "score",
    "start",
    "sampler",
    "nfe",
    "kl",
    "kl_floor",
    "nll",
    "nll_exact_samples",
    "sample_s",
]


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
        return {
            "kl": histogram_kl(self.density, angles, BINS),
            "kl_floor": self.floor,
            "nll": heldout_nll(angles, self.heldout),
            "nll_exact_samples": self.nll_exact,
            "true_nll": self.true_nll,
        }


def train(
    density: TorusDensity,
    process,
    budget: Budget,
    seed: int,
    device: torch.device,
    window: int = 1,
    draws: int = 1,
    objective: str = "markov",
    batch_size: int | None = None,
    anchor: int = 0,
) -> tuple[DiffusionModel, float]:
    config = RunConfig(
        model=angle_model_config(process, 2, hidden_features=budget.hidden, num_layers=budget.layers),
        training=TrainConfig(
            train_steps=budget.train_steps,
            batch_size=batch_size or budget.batch_size,
            draws=draws,
            window=window,
            objective=objective,
            anchor=anchor,
            lr=budget.lr,
            warmup_steps=budget.warmup_steps,
            ema_decay=budget.ema_decay,
            checkpoint_every=10**9,
            sample_every=0,
            log_every=max(1, budget.train_steps // 10),
            seed=seed,
        ),
    )
    return train_quietly(config, density, device)


def sample_angles(
    model: DiffusionModel, num: int, sampler: str, nfe: int, seed: int
) -> tuple[torch.Tensor, int, float]:
    start = time.perf_counter()
    result = model.sample(
        num, sampler=sampler, nfe=nfe, generator=torch.Generator().manual_seed(seed), batch_size=min(num, 5000)
    )
    angles, _ = model.decode(result.states)
    return angles.cpu(), result.function_evaluations, time.perf_counter() - start


def nfe_grid(nfes: tuple[int, ...], steps: int) -> list[int]:
    return sorted({n for n in (*nfes, steps) if n <= steps})


def main_processes(steps: int) -> dict[str, KuramotoConfig | EuclideanConfig]:
    """The main comparison's processes by label (``--processes``), all at T = ``steps``.

    ``kuramoto-none`` keeps the reference pull (κ_ref 1.5) without coupling: a wrapped Ornstein–Uhlenbeck chain.
    ``torus-brownian`` has no drift at all (κ_ref 0, so the fitted prior is uniform): wrapped Brownian motion, the
    torus diffusion of Riemannian score-based models and torsional diffusion. Both isolate what coupling adds."""
    return {
        "kuramoto-global": KuramotoConfig(coupling="global", steps=steps),
        "kuramoto-none": KuramotoConfig(coupling="none", steps=steps),
        "torus-brownian": KuramotoConfig(coupling="none", ref_strength=0.0, steps=steps),
        "euclidean": EuclideanConfig(steps=steps),
    }


def run_main(args, budget: Budget, device: torch.device, rows: list[dict], save) -> None:
    processes = {label: config for label, config in main_processes(args.steps).items() if label in args.processes}
    for name in args.densities:
        density = open_torus_source(name)
        evaluator = Evaluator(density, budget, args.seed)
        for label, process in processes.items():
            model, train_s = train(density, process, budget, args.seed, device)
            base = {"part": "main", "density": name, "process": label, "T": args.steps, "train_s": train_s}
            prior = model.process.prior_sample((budget.samples, 2), generator=torch.Generator().manual_seed(args.seed))
            rows.append(
                {**base, "sampler": "prior", "nfe": 0, **evaluator.metrics(model.decode(prior)[0]), "sample_s": 0.0}
            )
            for sampler in args.samplers:
                for nfe in nfe_grid(budget.nfes, args.steps):
                    angles, used, sample_s = sample_angles(model, budget.samples, sampler, nfe, args.seed + 1)
                    row = {**base, "sampler": sampler, "nfe": used, **evaluator.metrics(angles), "sample_s": sample_s}
                    rows.append(row)
                    print(
                        f"main  {name:18s} {label:15s} {sampler:8s} nfe {used:4d}  KL {row['kl']:.4f} "
                        f"(floor {row['kl_floor']:.4f})  NLL {row['nll']:.4f}",
                        flush=True,
                    )
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
                    row = {
                        "part": "sweep",
                        "density": args.sweep_density,
                        "process": "kuramoto-global",
                        "T": steps,
                        "window": window,
                        "draws": draws,
                        "sampler": "sde",
                        "nfe": used,
                        **evaluator.metrics(angles),
                        "train_s": train_s,
                        "sample_s": sample_s,
                    }
                    rows.append(row)
                    print(
                        f"sweep T {steps:4d} h {window:2d} draws {draws}  sde nfe {used:4d}  KL {row['kl']:.4f} "
                        f"(floor {row['kl_floor']:.4f})  NLL {row['nll']:.4f}  train {train_s:.0f} s",
                        flush=True,
                    )
                save(complete=False)


def truth_buckets(steps: int) -> list[tuple[int, int]]:
    """The t-buckets of part truth at T = ``steps``: TRUTH_BUCKETS scaled by T/100."""
    scale = steps / 100
    return [(max(1, round((low - 1) * scale) + 1), round(high * scale)) for low, high in TRUTH_BUCKETS]


def truth_times(steps: int) -> list[int]:
    """The t at which the learned score is compared: every t up to T = 200, else every (T // 200)-th from 1."""
    return list(range(1, steps + 1, max(1, steps // 200)))


def score_comparison(model: DiffusionModel, chain: ChainMarginal, times: list[int]) -> dict[str, list[float]]:
    """Per t: the p_t-weighted sums Σ w|s_θ − s|², Σ w s_θ·s and Σ w|s|² of learned (s_θ) against grid (s) score,
    w = p_t · area on every (G/64)-th node per axis; with the relative error and slope they give."""
    stride = max(1, chain.grid // 64)
    index = torch.arange(0, chain.grid, stride)
    axis = chain.nodes[index]
    points = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    sums: dict[str, list[float]] = {"t": [], "error_sq": [], "cross": [], "true_sq": [], "rel_error": [], "slope": []}
    states = points.to(device=model.device, dtype=torch.float32)
    for t in times:
        weights = chain.masses(t)[index][:, index].reshape(-1).clamp_min(0.0)
        truth = chain.score(t)[index][:, index].reshape(-1, 2)
        with torch.no_grad():
            learned = model.score(states, t).to("cpu", torch.float64)
        error_sq = float((weights * (learned - truth).square().sum(1)).sum())
        cross = float((weights * (learned * truth).sum(1)).sum())
        true_sq = float((weights * truth.square().sum(1)).sum())
        for key, value in (
            ("t", t),
            ("error_sq", error_sq),
            ("cross", cross),
            ("true_sq", true_sq),
            ("rel_error", (error_sq / true_sq) ** 0.5),
            ("slope", cross / true_sq),
        ):
            sums[key].append(value)
    return sums


def bucket_values(per_t: dict[str, list[float]], steps: int) -> dict[str, dict[str, float]]:
    """{bucket label: {rel_error, slope}} from per-t sums pooled over each t-bucket."""
    result = {}
    for low, high in truth_buckets(steps):
        chosen = [i for i, t in enumerate(per_t["t"]) if low <= t <= high]
        if not chosen:
            continue
        error_sq, cross, true_sq = (sum(per_t[key][i] for i in chosen) for key in ("error_sq", "cross", "true_sq"))
        result[f"{low}-{high}"] = {"rel_error": (error_sq / true_sq) ** 0.5, "slope": cross / true_sq}
    return result


def run_truth(args, budget: Budget, device: torch.device, rows: list[dict], save) -> None:
    density = open_torus_source(TRUTH_DENSITY)
    evaluator = Evaluator(density, budget, args.seed)
    grid = args.truth_grid or budget.truth_grid
    for steps in args.truth_steps or budget.truth_steps:
        process = KuramotoProcess(KuramotoConfig(coupling="global", steps=steps))
        chain = ChainMarginal(process, density, grid)
        kappa = chain.prior_concentration()
        exact_process = KuramotoProcess(dataclasses.replace(process.config, prior_concentration=kappa))
        p_terminal = chain.density(steps)
        prior_log = exact_process.prior_log_prob(chain.points).sum(1).reshape(grid, grid)
        prior_kl = float((chain.masses(steps) * (chain.log_density(steps) - prior_log)).sum())
        base = {"part": "truth", "density": TRUTH_DENSITY, "T": steps, "grid": grid}
        rows.append(
            {
                **base,
                "kind": "grid",
                "build_s": chain.build_seconds,
                "prior_concentration": kappa,
                "prior_kl": prior_kl,
                "mass_error": abs(float(p_terminal.sum()) * chain.cell_area - 1.0),
            }
        )
        print(
            f"truth T {steps:4d}  grid {grid}×{grid} built in {chain.build_seconds:.1f} s; κ(p_T) {kappa:.4f}; "
            f"KL(p_T ‖ prior) {prior_kl:.2e}",
            flush=True,
        )
        # The exact grid score in the samplers (no network): from the prior and from exact samples of p_T.
        generator = torch.Generator().manual_seed(args.seed + 2)
        starts = {
            "prior": exact_process.prior_sample((budget.samples, 2), generator=generator),
            "exact p_T": process.simulate(density.sample(budget.samples, generator), steps, generator=generator),
        }
        for start, x_start in starts.items():
            for sampler in ("sde", "ode"):
                begin = time.perf_counter()
                result = reverse_sweep(
                    exact_process,
                    chain.score_fn(),
                    x_start,
                    sampler=sampler,
                    generator=torch.Generator().manual_seed(args.seed + 1),
                )
                sample_s = time.perf_counter() - begin
                row = {
                    **base,
                    "kind": "sampler",
                    "score": "exact grid",
                    "start": start,
                    "sampler": sampler,
                    "nfe": result.function_evaluations,
                    **evaluator.metrics(wrap(result.states)),
                    "sample_s": sample_s,
                }
                rows.append(row)
                print(
                    f"truth T {steps:4d}  exact score  {start:9s} {sampler:4s} nfe {row['nfe']:4d}  KL {row['kl']:.4f} "
                    f"(floor {row['kl_floor']:.4f})  NLL {row['nll']:.4f}",
                    flush=True,
                )
        save(complete=False)
        times = truth_times(steps)
        chosen = [TRUTH_MODELS[i] for i in args.truth_models] if args.truth_models else TRUTH_MODELS
        for objective, window, draws, anchor_fraction in chosen:
            batch = budget.batch_size // draws
            anchor = round(anchor_fraction * steps)
            model, train_s = train(
                density,
                KuramotoConfig(coupling="global", steps=steps),
                budget,
                args.seed,
                device,
                window=window,
                draws=draws,
                objective=objective,
                batch_size=batch,
                anchor=anchor,
            )
            used_window = build_objective(
                model.process, TrainConfig(objective=objective, window=window, draws=draws, anchor=anchor)
            ).window
            label = f"{objective} h{used_window}" + (f" a{anchor}" if anchor else "")
            info = {
                **base,
                "model": label,
                "objective": objective,
                "window": used_window,
                "anchor": anchor,
                "draws": draws,
                "batch": batch,
                "train_s": train_s,
                "model_prior_concentration": model.process.config.prior_concentration,
            }
            per_t = score_comparison(model, chain, times)
            rows.append({**info, "kind": "per_t", **{k: per_t[k] for k in ("t", "rel_error", "slope")}})
            buckets = bucket_values(per_t, steps)
            for bucket, values in buckets.items():
                rows.append({**info, "kind": "score", "bucket": bucket, **values})
            angles, used, sample_s = sample_angles(model, budget.samples, "sde", steps, args.seed + 1)
            row = {
                **info,
                "kind": "sampler",
                "score": label,
                "start": "prior",
                "sampler": "sde",
                "nfe": used,
                **evaluator.metrics(angles),
                "sample_s": sample_s,
            }
            rows.append(row)
            print(
                f"truth T {steps:4d}  {label:20s} train {train_s:.0f} s  rel. error by bucket "
                + " ".join(f"{v['rel_error']:.3f}" for v in buckets.values())
                + "  slope "
                + " ".join(f"{v['slope']:.3f}" for v in buckets.values())
                + f"  sde KL {row['kl']:.4f} (floor {row['kl_floor']:.4f})",
                flush=True,
            )
            save(complete=False)


def truth_tables(rows: list[dict]) -> dict[str, str]:
    """Markdown tables of part truth: score error and slope by t-bucket (one row per T and model), sampler KLs."""
    truth = [r for r in rows if r["part"] == "truth"]
    tables = {}
    for quantity, title in (
        ("rel_error", "Learned score vs the exact grid score: p_t-weighted relative L2 error"),
        ("slope", "Slope of learned on true score (least squares through 0, p_t-weighted; < 1: too small)"),
    ):
        pivot: dict[tuple[int, str], dict] = {}
        for r in (r for r in truth if r["kind"] == "score"):
            entry = pivot.setdefault(
                (r["T"], r["model"]), {"T": r["T"], "model": r["model"], "draws": r["draws"], "batch": r["batch"]}
            )
            entry[r["bucket"]] = r[quantity]
        buckets = list(dict.fromkeys(r["bucket"] for r in truth if r["kind"] == "score"))
        print(f"\n{title}")
        tables[f"table_truth_{quantity}"] = print_table(
            list(pivot.values()), ["T", "model", "draws", "batch", *buckets]
        )
    print("\nSamplers: exact grid score (method's floor) and each model's reverse SDE at NFE = T")
    tables["table_truth_samplers"] = print_table([r for r in truth if r["kind"] == "sampler"], TRUTH_SAMPLER_COLUMNS)
    print("\nGrid")
    tables["table_truth_grid"] = print_table(
        [r for r in truth if r["kind"] == "grid"],
        ["T", "grid", "build_s", "prior_concentration", "prior_kl", "mass_error"],
    )
    return tables


def plot_main(rows: list[dict], path: Path) -> None:
    """KL against NFE, one panel per density, one line per process and sampler, floor and prior dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kuramoto_diffusion.viz.images import figure_to_image, save_image_atomic

    main_rows = [r for r in rows if r["part"] == "main"]
    densities = list(dict.fromkeys(r["density"] for r in main_rows))
    figure, axes = plt.subplots(1, len(densities), figsize=(4.6 * len(densities), 3.6), squeeze=False)
    styles = {"sde": "-o", "ode": "--s", "ode-heun": ":^"}
    for axis, density in zip(axes[0], densities):
        chosen = [r for r in main_rows if r["density"] == density]
        for colour, process in enumerate(dict.fromkeys(r["process"] for r in chosen)):
            for sampler, style in styles.items():
                points = sorted(
                    (r["nfe"], r["kl"]) for r in chosen if r["process"] == process and r["sampler"] == sampler
                )
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
    parser.add_argument("--part", nargs="+", choices=["main", "sweep", "truth"], default=["main", "sweep"])
    parser.add_argument("--steps", type=int, default=100, help="T of the main comparison")
    parser.add_argument(
        "--samplers",
        nargs="+",
        choices=["sde", "ode", "ode-heun"],
        default=["sde", "ode", "ode-heun"],
        help="the main comparison's samplers (each at NFE 10, 25, 50, 100 and T)",
    )
    parser.add_argument(
        "--processes",
        nargs="+",
        choices=list(main_processes(100)),
        default=["kuramoto-global", "euclidean"],
        help="the main comparison's processes",
    )
    parser.add_argument(
        "--truth-steps", type=int, nargs="+", default=None, help="T of part truth (default: the budget's)"
    )
    parser.add_argument("--truth-grid", type=int, default=None, help="G of part truth's grid (default: the budget's)")
    parser.add_argument(
        "--truth-models",
        type=int,
        nargs="+",
        default=None,
        help="indices into TRUTH_MODELS to train in part truth (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON to write (default bench/results/torus.json; torus_truth.json for --part truth alone)",
    )
    parser.add_argument("--plot-only", action="store_true", help="redraw the KL-against-NFE plot from --out and stop")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / ("torus_truth.json" if args.part == ["truth"] else "torus.json")
    plot_path = args.out.with_name(args.out.stem + "_kl_vs_nfe.png")
    if args.plot_only:
        plot_main(json.loads(args.out.read_text())["rows"], plot_path)
        return
    budget = BUDGETS[args.budget]
    device = resolve_device(args.device)
    rows: list[dict] = []
    started = time.perf_counter()
    settings = {**vars(args), "budget_settings": dataclasses.asdict(budget), "bins": BINS}

    def save(complete: bool, tables: dict[str, str] | None = None) -> None:
        payload = {
            "command": shlex.join(["python", "bench/torus.py", *sys.argv[1:]]),
            "settings": settings,
            "complete": complete,
            "wall_s": time.perf_counter() - started,
            "rows": rows,
            **(tables or {}),
        }
        write_json(args.out, payload, quiet=not complete)

    if "main" in args.part:
        run_main(args, budget, device, rows, save)
    if "sweep" in args.part:
        run_sweep(args, budget, device, rows, save)
    if "truth" in args.part:
        run_truth(args, budget, device, rows, save)
    tables = {}
    if "main" in args.part:
        print("\nMain comparison")
        tables["table_main"] = print_table([r for r in rows if r["part"] == "main"], MAIN_COLUMNS)
    if "sweep" in args.part:
        print("\nDSM window and draws (Kuramoto, global coupling)")
        tables["table_sweep"] = print_table([r for r in rows if r["part"] == "sweep"], SWEEP_COLUMNS)
    if "truth" in args.part:
        tables.update(truth_tables(rows))
    save(complete=True, tables=tables)
    if "main" in args.part:
        plot_main(rows, plot_path)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
