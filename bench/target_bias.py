"""The DSM targets themselves against the chain's exact score on the 2-torus: bias and noise per t, no training.

    python bench/target_bias.py [--steps 100 1000] [--chains 100000] [--grid 128] [--seed 0]
                                [--out bench/results/target_bias.json]

For Kuramoto (global coupling, two phases) started from the "wrapped-mixture" density, the exact
marginal p_t of the chain (``metrics.chain_marginal``) gives the true score at every query point.
Each objective's regression target y at its query point x' (``training/objectives/``) is compared with it:

* slope: the least-squares slope of y on ∇ log p(x'), with its standard error. An unbiased target,
  E[y | x'] = ∇ log p(x'), has slope 1; a network trained on y learns about slope × the true score.
* noise: the standard deviation of y − ∇ log p(x') per element (what the network must average away),
  beside the true score's root mean square (the signal).

Targets: ``markov`` h = 1 (the paper's loss, exact one-step kernel), ``markov`` h = 10 (the merged-Euler
window, stride 10 from the chain state 10 steps earlier; the trained window draws strides 1 … 10),
``linearised`` h = 10 (the linearised kernel from the same state; "flow" in results before 2026-12) and
``propagated`` (one exact step from chains that carry their estimate, run from the data). Query points of the
markov and linearised targets are
drawn from their own kernels, as in training; the propagated ones are the chain's own states.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.data.torus import open_torus_source
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.training.objectives import kernel_draw, propagated_draw

COLUMNS = ["T", "target", "t", "slope", "slope_se", "noise", "signal"]


def query_times(steps: int) -> list[int]:
    return sorted({max(1, round(steps * f)) for f in (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)})


def compare(target: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    residual = target - truth
    products = (residual * truth).sum(1)
    norm = float((truth * truth).sum(1).mean())
    return {
        "slope": 1.0 + float(products.mean()) / norm,
        "slope_se": float(products.std()) / math.sqrt(len(products)) / norm,
        "noise": float(residual.std()),
        "signal": float(truth.square().mean().sqrt()),
    }


def run(steps: int, chains: int, grid: int, seed: int) -> list[dict]:
    process = KuramotoProcess(KuramotoConfig(coupling="global", steps=steps))
    density = open_torus_source("wrapped-mixture")
    times = query_times(steps)
    begin = time.perf_counter()
    chain = ChainMarginal(process, density, grid, keep=times)
    print(f"T {steps}: exact marginal on {grid}² in {time.perf_counter() - begin:.0f} s", flush=True)
    generator = torch.Generator().manual_seed(seed)
    x = density.sample(chains, generator, dtype=torch.float64)
    estimate = torch.zeros_like(x)
    history = {0: x}
    rows = []
    for step in range(steps):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x, estimate, _ = propagated_draw(process, x, torch.full((chains,), step), estimate, noise)
        query = step + 1
        if any(0 <= t - query <= 10 for t in times):  # the markov and linearised targets start up to 10 steps earlier
            history[query] = x
        if query in times:
            rows.append({"T": steps, "target": "propagated", "t": query, **compare(estimate, chain.score_at(query, x))})
    for label, window, linearised in (("markov h1", 1, False), ("markov h10", 10, False), ("linearised h10", 10, True)):
        for query in times:
            start = max(0, query - window)
            begin_t = torch.full((chains,), start)
            stride = torch.full((chains,), query - start)
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x_next, target, _ = kernel_draw(process, history[start], begin_t, stride, noise, linearised=linearised)
            rows.append({"T": steps, "target": label, "t": query, **compare(target, chain.score_at(query, x_next))})
    for row in rows:
        print(
            f"T {row['T']:4d} {row['target']:12s} t {row['t']:4d}  slope {row['slope']:.3f} ± {row['slope_se']:.3f}  "
            f"noise {row['noise']:.3f}  signal {row['signal']:.3f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--chains", type=int, default=100_000)
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "target_bias.json")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    rows: list[dict] = []
    for steps in args.steps:
        rows += run(steps, args.chains, args.grid, args.seed)
        write_json(args.out, {"complete": False, "rows": rows})
    write_json(args.out, {"complete": True, "chains": args.chains, "grid": args.grid, "seed": args.seed, "rows": rows})
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
