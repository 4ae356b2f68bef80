"""How noisy is the training gradient? Every DSM objective at the same fixed weights, per band of t.

    python bench/gradient_noise.py [--budget tiny|small] [--seed 0] [--device auto]
                                   [--train-steps N] [--replicates R] [--batch B] [--explain E]
                                   [--out bench/results/gradient_noise.json]

The diagnosis it tests (SPEC §3, §11): Markov DSM on the one-step (or h-step) Kuramoto kernel
regresses a unit-variance target whose useful part, σ times the marginal score, is only a fraction
≈ h·σ_t²/Σσ² of it, while DDPM's ε-target is anchored to the data; so at equal budget the Kuramoto
network learns from a far noisier gradient.

1. Trains a tiny UNet on 32-px fingerprints (train split) with Kuramoto-local at T = 100 (the
   former default objective, markov window 10 with one draw, so that runs stay comparable) and the same UNet under the Euclidean
   VP process (DDPM's ε-loss), with the trainer as bench/quality.py does. The weights are then
   fixed: the EMA network of each run (what the samplers use), in eval mode.
2. At those weights, for each objective below and each band of query steps t = s + stride, draws R
   independent minibatches of B network examples (B / draws starting states), all with t in the
   band, and takes the gradient g of the objective's loss (``Objective.loss``) w.r.t. every network parameter.
   Chain objectives draw (s, stride) from the trainer's rule (s uniform in 0 … T−1, stride uniform
   in 1 … min(h, T − s)) conditioned on s + stride in the band, with x_s an exact chain state (each
   replicate simulates fresh chains from fresh data); anchored ones (Euclidean, linearised with window T)
   start from the data at s = 0 with stride = t uniform in the band, as the trainer does.
3. From the Gram matrix of the R gradients (unbiased U-statistics):
     noise   B · E‖g − ḡ‖²   the trace of the gradient covariance per network example (for
                             draws > 1 the examples of a state are correlated; this is the
                             equal-work figure);
     signal  ‖ḡ‖²            the mean of ⟨g_r, g_r'⟩ over r ≠ r' (can come out < 0 when the
                             noise swamps it), with a jackknife standard error;
     SNR     ‖ḡ‖² / E‖g − ḡ‖²  at the minibatch size B; the batch at which the noise equals the
                             signal ("gradient noise scale", McCandlish et al. 2018) is B / SNR;
     cos     cos(ḡ, ḡ of markov h1), the paper's unbiased loss: how far each remedy's mean
             gradient turns away from it (its bias, as the network sees it), Kuramoto rows only;
     explained  1 − loss / E[target²] on the first E replicates: the fraction of the unit-variance
             target σ·s* (c·s*·σ/|c|) that the network's prediction explains (E[target²] is the
             same loss with a network that predicts zero); beside it the heuristic ceiling of the
             Markov target, E[σ²(s, stride) / σ²(0, s + stride)] ≈ h·σ_t²/Σσ².

Objectives (Kuramoto-local model unless marked): markov h1 (the paper's loss), markov h10 (the
default window), markov h10 d2 (two independent draws: the control for the antithetic pair),
antithetic h10 d2, linearised hT (the linearised kernel from the data), linearised h20 (from the chain),
linearised-antithetic hT d2 (results before 2026-12 call these "flow"), propagated (one exact step from chain states carrying their score estimate), and
the Euclidean model's ε-loss.

Budgets (one CPU thread; times measured with OMP_NUM_THREADS=1 on the 2-core development
machine while two other benchmark processes shared it):

tiny   5 training steps of 8, R = 3 minibatches of B = 8: 20 s; checks the script end to end.
small  300 training steps of 32 per model (lr 5e-4, warm-up 50, EMA 0.99), R = 32, B = 32,
       E = 8: 547 s (146 s of training for both models, 401 s for the 1,280 gradients).

Writes the JSON (``complete`` false until the end) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from torch import Tensor

from common import RESULTS, print_table, train_quietly, write_json
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.config import Objective as ObjectiveName
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, ProcessConfig
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.training.objectives import Objective as DSMObjective
from kuramoto_diffusion.training.objectives import StartingStates, build_objective, propagated_draw

STEPS = 100  # T
IMAGE_SIZE = 32
BANDS = ((1, 5), (6, 10), (11, 25), (26, 50), (51, 100))  # query steps t, inclusive


@dataclasses.dataclass(frozen=True)
class Budget:
    train_steps: int
    train_batch: int
    lr: float
    warmup_steps: int
    ema_decay: float
    replicates: int  # R minibatches per (objective, band)
    batch: int  # B network examples per minibatch
    explain: int  # replicates on which the explained fraction is measured


BUDGETS = {
    "tiny": Budget(5, 8, 1e-3, 2, 0.9, 3, 8, 2),
    "small": Budget(300, 32, 5e-4, 50, 0.99, 32, 32, 8),
}


@dataclasses.dataclass(frozen=True)
class Objective:
    label: str
    model: str  # "kuramoto" or "euclidean"
    name: ObjectiveName  # config.OBJECTIVES
    window: int  # 0: the objective's default
    draws: int


OBJECTIVES = (
    Objective("markov h1 (paper)", "kuramoto", "markov", 1, 1),
    Objective("markov h10", "kuramoto", "markov", 10, 1),
    Objective("markov h10 d2", "kuramoto", "markov", 10, 2),
    Objective("antithetic h10 d2", "kuramoto", "antithetic", 10, 2),
    Objective("linearised hT (anchored)", "kuramoto", "linearised", 0, 1),
    Objective("linearised h20", "kuramoto", "linearised", 20, 1),
    Objective("linearised-antithetic hT d2", "kuramoto", "linearised-antithetic", 0, 2),
    Objective("propagated", "kuramoto", "propagated", 0, 1),
    Objective("euclidean ε (DDPM)", "euclidean", "markov", 0, 1),
)
REFERENCE = "markov h1 (paper)"


def process_for(model: str) -> ProcessConfig:
    return EuclideanConfig(steps=STEPS) if model == "euclidean" else KuramotoConfig(coupling="local", steps=STEPS)


def train(model: str, budget: Budget, seed: int, device: torch.device) -> tuple[DiffusionModel, float]:
    """The tiny UNet trained with the former default objective (Kuramoto: markov h10; Euclidean: ε)."""
    source = open_image_source("fingerprints", IMAGE_SIZE, channels=1, split="train", seed=seed)
    config = RunConfig(
        model=image_model_config(process_for(model), 1, IMAGE_SIZE, "tiny"),
        data=DataConfig(source="fingerprints", image_size=IMAGE_SIZE, channels=1, seed=seed),
        training=TrainConfig(
            train_steps=budget.train_steps,
            batch_size=budget.train_batch,
            lr=budget.lr,
            objective="markov",
            warmup_steps=budget.warmup_steps,
            ema_decay=budget.ema_decay,
            ema_warmup_steps=min(100, budget.train_steps // 3),
            checkpoint_every=10**9,
            sample_every=0,
            log_every=max(1, budget.train_steps // 10),
            seed=seed,
        ),
    )
    return train_quietly(config, source, device)


def dsm_objective(objective: Objective, model: DiffusionModel) -> DSMObjective:
    """The training objective object of ``objective`` on the model's process (no data: starting states are given)."""
    return build_objective(
        model.process, TrainConfig(objective=objective.name, window=objective.window, draws=objective.draws)
    )


