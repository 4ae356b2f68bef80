"""Side by side on images: Euclidean VP against Kuramoto global and local coupling.

    python bench/quality.py [--budget tiny|small|paper] [--data fingerprints textures PATH ...]
                            [--methods euclidean kuramoto-global kuramoto-local] [--seed 0]
                            [--device auto] [--out bench/results/quality.json]
                            [--figures bench/results/quality]
                            [--objective auto|markov|antithetic|linearised|linearised-antithetic|propagated] [--window H] [--anchor A] [--draws D]
                            [--sweeps sde:0 ode:50 ...] [--save-models DIR] [--ema-decay D] [--steps T]
                            [--groups 4] [--reference-sets 4] [--reference-size N] [--load-models DIR]
                            [--run-dir DIR] [--checkpoint-every 500]

For every data set, trains each method with the same UNet, the same number of training
examples (steps × batch), the same optimiser settings and the same seed; then samples with the
reverse SDE at NFE = T (and 50) and the ODE at NFE 10, 25, 50, and evaluates every metric that
``metrics.evaluate_images`` returns (plus FID/KID with --inception-weights) by the protocol of
docs/benchmarks-protocol.md:

- the budget's samples are split into --groups G groups (default 4: 1,024 samples = 4 × 256 at the small
  budget), and every group is scored against each of --reference-sets R disjoint held-out reference sets
  (default 4; ``data.reference_sets``: no crop window is in two sets; fingerprints use disjoint held-out
  prints, extended beyond the default 512-print set as needed; the textures' held-out strips hold 291
  windows of 32 px, so their sets share no window but neighbouring windows overlap in pixels);
- each row gives each metric's mean over the G × R cells (the plain key, as before), its percentile-bootstrap
  95 % interval ("intervals"), and the cell tables ("tables", metric -> G × R), which bench/headline.py pools
  across seeds;
- the "real" row is the floor: for each reference set, G groups of real crops from the windows outside it,
  at the models' group size, scored the same way; ``swd_excess`` is each cell's SWD minus the floor's mean
  SWD on the same reference set;
- "ratios" gives K/E of every Kuramoto row against the best Euclidean row per metric, paired by
  reference set (metrics.intervals.ratio_interval).

--reference-size N sets the crops per reference set (default: the group size, or what the held-out split
can fill if less; more sets than it can fill is an error). --norm-groups is the UNet's GroupNorm groups
(it was --groups before 2026-12-06). JSON files written before the protocol (no "tables") still --merge.

--objective, --window, --anchor and --draws set the Kuramoto models' DSM objective (training/objectives/;
the Euclidean model always trains on DDPM's ε-loss), --pool-advance n the chains their pool advances
per step (label "n n"), --pool-size N the chains in it (label "N N"; fresh data enters at n/T examples per step). With D draws per starting state the batch
holds batch ÷ D starting states, so every method's network sees the same examples. A Kuramoto
method trained with other than the default objective is labelled e.g. ``kuramoto-local[linearised h20]``.
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
--prior relaxed|forward-chain (and --prior-relax-steps L) sets the Kuramoto models' prior (label "prior:<name>[,L<L>]";
docs/priors.md); the fit at the start of training prints no gaps here, bench/prior_gap.py measures them.
--steps T trains and samples every method at T diffusion steps instead of the budget's; its rows are
labelled e.g. ``euclidean T1000`` so that --merge keeps them apart.
--load-models DIR samples and evaluates the models that --save-models DIR wrote instead of training.
--run-dir DIR trains each model in DIR/<data>_<label>_seed<S> with a checkpoint every --checkpoint-every steps
(default 500); the same command run again resumes a model killed midway from its newest whole checkpoint, to the
weights an uninterrupted run gives (the ``medium`` budget takes longer than a session on 2 cores). Its row's
``train_s`` sums the sessions (``Trainer.train_seconds``: the seconds that reached the checkpoint, then the last
call's), except after a checkpoint written before 2026-12-07, which holds no seconds: then it is the last call's share.
--val-fraction f holds out f of each data set, for training and the reference sets alike (DataConfig.val_fraction);
textures at 32 px need 0.3 to fill 4 reference sets of 256 crops (docs/benchmarks-protocol.md).

Figures in --figures: metric against NFE per data set (one line per method and sampler), sample
grids side by side (real first), and R(t) along the reverse SDE of the Kuramoto models beside
the real data's R.

Budgets (32 px grey images; one CPU thread unless you allow more):

tiny   20 steps, 16 samples (4 groups of 4) at T = 20: seconds; checks the script end to end.
small  'tiny' UNet preset, 2,000 steps of 32 (lr 5e-4, EMA 0.995) at T = 100, 1,024 samples:
       7–10 min of training per model; sampling takes 4× what it took with the former 256 samples
       (3–6 min per sweep then), and scoring G × R = 16 cells per sweep.
medium 'small' (1,024 samples) with 4× the training (8,000 steps) and only the SDE at T and the ODE at NFE 50:
       about 35 min per model on one thread; checks how the gap changes with training.
paper  'small' preset at 64 px, 100,000 steps of 64 at T = 1,000, 5,000 samples: GPU only.

Writes the JSON after every model ("complete": false until the end) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, print_table, steps_suffix, train_quietly, write_json
from kuramoto_diffusion.app.options import positive_int
from kuramoto_diffusion.circular import order_parameter
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.data.reference_sets import complement_crops, crop_capacity, disjoint_crop_sets, held_out_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics import evaluate_images
from kuramoto_diffusion.metrics.intervals import difference_table, mean_interval, ratio_interval
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, ProcessConfig
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.sampling.sweep import Sampler
from kuramoto_diffusion.serialization import field_choices
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
    val_fraction: float = 0.1  # DataConfig.val_fraction: the held-out share of each data set (--val-fraction)


BUDGETS = {
    "tiny": Budget("tiny", 32, 20, 20, 8, 1e-3, 5, 0.9, 16, 16, (("sde", 0), ("ode", 5))),
    "small": Budget(
        "tiny",
        32,
        100,
        2000,
        32,
        5e-4,
        100,
        0.995,
        1024,
        128,
        (("sde", 0), ("sde", 50), ("ode", 10), ("ode", 25), ("ode", 50)),
    ),
    "medium": Budget("tiny", 32, 100, 8000, 32, 5e-4, 100, 0.995, 1024, 128, (("sde", 0), ("ode", 50))),
    "paper": Budget(
        "small",
        64,
        1000,
        100_000,
        64,
        2e-4,
        1000,
        0.9999,
        5000,
        250,
        (("sde", 0), ("sde", 100), ("ode", 10), ("ode", 25), ("ode", 50)),
    ),
}

COLUMNS = [
    "data",
    "method",
    "sampler",
    "nfe",
    "swd_mean",
    "swd_excess",
    "orientation_w1",
    "coherence_gap",
    "log_spectral_distance",
    "pixel_w1",
    "clipped_fraction",
    "ridge_frequency_w1",
    "kid_random",
    "singular_points_w1",
    "minutiae_w1",
    "fid",
    "kid",
    "train_s",
    "sample_s",
]


def process_for(method: str, steps: int, objective: Objective | None = None) -> ProcessConfig:
    """The process a method trains with: Euclidean VP, or Kuramoto with the objective's encoding and regime."""
    if method == "euclidean":
        return EuclideanConfig(steps=steps)
    process = KuramotoConfig(coupling=method.removeprefix("kuramoto-"), steps=steps)
    if objective is None:
        return process
    if objective.phase_range:
        process = dataclasses.replace(process, phase_range=objective.phase_range * math.pi)
    return dataclasses.replace(process, **objective.regime())


