"""How far each Kuramoto prior is from the forward chain's t = T states (issue 31 §4), per regime, and what a draw costs.

    python bench/prior_gap.py [--data fingerprints] [--regimes local local:k10:ref0.15] [--images 256] [--size 32]
                              [--steps 100] [--relax-steps 50 200 1000] [--seed 0] [--out bench/results/prior_gap.json]

For each data set and regime (written as in bench/synchrony.py: ``local:k10:ref0.15`` is local coupling with the
coupling range × 10 and κ_ref 0.15) it does what training's prior fit does (``metrics.prior_gap.compare_priors``):
takes --images training crops (grey, --size px), simulates them to t = T, fits the von Mises κ to those terminal
states and the forward-chain prior's start to the crops, then draws as many states from each prior, the relaxed one
at every --relax-steps L, and measures the gap (``metrics.prior_gap.prior_gap``: the correlation curve at d = 1 … 8,
R's mean and spread, the MMD² test with its permutation p-value, and whether all are within tolerance).

Cost: the seconds to draw the --images states of each prior, as a ratio to one forward pass of the ``small`` UNet on
the same batch, timed in the same run (a sampler spends NFE such passes). docs/priors.md shows the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.metrics.prior_gap import PriorTolerance, prior_gap
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import KuramotoProcess
from kuramoto_diffusion.processes.priors import prior_chain_steps
from synchrony import regime_config


def network_pass_seconds(process: KuramotoProcess, states: torch.Tensor) -> float:
    """Seconds of one forward pass of the ``small`` UNet on ``states`` (the reference of the cost ratios)."""
    model = DiffusionModel(image_model_config(process.config, 1, states.shape[-1], "small"))
    time_input = torch.full((len(states),), 0.5)
    states = states.float()  # the network takes the states and reads phases as (cos, sin) itself
    model.network(states[:2], time_input[:2])  # warm-up
    began = time.perf_counter()
    model.network(states, time_input)
    return time.perf_counter() - began


def regime_rows(data: str, spec: str, crops: torch.Tensor, args: argparse.Namespace) -> list[dict[str, object]]:
    process = KuramotoProcess(regime_config(spec, args.steps))
    theta0 = ImageCodec.for_process(process).encode(crops.to(torch.float64))
    generator = torch.Generator().manual_seed(args.seed + 1)
    terminal = process.simulate(theta0, process.steps, generator=generator)
    fitted, report = process.with_prior_from_terminal(terminal, initial=theta0)
    reference = network_pass_seconds(fitted, terminal)
    candidates = [("von-mises", None), *(("relaxed", steps) for steps in args.relax_steps), ("forward-chain", None)]
    rows = []
    for prior, steps in candidates:
        settings = {"prior": prior, **({} if steps is None else {"prior_relax_steps": steps})}
        candidate = KuramotoProcess(dataclasses.replace(fitted.config, **settings))
        draws_generator = torch.Generator().manual_seed(args.seed + 2)
        began = time.perf_counter()
        draws = candidate.prior_sample(tuple(terminal.shape), generator=draws_generator, dtype=torch.float64)
        seconds = time.perf_counter() - began
        gap = prior_gap(
            terminal,
            draws,
            prior=prior,
            ref_phase=fitted.config.ref_phase,
            generator=draws_generator,
            chain_steps=prior_chain_steps(candidate, prior),
        )
        rows.append(
            {
                "data": data,
                "regime": spec,
                "prior": prior if steps is None else f"relaxed L{steps}",
                "chain_steps": gap.chain_steps,
                "d1 terminal / prior": f"{gap.terminal_correlation[0]:.3f} / {gap.prior_correlation[0]:.3f}",
                "d8 terminal / prior": f"{gap.terminal_correlation[-1]:.3f} / {gap.prior_correlation[-1]:.3f}",
                "correlation gap": round(gap.correlation_gap, 4),
                "R terminal / prior": f"{gap.terminal_order[0]:.3f} ± {gap.terminal_order[1]:.3f} / "
                f"{gap.prior_order[0]:.3f} ± {gap.prior_order[1]:.3f}",
                "MMD²": round(gap.mmd2, 4),
                "p": round(gap.p_value, 3),
                "passes": gap.passes,
                "draw cost / network pass": round(seconds / reference, 3),
                "gap": dataclasses.asdict(gap),
                "fitted_kappa": report.concentration,
                "fitted_start": report.start,
                "draw_seconds": seconds,
                "network_pass_seconds": reference,
            }
        )
    return rows


COLUMNS = [
    "data",
    "regime",
    "prior",
    "chain_steps",
    "d1 terminal / prior",
    "d8 terminal / prior",
    "correlation gap",
    "R terminal / prior",
    "MMD²",
    "p",
    "passes",
    "draw cost / network pass",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["fingerprints"])
    parser.add_argument("--regimes", nargs="+", default=["local", "local:k10:ref0.15"])
    parser.add_argument("--images", type=int, default=256, help="training crops per data set (and draws per prior)")
    parser.add_argument("--size", type=int, default=32, help="crop side (px)")
    parser.add_argument("--steps", type=int, default=100, help="T")
    parser.add_argument("--relax-steps", type=int, nargs="+", default=[50, 200, 1000], help="L of the relaxed rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "prior_gap.json")
    args = parser.parse_args()
    for spec in args.regimes:
        regime_config(spec, args.steps)  # bad specs fail before any work
    torch.set_grad_enabled(False)
    rows = []
    for data in args.data:
        source = open_image_source(data, args.size, channels=1, split="train", seed=args.seed)
        crops = source.sample_batch(args.images, torch.Generator().manual_seed(args.seed))
        for spec in args.regimes:
            rows.extend(regime_rows(Path(data).name, spec, crops, args))
    print_table(rows, COLUMNS)
    write_json(
        args.out,
        {
            "command": shlex.join(["python", "bench/prior_gap.py", *sys.argv[1:]]),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "tolerance": dataclasses.asdict(PriorTolerance()),
            "threads": torch.get_num_threads(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