def band_pairs(window: int, band: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """All (s, stride) of the trainer's chain rule with s + stride in the band, and their probabilities."""
    low, high = band
    starts, strides, weights = [], [], []
    for s in range(STEPS):
        room = min(window, STEPS - s)
        for k in range(1, room + 1):
            if low <= s + k <= high:
                starts.append(s)
                strides.append(k)
                weights.append(1.0 / room)  # P(s) = 1/T is common to all
    return torch.tensor(starts), torch.tensor(strides), torch.tensor(weights, dtype=torch.float64)


def propagated_trajectory(process, x0: Tensor, steps: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """Chain states 0 … steps and the propagated objective's score estimates they carry (zeros at step 0)."""
    states, estimates = [x0], [torch.zeros_like(x0)]
    for step in range(steps):
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x, estimate, _ = propagated_draw(
            process, states[-1], torch.full((len(x0),), step, device=x0.device), estimates[-1], noise
        )
        states.append(x)
        estimates.append(estimate)
    return torch.stack(states), torch.stack(estimates)


class ZeroNetwork(torch.nn.Module):
    """Predicts zero: its loss is E[target²], the second moment of the unit-variance target."""

    def forward(self, x: Tensor, time: Tensor, condition: Tensor | None, class_labels: Tensor | None) -> Tensor:
        return torch.zeros_like(x)


def gram_statistics(gradients: Tensor, batch: int) -> dict[str, float]:
    """Noise, signal (with its jackknife error) and SNR from R gradients (R × P), all unbiased."""
    gram = gradients.double() @ gradients.double().T
    r = gram.shape[0]
    total, trace = float(gram.sum()), float(gram.trace())
    variance = (trace - total / r) / (r - 1)  # E‖g − ḡ‖² of one minibatch
    signal = (total - trace) / (r * (r - 1))  # ‖ḡ‖²: mean of ⟨g_r, g_r'⟩, r ≠ r'
    row_sums, diagonal = gram.sum(1), gram.diagonal()
    leave_out = (total - 2 * row_sums + diagonal - (trace - diagonal)) / ((r - 1) * (r - 2)) if r > 2 else None
    signal_se = (
        float(((r - 1) / r * ((leave_out - leave_out.mean()) ** 2).sum()).sqrt())
        if leave_out is not None
        else float("nan")
    )
    return {
        "noise": batch * variance,
        "minibatch_variance": variance,
        "signal": signal,
        "signal_se": signal_se,
        "snr": signal / variance,
        "snr_se": signal_se / variance,
        "noise_scale_batch": batch * variance / signal,
        "mean_gradient_norm_sq_naive": total / r**2,
    }


def cross_cosine(first: Tensor, second: Tensor, first_signal: float, second_signal: float) -> float:
    """cos(ḡ₁, ḡ₂) with ⟨ḡ₁, ḡ₂⟩ from replicates r ≠ r' (they share data within a replicate)."""
    cross = first.double() @ second.double().T
    r = cross.shape[0]
    inner = (float(cross.sum()) - float(cross.trace())) / (r * (r - 1))
    if first_signal <= 0 or second_signal <= 0:
        return float("nan")
    return inner / (first_signal * second_signal) ** 0.5


def measure(models: dict[str, DiffusionModel], budget: Budget, seed: int, device: torch.device, save) -> list[dict]:  # noqa: ANN001 - save: (list[dict]) -> None
    source = open_image_source("fingerprints", IMAGE_SIZE, channels=1, split="train", seed=seed)
    data_generator = torch.Generator().manual_seed(10_000 + seed)
    pair_generator = torch.Generator().manual_seed(20_000 + seed)
    noise_generator = torch.Generator(device=device).manual_seed(30_000 + seed)
    parameters = {}
    for name, model in models.items():
        model.network.eval().requires_grad_(True)
        parameters[name] = [p for p in model.network.parameters()]
    objects = {o.label: dsm_objective(o, models[o.model]) for o in OBJECTIVES}
    windows = {label: objective.window for label, objective in objects.items()}
    zero = ZeroNetwork()
    batch, replicates = budget.batch, budget.replicates
    rows: list[dict] = []
    for band in BANDS:
        started = time.perf_counter()
        pairs = {o.label: band_pairs(windows[o.label], band) for o in OBJECTIVES}
        gradients = {o.label: torch.zeros(replicates, sum(p.numel() for p in parameters[o.model])) for o in OBJECTIVES}
        losses = {o.label: [] for o in OBJECTIVES}
        explained = {o.label: [0.0, 0.0] for o in OBJECTIVES}  # Σ loss, Σ E[target²]
        ceiling = {o.label: [] for o in OBJECTIVES}
        for r in range(replicates):
            data = source.sample_batch(batch, data_generator).to(device)
            kuramoto = models["kuramoto"]
            x0 = {"kuramoto": kuramoto.encode(data), "euclidean": models["euclidean"].encode(data)}
            # Exact chain states: fresh chains from this replicate's data, every state up to step band_end − 1.
            # They carry the propagated objective's score estimates (the states are the same chain either way).
            trajectory, estimates = propagated_trajectory(
                kuramoto.process, x0["kuramoto"], band[1] - 1, noise_generator
            )
            for objective in OBJECTIVES:
                model = models[objective.model]
                process = model.process
                states = batch // objective.draws
                if objects[objective.label].anchored_at_data:
                    x_start = x0[objective.model][:states]
                    t_start = torch.zeros(states, dtype=torch.long, device=device)
                    stride = torch.randint(band[0], band[1] + 1, (states,), generator=pair_generator).to(device)
                else:
                    starts, strides, weights = pairs[objective.label]
                    index = torch.multinomial(weights, states, replacement=True, generator=pair_generator)
                    t_start, stride = starts[index].to(device), strides[index].to(device)
                    x_start = trajectory[t_start, torch.arange(states, device=device)]
                    ceiling[objective.label] += (
                        process.noise_variance(t_start.cpu(), stride.cpu())
                        / process.noise_variance(0, (t_start + stride).cpu())
                    ).tolist()
                dsm = objects[objective.label]
                carried = (
                    estimates[t_start, torch.arange(states, device=device)] if type(dsm).carry is not None else None
                )
                example = dsm.examples_from(StartingStates(x_start, t_start, stride, None, carried), noise_generator)
                loss = dsm.loss(model.network, example)
                grads = torch.autograd.grad(loss, parameters[objective.model], allow_unused=True)
                gradients[objective.label][r] = torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1).cpu()
                        for g, p in zip(grads, parameters[objective.model])
                    ]
                )
                losses[objective.label].append(float(loss.detach()))
                if r < budget.explain:
                    with torch.no_grad():
                        second_moment = dsm.loss(zero, example)
                    explained[objective.label][0] += float(loss.detach())
                    explained[objective.label][1] += float(second_moment)
        statistics = {o.label: gram_statistics(gradients[o.label], batch) for o in OBJECTIVES}
        reference = gradients[REFERENCE]
        for objective in OBJECTIVES:
            stats = statistics[objective.label]
            cosine = (
                cross_cosine(gradients[objective.label], reference, stats["signal"], statistics[REFERENCE]["signal"])
                if objective.model == "kuramoto" and objective.label != REFERENCE
                else None
            )
            loss_sum, moment_sum = explained[objective.label]
            rows.append(
                {
                    "objective": objective.label,
                    "model": objective.model,
                    "loss_name": objective.name,
                    "window": windows[objective.label],
                    "draws": objective.draws,
                    "anchored": objects[objective.label].anchored_at_data,
                    "band": f"{band[0]}–{band[1]}",
                    "t_low": band[0],
                    "t_high": band[1],
                    "replicates": replicates,
                    "batch": batch,
                    **stats,
                    "cos_reference": cosine,
                    "loss": sum(losses[objective.label]) / len(losses[objective.label]),
                    "target_second_moment": moment_sum / max(1, min(budget.explain, replicates)),
                    "explained": 1.0 - loss_sum / moment_sum if moment_sum > 0 else float("nan"),
                    "markov_ceiling": (
                        sum(ceiling[objective.label]) / len(ceiling[objective.label])
                        if ceiling[objective.label]
                        else None
                    ),
                }
            )
        print(
            f"band t {band[0]}–{band[1]}: {replicates} × {len(OBJECTIVES)} gradients in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        save(rows)
    return rows


def band_table(rows: list[dict], value) -> list[dict]:  # noqa: ANN001 - value: row -> object
    """Rows: objectives; columns: t bands."""
    table = []
    for objective in OBJECTIVES:
        line: dict[str, object] = {"objective": objective.label}
        for row in rows:
            if row["objective"] == objective.label:
                line[f"t {row['band']}"] = value(row)
        table.append(line)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-steps", type=int, default=None, help="instead of the budget's")
    parser.add_argument("--replicates", type=int, default=None, help="R minibatches per cell, instead of the budget's")
    parser.add_argument("--batch", type=int, default=None, help="B network examples per minibatch (even)")
    parser.add_argument("--explain", type=int, default=None, help="replicates for the explained fraction")
    parser.add_argument("--out", type=Path, default=RESULTS / "gradient_noise.json")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    overrides = {
        "train_steps": args.train_steps,
        "replicates": args.replicates,
        "batch": args.batch,
        "explain": args.explain,
    }
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    if budget.batch % 2 or budget.replicates < 3:
        parser.error("--batch must be even (draws = 2) and --replicates at least 3")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    training: dict[str, float] = {}
    models: dict[str, DiffusionModel] = {}
    for name in ("kuramoto", "euclidean"):
        models[name], training[name] = train(name, budget, args.seed, device)
        print(f"trained {name} in {training[name]:.0f} s", flush=True)
    settings = {
        "budget": args.budget,
        **dataclasses.asdict(budget),
        "seed": args.seed,
        "T": STEPS,
        "image_size": IMAGE_SIZE,
        "data": "fingerprints",
        "coupling": "local",
        "bands": BANDS,
        "weights": "EMA network of each run, eval mode",
        "trained_with": "kuramoto: markov h10 d1 (library default); euclidean: ε-loss",
    }

    def save(rows: list[dict], complete: bool = False, tables: dict[str, str] | None = None) -> None:
        payload = {
            "command": f"python bench/gradient_noise.py --budget {args.budget}",
            "complete": complete,
            "settings": settings,
            "train_s": training,
            "wall_s": time.perf_counter() - started,
            "rows": rows,
            **(tables or {}),
        }
        write_json(args.out, payload, quiet=not complete)

    rows = measure(models, budget, args.seed, device, save)
    tables = {}
    print(f"\nGradient SNR ‖ḡ‖² / E‖g − ḡ‖² at a minibatch of B = {budget.batch} network examples (± jackknife)")
    tables["table_snr"] = print_table(
        band_table(rows, lambda r: f"{r['snr']:.3g} ± {r['snr_se']:.2g}"),
        ["objective", *[f"t {a}–{b}" for a, b in BANDS]],
    )
    print("\nGradient noise per network example: B · E‖g − ḡ‖² (trace of the covariance)")
    tables["table_noise"] = print_table(
        band_table(rows, lambda r: r["noise"]), ["objective", *[f"t {a}–{b}" for a, b in BANDS]]
    )
    print("\nGradient signal ‖ḡ‖² (unbiased; < 0 when swamped by the noise)")
    tables["table_signal"] = print_table(
        band_table(rows, lambda r: f"{r['signal']:.3g} ± {r['signal_se']:.2g}"),
        ["objective", *[f"t {a}–{b}" for a, b in BANDS]],
    )
    print(f"\ncos(ḡ, ḡ of {REFERENCE}): the mean gradient's direction against the paper's unbiased loss")
    tables["table_cosine"] = print_table(
        band_table([r for r in rows if r["cos_reference"] is not None], lambda r: r["cos_reference"]),
        ["objective", *[f"t {a}–{b}" for a, b in BANDS]],
    )
    print(
        "\nFraction of the unit-variance target explained by the network: 1 − loss / E[target²] "
        "(Markov rows: [heuristic ceiling E σ²(s, k)/σ²(0, s+k)])"
    )
    tables["table_explained"] = print_table(
        band_table(
            rows,
            lambda r: (
                f"{r['explained']:.3g}"
                + (
                    f" [{r['markov_ceiling']:.2g}]"
                    if r["markov_ceiling"] is not None and r["loss_name"] not in ("flow", "linearised")
                    else ""
                )
            ),
        ),
        ["objective", *[f"t {a}–{b}" for a, b in BANDS]],
    )
    print(f"\nwall time {time.perf_counter() - started:.0f} s (training {sum(training.values()):.0f} s)")
    save(rows, complete=True, tables=tables)


if __name__ == "__main__":
    main()
