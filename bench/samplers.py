"""Samplers and time grids against NFE on the 2-torus, where the exact marginal of the chain is known.

    python bench/samplers.py [--budget tiny|small] [--steps 100 [1000]] [--nfes 10 25 50]
                             [--snrs 0.16 0.08] [--seed 0] [--out bench/results/samplers.json]

On the "wrapped-mixture" density (``data.torus``), for each T of --steps:

exact     Kuramoto (global coupling) with the EXACT grid score of the discrete chain
          (``metrics.chain_marginal.ChainMarginal``, G × G, float64) in every sampler: the KL left is
          the sampler's own discretisation error (the prior is the von Mises fitted exactly to p_T).
learned   the same process with a trained MLP score (``bench/torus.py``'s training, the default
          objective): the KL is discretisation plus score error; the difference to "exact" is the
          part due to the score.
euclidean the Euclidean VP baseline trained on the same data and seed (angles as they are, samples
          wrapped back), with its own σ(t) for the rho grid.

Each with sde, ode, ode-heun and pc (--snrs, one corrector step), on the uniform and the rho grid
(ρ = 7), at NFE --nfes and T (ode-heun at the nearest odd NFE). Metrics: histogram KL (50 × 50 bins)
against the true density beside the KL floor of as many exact samples, and held-out NLL.

Budgets (one CPU thread): tiny (64 × 64 grid, 30 training steps, 400 samples: seconds) checks the
script; small (128 × 128 grid, bench/torus.py's small training, 10,000 samples): about 10 min at T = 100.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.data.torus import open_torus_source
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.processes.kuramoto import KuramotoProcess
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.sampling.sweep import Sampler, reverse_sweep
from torus import BUDGETS, TRUTH_DENSITY, Evaluator, train

COLUMNS = ["T", "score", "sampler", "grid", "nfe", "kl", "kl_floor", "nll", "true_nll", "sample_s"]


def samplers(snrs: list[float]) -> list[Sampler]:
    names = [Sampler("sde"), Sampler("ode"), Sampler("ode-heun")] + [Sampler("pc", snr=snr) for snr in snrs]
    return [dataclasses.replace(each, grid=grid) for each in names for grid in ("uniform", "rho")]


def requested_nfe(sampler: Sampler, nfe: int, steps: int) -> int:
    """The NFE to ask for: ode-heun spends odd numbers only (2k − 1), at most 2T − 1."""
    if sampler.name == "ode-heun":
        return min(nfe - 1 if nfe % 2 == 0 else nfe, 2 * steps - 1)
    return nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=("tiny", "small"), default="small")
    parser.add_argument("--steps", type=int, nargs="+", default=[100])
    parser.add_argument("--nfes", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--snrs", type=float, nargs="+", default=[0.16, 0.08])
    parser.add_argument(
        "--scores", nargs="+", choices=("exact", "learned", "euclidean"), default=["exact", "learned", "euclidean"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "samplers.json")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    device = resolve_device(args.device)
    density = open_torus_source(TRUTH_DENSITY)
    evaluator = Evaluator(density, budget, args.seed)
    rows: list[dict] = []
    started = time.perf_counter()

    def save(complete: bool, table: str | None = None) -> None:
        payload = {
            "command": "OMP_NUM_THREADS=1 python bench/samplers.py "
            + " ".join([f"--budget {args.budget}", "--steps", *map(str, args.steps)]),
            "settings": {**vars(args), "budget_settings": dataclasses.asdict(budget)},
            "complete": complete,
            "wall_s": time.perf_counter() - started,
            "rows": rows,
            **({"table": table} if table else {}),
        }
        write_json(args.out, payload, quiet=not complete)

    def record(base: dict, sampler: Sampler, angles: torch.Tensor, used: int, sample_s: float) -> None:
        row = {
            **base,
            "sampler": sampler.name + (f" snr {sampler.snr:g}" if sampler.name == "pc" else ""),
            "grid": sampler.grid,
            "nfe": used,
            **evaluator.metrics(angles),
            "sample_s": sample_s,
        }
        rows.append(row)
        print(
            f"T {base['T']:4d} {base['score']:9s} {row['sampler']:12s} {sampler.grid:7s} nfe {used:4d}  "
            f"KL {row['kl']:.4f} (floor {row['kl_floor']:.4f})  NLL {row['nll']:.4f}",
            flush=True,
        )

    for steps in args.steps:
        nfes = sorted({n for n in (*args.nfes, steps) if n <= steps})
        process = KuramotoProcess(KuramotoConfig(coupling="global", steps=steps))
        sources = {}
        if "exact" in args.scores:
            chain = ChainMarginal(process, density, budget.truth_grid)
            exact_process = KuramotoProcess(
                dataclasses.replace(process.config, prior_concentration=chain.prior_concentration())
            )
            sources["exact"] = ("exact", exact_process, chain.score_fn())
        models = {}
        if "learned" in args.scores:
            models["learned"], _ = train(density, process.config, budget, args.seed, device)
        if "euclidean" in args.scores:
            models["euclidean"], _ = train(density, EuclideanConfig(steps=steps), budget, args.seed, device)
        for label, model in models.items():
            sources[label] = ("model", model, None)
        for label, (kind, owner, score_fn) in sources.items():
            base = {"T": steps, "score": label}
            for sampler in samplers(args.snrs):
                for nfe in nfes:
                    ask = requested_nfe(sampler, nfe, steps)
                    begin = time.perf_counter()
                    if kind == "exact":
                        generator = torch.Generator().manual_seed(args.seed + 2)
                        x_start = owner.prior_sample((budget.samples, 2), generator=generator, dtype=torch.float64)
                        result = reverse_sweep(
                            owner,
                            score_fn,
                            x_start,
                            sampler=sampler,
                            nfe=ask,
                            generator=torch.Generator().manual_seed(args.seed + 1),
                        )
                        angles = wrap(result.states)
                    else:
                        result = owner.sample(
                            budget.samples,
                            sampler=sampler,
                            nfe=ask,
                            batch_size=min(budget.samples, 5000),
                            generator=torch.Generator().manual_seed(args.seed + 1),
                        )
                        angles = owner.decode(result.states)[0].cpu()
                        if label == "euclidean":
                            angles = wrap(angles)
                    record(base, sampler, angles, result.function_evaluations, time.perf_counter() - begin)
            save(complete=False)
    table = print_table(rows, COLUMNS)
    save(complete=True, table=table)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