MIN_REFERENCE_SIZE = 8  # fewer distinct crops per reference set make SWD and the histograms meaningless


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How samples are scored: ``groups`` groups of ``group_size`` samples, each against every one of
    ``reference_sets`` disjoint held-out sets of ``reference_size`` crops (docs/benchmarks-protocol.md)."""

    groups: int
    reference_sets: int
    group_size: int
    reference_size: int


@dataclasses.dataclass(frozen=True)
class RealSets:
    """The reference sets, and per reference set ``groups`` real groups that share no crop window with it
    (the floor: real against real at the models' set sizes)."""

    references: list[torch.Tensor]
    floors: list[list[torch.Tensor]]  # [reference set][group]
    floor_distinct: int  # distinct windows in the smallest floor draw (< groups × group_size: windows repeat)
    source_images: int  # base images of the held-out source


def protocol_for(
    data: str, budget: Budget, seed: int, groups: int, reference_sets: int, reference_size: int = 0
) -> tuple[Protocol, object]:
    """The protocol's sizes, and the held-out source they are drawn from (fingerprints: extended as needed).
    ``reference_size`` 0: the group size, or what the held-out split can fill if that is less."""
    if groups < 2:
        raise UserError(f"--groups {groups}: an interval needs at least 2 groups of samples; pass --groups 2 or more")
    if reference_sets < 2:
        raise UserError(
            f"--reference-sets {reference_sets}: an interval needs at least 2 reference sets; pass 2 or more"
        )
    group_size = budget.samples // groups
    if group_size < 2:
        raise UserError(
            f"--groups {groups}: the budget's {budget.samples} samples leave fewer than 2 per group; pass fewer groups"
        )
    # Enough held-out images (fingerprints: extended as needed) for R sets of group_size, and for the floor's
    # G groups outside any one set: (R − 1)/R of them must hold G × group_size.
    minimum = max(reference_sets * group_size, -(-groups * group_size * reference_sets // (reference_sets - 1)))
    source = held_out_source(
        data, budget.image_size, seed=seed, channels=1, minimum=minimum, val_fraction=budget.val_fraction
    )
    capacity = crop_capacity(source, reference_sets, seed)
    size = reference_size or min(group_size, capacity)
    if size > capacity or size < min(MIN_REFERENCE_SIZE, group_size):
        raise UserError(
            f"--reference-sets {reference_sets}: the held-out split of {Path(data).name} fills "
            f"{reference_sets} disjoint sets with {capacity} distinct crops each"
            f"{f', not --reference-size {reference_size}' if reference_size else ''}; "
            "ask for fewer reference sets or smaller ones, or hold out more with a larger --val-fraction"
        )
    if size < group_size:
        print(
            f"note: {Path(data).name}: the held-out split (--val-fraction {budget.val_fraction:g}) fills "
            f"{reference_sets} disjoint sets with only {size} crops each, fewer than the {group_size} samples per "
            "group; a larger --val-fraction gives larger, less noisy reference sets",
            file=sys.stderr,
        )
    return Protocol(groups, reference_sets, group_size, size), source


def real_sets(source: object, protocol: Protocol, seed: int) -> RealSets:
    """Disjoint reference sets, and for each the floor's real groups drawn from the windows outside it."""
    references = disjoint_crop_sets(source, protocol.reference_sets, protocol.reference_size, seed)
    floors, distinct = [], []
    for index in range(protocol.reference_sets):
        crops, count = complement_crops(
            source, protocol.reference_sets, index, protocol.groups * protocol.group_size, seed
        )
        floors.append(list(crops.split(protocol.group_size)))
        distinct.append(count)
    return RealSets(references, floors, min(distinct), len(source))


def score_table(
    references: list[torch.Tensor], groups: list[list[torch.Tensor]], options: dict
) -> dict[str, np.ndarray]:
    """Every metric of ``evaluate_images`` for every (group, reference set) cell: metric -> (groups, sets).
    ``groups[r][g]`` is group g as scored against reference set r (the same tensor for every r for a model)."""
    cells: dict[str, np.ndarray] = {}
    num_groups = len(groups[0])
    for r, reference in enumerate(references):
        for g in range(num_groups):
            for name, value in evaluate_images(reference, groups[r][g], **options).items():
                cells.setdefault(name, np.full((num_groups, len(references)), np.nan))[g, r] = value
    return cells


def summarise(tables: dict[str, np.ndarray], floor: dict[str, np.ndarray] | None, seed: int) -> dict:
    """Row entries of a scored table: each metric's mean (plain key, as before), its bootstrap 95 % interval,
    the cell tables, and SWD's excess over the floor (paired by reference set) where a floor is given."""
    tables = dict(tables)
    if floor is not None and "swd_mean" in tables and "swd_mean" in floor:
        tables["swd_excess"] = difference_table(tables["swd_mean"], floor["swd_mean"])
    row: dict = {name: float(table.mean()) for name, table in tables.items()}
    row["intervals"] = {name: mean_interval(table, seed=seed).as_dict() for name, table in tables.items()}
    row["tables"] = {name: table.tolist() for name, table in tables.items()}
    return row


@dataclasses.dataclass(frozen=True)
class Objective:
    """The Kuramoto models' DSM objective (the Euclidean model keeps DDPM's ε-loss)."""

    name: str = "auto"  # TrainConfig's default: propagated for Kuramoto (objectives.resolve_objective)
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
    prior: str = "von-mises"  # KuramotoConfig.prior (label "prior:<name>", with ",L<steps>" for relaxed)
    prior_relax_steps: int | None = None  # L of the relaxed prior (None: KuramotoConfig's default)

    def regime(self) -> dict:
        """The KuramotoConfig fields this objective sets."""
        regime = {"coupling_shape": self.coupling_shape, "coupling_norm": self.coupling_norm, "prior": self.prior}
        if self.prior_relax_steps is not None:
            regime["prior_relax_steps"] = self.prior_relax_steps
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
        regime += f" prior:{self.prior}" if self.prior != "von-mises" else ""
        regime += (
            f",L{self.prior_relax_steps}" if self.prior == "relaxed" and self.prior_relax_steps is not None else ""
        )
        return f"{method}[{self.name}{window}{anchor}{draws}{pool}{advance}{phase_range}{regime}]"


def with_sample_prior(model: DiffusionModel, prior: str | None) -> tuple[DiffusionModel, str]:
    """The model sampled from ``prior`` instead of its own, and the label suffix that says so.

    The prior only starts the reverse chain, so the trained weights serve any of them; a model without a
    Kuramoto prior (Euclidean) and ``prior=None`` come back unchanged, with an empty suffix.
    """
    if prior is None or not model.config.periodic:
        return model, ""
    return model.with_process(dataclasses.replace(model.config.process, prior=prior)), f" sample-prior:{prior}"


def train(
    data: str,
    method: str,
    budget: Budget,
    seed: int,
    device: torch.device,
    groups: int | None = None,
    objective: Objective = Objective(),
    run_dir: Path | None = None,
    checkpoint_every: int = 10**9,
) -> tuple[DiffusionModel, float]:
    """The EMA model of ``method`` trained at ``budget`` and the seconds it took; with ``run_dir``, trained there
    with a checkpoint every ``checkpoint_every`` steps, resuming a run killed midway (``common.train_quietly``)."""
    source = open_image_source(
        data, budget.image_size, channels=1, split="train", seed=seed, val_fraction=budget.val_fraction
    )
    kuramoto = method != "euclidean"
    draws = objective.draws if kuramoto else 1
    process = process_for(method, budget.steps, objective)
    config = RunConfig(
        model=image_model_config(
            process, 1, budget.image_size, budget.preset, **({} if groups is None else {"groups": groups})
        ),
        data=DataConfig(
            source=str(data), image_size=budget.image_size, channels=1, seed=seed, val_fraction=budget.val_fraction
        ),
        training=TrainConfig(
            train_steps=budget.train_steps,
            batch_size=budget.batch_size // draws,
            draws=draws,
            objective=objective.name if kuramoto else "markov",
            window=objective.window if kuramoto else 0,
            anchor=objective.anchor if kuramoto else 0,
            pool_size=objective.pool_size if kuramoto else 0,
            pool_advance=objective.pool_advance if kuramoto else 0,
            lr=budget.lr,
            warmup_steps=budget.warmup_steps,
            ema_decay=budget.ema_decay,
            checkpoint_every=checkpoint_every,
            sample_every=0,
            log_every=max(1, budget.train_steps // 20),
            seed=seed,
        ),
    )
    return train_quietly(config, source, device, run_dir)


def sample_and_evaluate(
    model: DiffusionModel,
    budget: Budget,
    sampler: str,
    nfe: int,
    real: RealSets,
    protocol: Protocol,
    floor: dict[str, np.ndarray],
    options: dict,
    seed: int,
) -> tuple[dict, torch.Tensor]:
    """``protocol.groups`` groups of samples of one sampler at one NFE (0: T), every metric of every group
    against every reference set with its mean and interval, and the images."""
    count = protocol.groups * protocol.group_size
    start = time.perf_counter()
    result = model.sample(
        count,
        sampler=sampler_from_spec(sampler),
        nfe=nfe or budget.steps,
        generator=torch.Generator().manual_seed(seed + 1),
        batch_size=budget.sample_batch,
    )
    images, clipped = model.decode(result.states)
    sample_s = time.perf_counter() - start
    images = images.cpu()
    groups = list(images.split(protocol.group_size))
    tables = score_table(real.references, [groups] * protocol.reference_sets, options)
    row = {
        "sampler": sampler,
        "nfe": result.function_evaluations,
        **summarise(tables, floor, seed),
        "clipped_fraction": clipped / images.numel(),
        "sample_s": sample_s,
        # values that crossed ±π along the sweep (per sample), and in its last tenth of intervals
        "seam_crossings_per_sample": sum(result.seam_crossings) / count,
        "late_seam_crossings_per_sample": sum(result.seam_crossings[-max(1, len(result.seam_crossings) // 10) :])
        / count,
    }
    return row, images


def sampler_from_spec(spec: str) -> Sampler:
    """ "pc-rho" -> Sampler("pc", grid="rho"); "sde" -> Sampler("sde")."""
    name, rho = (spec[: -len("-rho")], True) if spec.endswith("-rho") else (spec, False)
    return Sampler(name, grid="rho" if rho else "uniform")


def reverse_order_parameter(model: DiffusionModel, budget: Budget, seed: int) -> tuple[list[float], list[float]]:
    """Mean R of the sampled phases along the reverse SDE at NFE = T (16 samples): (t/T, R)."""
    result = model.sample(16, sampler="sde", generator=torch.Generator().manual_seed(seed), record_trajectory=True)
    times = [step / budget.steps for step in result.steps]
    return times, [float(r) for r in result.order_parameter]


def metric_plot(rows: list[dict], data: str, metrics: list[str]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    chosen = [row for row in rows if row["data"] == data and row["method"] != "real"]
    floor = {m: row[m] for row in rows if row["data"] == data and row["method"] == "real" for m in metrics if m in row}
    for axis, metric in zip(axes[0], metrics):
        for colour, method in enumerate(dict.fromkeys(row["method"] for row in chosen)):
            for sampler, style in (("sde", "-o"), ("ode", "--s")):
                points = sorted(
                    (r["nfe"], r[metric])
                    for r in chosen
                    if r["method"] == method and r["sampler"] == sampler and metric in r
                )
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


def order_plot(curves: dict[str, tuple[list[float], list[float]]], real_r: float, data: str) -> object:
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


METRIC_NAMES = ["swd_mean", "orientation_w1", "kid_random", "minutiae_w1"]


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
    print_rows(rows)
    return rows


def print_rows(rows: list[dict]) -> None:
    """The rows as a Markdown table; a metric with an interval prints as "mean [low, high]" (rows written before
    the interval protocol print their single value)."""

    def shown(row: dict) -> dict:
        intervals = row.get("intervals", {})
        return {
            key: (
                f"{intervals[key]['mean']:.4g} [{intervals[key]['low']:.4g}, {intervals[key]['high']:.4g}]"
                if key in intervals
                else value
            )
            for key, value in row.items()
        }

    print_table([shown(row) for row in rows], [c for c in COLUMNS if any(c in row for row in rows)])


RATIO_METRICS = ("swd_mean", "swd_excess", "orientation_w1")


def method_ratios(rows: list[dict], seed: int) -> list[dict]:
    """K/E within one run, per data set: every Kuramoto row against the Euclidean row with the lowest mean on
    each metric, with the paired bootstrap interval (paired by reference set; one seed). Rows without
    cell tables (written before the interval protocol) are left out."""
    ratios = []
    for data in dict.fromkeys(row["data"] for row in rows):
        scored = [row for row in rows if row["data"] == data and "tables" in row]
        for metric in RATIO_METRICS:
            euclidean = [row for row in scored if row["method"].startswith("euclidean") and metric in row["tables"]]
            if not euclidean:
                continue
            best = min(euclidean, key=lambda row: row[metric])
            for row in scored:
                if not row["method"].startswith("kuramoto") or metric not in row["tables"]:
                    continue
                try:
                    interval = ratio_interval(row["tables"][metric], best["tables"][metric], seed=seed)
                except UserError as error:  # e.g. a non-positive excess in the denominator
                    print(f"{data} {row['method']} {metric}: no ratio ({error})")
                    continue
                ratios.append(
                    {
                        "data": data,
                        "metric": metric,
                        "kuramoto": f"{row['method']} {row['sampler']}:{row['nfe']}",
                        "euclidean": f"{best['method']} {best['sampler']}:{best['nfe']}",
                        **interval.as_dict(),
                    }
                )
    return ratios


def parse_sweeps(sweeps: list[str]) -> tuple[tuple[str, int], ...]:
    """``sampler:NFE`` strings as (sampler, NFE) pairs."""
    parsed = []
    for sweep in sweeps:
        name, _, nfe = sweep.partition(":")
        if not nfe.isdigit():
            raise UserError(
                f"sweep {sweep!r}: expected SAMPLER:NFE, e.g. sde:0 (NFE 0 is T); give --clip-sweeps no "
                "value to skip the clipped variant"
            )
        parsed.append((name, int(nfe)))
    return tuple(parsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--data", nargs="+", default=["fingerprints", "textures"])
    parser.add_argument("--methods", nargs="+", choices=METHODS + EXTRA_METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps T instead of the budget's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--inception-weights", type=Path, default=None)
    parser.add_argument(
        "--norm-groups",
        type=int,
        default=None,
        help="GroupNorm groups of the UNet (default: the preset's; this was --groups before 2026-12-06)",
    )
    parser.add_argument(
        "--groups",
        type=int,
        default=4,
        help="score the budget's samples as this many groups (≥ 2; samples per group = budget ÷ groups)",
    )
    parser.add_argument(
        "--reference-sets",
        type=int,
        default=4,
        help="score every group against this many disjoint held-out reference sets (≥ 2)",
    )
    parser.add_argument(
        "--reference-size",
        type=int,
        default=0,
        help="crops per reference set (0: the group size, or what the held-out split can fill if less)",
    )
    parser.add_argument("--objective", default="auto", help="the Kuramoto models' DSM objective (auto: propagated)")
    parser.add_argument(
        "--window", type=int, default=0, help="the Kuramoto models' DSM window (0: the objective's default)"
    )
    parser.add_argument(
        "--draws", type=int, default=1, help="kernel draws per starting state (the batch is divided by it)"
    )
    parser.add_argument(
        "--anchor", type=int, default=0, help="the Kuramoto models' anchor horizon (TrainConfig.anchor)"
    )
    parser.add_argument(
        "--pool-advance",
        type=int,
        default=0,
        help="chains the Kuramoto models' pool advances per step (0: TrainConfig's default)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=0,
        help="chains in the Kuramoto models' pool (0: TrainConfig's default, max(T, 4·batch))",
    )
    parser.add_argument(
        "--phase-range",
        type=float,
        default=0.0,
        help="the Kuramoto models' image encoding θ = a·π·x: a in (0, 1) (0: KuramotoConfig's default, 0.5)",
    )
    parser.add_argument(
        "--coupling-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="the Kuramoto models' K per step at T = 100 (default: KuramotoConfig's, 3e-05 0.03)",
    )
    parser.add_argument(
        "--coupling-shape",
        choices=("schedule", "constant"),
        default="schedule",
        help="the Kuramoto models' K along the chain: the schedule's shape, or HI every step",
    )
    parser.add_argument(
        "--coupling-norm",
        choices=("mean-field", "unit"),
        default="mean-field",
        help="the Kuramoto models' coupling: mean of sines, or the unit-modulus sin(arg m − θ)",
    )
    parser.add_argument(
        "--ref-strength", type=float, default=None, help="the Kuramoto models' κ_ref (default: KuramotoConfig's, 1.5)"
    )
    parser.add_argument(
        "--prior",
        choices=field_choices(KuramotoConfig, "prior"),
        default="von-mises",
        help="the Kuramoto models' prior at t = T (KuramotoConfig.prior; docs/priors.md)",
    )
    parser.add_argument(
        "--sample-prior",
        choices=field_choices(KuramotoConfig, "prior"),
        default=None,
        help="sample the Kuramoto models from this prior instead of their own (the weights do not depend on it; "
        "with --load-models this scores one trained model under several priors; rows say 'sample-prior:<name>')",
    )
    parser.add_argument(
        "--prior-relax-steps",
        type=int,
        default=None,
        help="chain steps L of --prior relaxed (default: KuramotoConfig's, 200)",
    )
    parser.add_argument("--ema-decay", type=float, default=None, help="override the budget's EMA decay (all methods)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="the held-out share of each data set, for training and the reference sets (default: DataConfig's, "
        "0.1; textures at 32 px need 0.3 for 4 reference sets of 256 crops)",
    )
    parser.add_argument(
        "--save-models", type=Path, default=None, help="save each trained model (EMA) under this folder"
    )
    parser.add_argument(
        "--load-models", type=Path, default=None, help="evaluate the models --save-models wrote, without training"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="train each model in DIR/<data>_<label>_seed<S> with checkpoints, and resume one killed midway from its "
        "newest whole checkpoint (rerun the same command): for budgets longer than a session",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=500,
        help="with --run-dir: training steps between checkpoints (≥ 1)",
    )
    parser.add_argument(
        "--sweeps", nargs="+", default=None, help="(sampler:NFE ...) instead of the budget's; NFE 0 is T"
    )
    parser.add_argument(
        "--clip-sweeps",
        nargs="*",
        default=None,
        help="(sampler:NFE ...) for the clipped Euclidean variant (default: --sweeps; none: skip it)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--figures", type=Path, default=RESULTS / "quality")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="only merge the rows of these result files (later ones win), redraw the metric plots "
        "into --figures and print the table",
    )
    args = parser.parse_args()
    if args.merge:
        merge_results(args.merge, args.figures)
        return
    try:
        run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    budget = BUDGETS[args.budget]
    if args.sweeps:
        budget = dataclasses.replace(budget, sweeps=parse_sweeps(args.sweeps))
    clip_sweeps = budget.sweeps if args.clip_sweeps is None else parse_sweeps(args.clip_sweeps)
    objective = Objective(
        args.objective,
        args.window,
        args.draws,
        args.anchor,
        args.pool_advance,
        args.phase_range,
        pool_size=args.pool_size,
        coupling_range=None if args.coupling_range is None else tuple(args.coupling_range),
        coupling_shape=args.coupling_shape,
        coupling_norm=args.coupling_norm,
        ref_strength=args.ref_strength,
        prior=args.prior,
        prior_relax_steps=args.prior_relax_steps,
    )
    if args.prior_relax_steps is not None and args.prior != "relaxed":
        raise UserError("--prior-relax-steps sets the relaxed prior; add --prior relaxed or drop it")
    if args.ema_decay is not None:
        budget = dataclasses.replace(budget, ema_decay=args.ema_decay)
    if args.steps is not None:
        budget = dataclasses.replace(budget, steps=args.steps)
    if args.val_fraction is not None:
        if not 0.0 < args.val_fraction < 1.0:
            raise UserError(f"--val-fraction {args.val_fraction:g}: the held-out share must lie in (0, 1), e.g. 0.3")
        budget = dataclasses.replace(budget, val_fraction=args.val_fraction)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    rows: list[dict] = []
    order_curves: dict[str, dict] = {}
    protocols: dict[str, dict] = {}

    def save(complete: bool) -> None:
        payload = {
            "command": shlex.join(["python", "bench/quality.py", *sys.argv[1:]]),
            "complete": complete,
            "budget": args.budget,
            "objective": dataclasses.asdict(objective),
            "settings": dataclasses.asdict(budget),
            "seed": args.seed,
            "data": args.data,
            "methods": args.methods,
            "protocol": protocols,
            "rows": rows,
            "ratios": method_ratios(rows, args.seed),
            "order_parameter": order_curves,
        }
        write_json(args.out, payload, quiet=not complete)

    for data in args.data:
        label = Path(data).name if data not in ("fingerprints", "textures") else data
        fingerprints = data == "fingerprints"
        protocol, held_out = protocol_for(
            data, budget, args.seed, args.groups, args.reference_sets, args.reference_size
        )
        real = real_sets(held_out, protocol, args.seed)
        protocols[label] = {
            **dataclasses.asdict(protocol),
            "floor_distinct_crops": real.floor_distinct,
            "held_out_images": real.source_images,
        }
        print(
            f"{label}: {protocol.groups} groups of {protocol.group_size} samples against {protocol.reference_sets} "
            f"disjoint held-out sets of {protocol.reference_size} crops ({real.source_images} held-out base images; "
            f"floor groups hold {real.floor_distinct} distinct crops of {protocol.groups * protocol.group_size})",
            flush=True,
        )
        options = {"seed": args.seed, "inception_weights": args.inception_weights, "fingerprints": fingerprints}
        floor = score_table(real.references, real.floors, options)
        rows.append(
            {
                "data": label,
                "method": "real",
                "sampler": "-",
                "nfe": 0,
                **summarise(floor, None, args.seed),
                "clipped_fraction": 0.0,
                **dataclasses.asdict(protocol),
            }
        )
        grids = [("real (held out)", image_grid(real.references[0][:32], columns=16, upscale=2))]
        curves = {}
        for method in args.methods:
            if args.load_models:
                trained, train_s = (
                    DiffusionModel.from_pretrained(
                        args.load_models / f"{label}_{objective.label(method)}", device=device
                    ),
                    0.0,
                )
            else:
                trained, train_s = train(
                    data,
                    method,
                    budget,
                    args.seed,
                    device,
                    args.norm_groups,
                    objective,
                    None
                    if args.run_dir is None
                    else args.run_dir / f"{label}_{objective.label(method)}_seed{args.seed}",
                    args.checkpoint_every,
                )
            if args.save_models:
                trained.save_pretrained(args.save_models / f"{label}_{objective.label(method)}")
            # The Euclidean model is also sampled with DDPM's x₀ clipping (same weights): both
            # conventions exist in the literature, and at small budgets they differ a lot.
            # With --steps the rows say their T, and with --sample-prior the prior, so --merge keeps them apart.
            trained, prior_label = with_sample_prior(trained, args.sample_prior)
            suffix = (steps_suffix(budget.steps) if args.steps is not None else "") + prior_label
            variants = [(objective.label(method) + suffix, trained)]
            if method == "euclidean" and clip_sweeps:
                clipped_process = dataclasses.replace(trained.config.process, clip_denoised=True)
                variants.append(("euclidean-clip" + suffix, trained.with_process(clipped_process)))
            for name, model in variants:
                for sampler, nfe in clip_sweeps if name.startswith("euclidean-clip") else budget.sweeps:
                    row, images = sample_and_evaluate(
                        model, budget, sampler, nfe, real, protocol, floor, options, args.seed
                    )
                    rows.append(
                        {"data": label, "method": name, **row, "train_s": train_s, **dataclasses.asdict(protocol)}
                    )
                    if sampler == "sde" and nfe == 0:
                        grids.append((f"{name} SDE {row['nfe']}", image_grid(images[:32], columns=16, upscale=2)))
                    swd, excess = row["intervals"]["swd_mean"], row["intervals"]["swd_excess"]
                    print(
                        f"{label} {name} {sampler} NFE {row['nfe']}: swd {swd['mean']:.2f} [{swd['low']:.2f}, "
                        f"{swd['high']:.2f}], excess {excess['mean']:.2f} [{excess['low']:.2f}, {excess['high']:.2f}], "
                        f"orientation {row['orientation_w1']:.3f} ({row['sample_s']:.0f} s)",
                        flush=True,
                    )
            if trained.config.periodic:
                curves[objective.label(method)] = reverse_order_parameter(trained, budget, args.seed + 2)
            save(False)
        real_r = float(
            order_parameter(
                open_image_source(
                    data, budget.image_size, channels=1, split="val", val_fraction=budget.val_fraction
                ).sample_batch(16, torch.Generator().manual_seed(0))
                * (0.9 * torch.pi)
            )[0].mean()
        )
        order_curves[label] = {"real_R": real_r, "curves": curves}
        args.figures.mkdir(parents=True, exist_ok=True)
        save_image_atomic(labelled_rows(grids), args.figures / f"{label}_samples.png")
        save_image_atomic(metric_plot(rows, label, METRIC_NAMES), args.figures / f"{label}_metrics.png")
        if curves:
            save_image_atomic(order_plot(curves, real_r, label), args.figures / f"{label}_order_parameter.png")
    save(True)
    print_rows(rows)
    ratios = method_ratios(rows, args.seed)
    if ratios:
        print_table(
            [{**ratio, "K/E": f"{ratio['mean']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]"} for ratio in ratios],
            ["data", "metric", "kuramoto", "euclidean", "K/E"],
        )


if __name__ == "__main__":
    main()
