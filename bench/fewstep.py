"""Few-step sampling (issue 35, goal 4): the reverse steps against NFE, on the 2-torus and on images.

    OMP_NUM_THREADS=1 python bench/fewstep.py [--parts torus images] [--torus-budget tiny|small]
                                              [--samples 256] [--out bench/results/fewstep.json]

torus   Kuramoto (global coupling, T = 100) on the "wrapped-mixture" density with the EXACT score of the
        discrete chain (``metrics.chain_marginal.ChainMarginal``, float64; the prior is the von Mises fitted to
        p_T): the histogram KL left is each sampler's own discretisation error; "kl_floor" is the KL of as many
        exact samples. NFE 10, 25, 50, 100 (second-order steps at the odd NFE just below: 2k − 1).
images  the shipped 32-px Kuramoto-local models (fingerprints, textures): one group of --samples samples per
        (sampler, NFE), SWD ×1e3 against 4 disjoint held-out reference sets (``data.reference_sets``): the
        mean over the 4 cells with their range (one group gives no bootstrap interval: ``metrics.intervals``
        needs 2 groups), and the ratio to that model's SDE at NFE 100 (= T) measured in the same run.

Samplers: sde, ode-heun, pc (1 corrector step, snr 0.16) and sde-heun (stochastic Heun, ``sampling.steps``),
all on the uniform grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, machine, print_table, write_json
from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.data.reference_sets import crop_capacity, disjoint_crop_sets, held_out_source
from kuramoto_diffusion.data.torus import open_torus_source
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.metrics.swd import laplacian_swd
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import KuramotoConfig
from kuramoto_diffusion.processes.kuramoto import KuramotoProcess
from kuramoto_diffusion.sampling.sweep import Sampler, reverse_sweep
from torus import BUDGETS, TRUTH_DENSITY, Evaluator

SAMPLERS = ("sde", "ode-heun", "pc", "sde-heun")
TORUS_NFES = (10, 25, 50, 100)
IMAGE_NFES = (10, 25)
REFERENCE_NFE = 100  # the shipped models' T
MODELS = {"fingerprints": "fingerprints-kuramoto-local-32", "textures": "textures-kuramoto-local-32"}
REFERENCE_SETS = 4
TORUS_COLUMNS = ["sampler", "nfe", "kl", "kl_floor", "nll", "sample_s"]
IMAGE_COLUMNS = ["data", "sampler", "nfe", "swd", "swd_low", "swd_high", "ratio", "sample_s"]


def requested_nfe(sampler: Sampler, nfe: int) -> int:
    """A second-order step spends odd counts only (2k − 1): the odd NFE at or just below ``nfe``."""
    return nfe - 1 if sampler.step.second_order and nfe % 2 == 0 else nfe


def run_torus(budget_name: str, seed: int, rows: list[dict]) -> None:
    budget = BUDGETS[budget_name]
    density = open_torus_source(TRUTH_DENSITY)
    evaluator = Evaluator(density, budget, seed)
    process = KuramotoProcess(KuramotoConfig(coupling="global", steps=100))
    chain = ChainMarginal(process, density, budget.truth_grid)
    exact = KuramotoProcess(dataclasses.replace(process.config, prior_concentration=chain.prior_concentration()))
    score_fn = chain.score_fn()
    for name in SAMPLERS:
        sampler = Sampler(name)
        for nfe in TORUS_NFES:
            begin = time.perf_counter()
            x_start = exact.prior_sample(
                (budget.samples, 2), generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64
            )
            result = reverse_sweep(
                exact,
                score_fn,
                x_start,
                sampler=sampler,
                nfe=requested_nfe(sampler, nfe),
                generator=torch.Generator().manual_seed(seed + 1),
            )
            row = {
                "part": "torus",
                "sampler": name,
                "nfe": result.function_evaluations,
                **evaluator.metrics(wrap(result.states)),
                "sample_s": time.perf_counter() - begin,
            }
            rows.append(row)
            print(
                f"torus {name:9s} nfe {row['nfe']:4d}  KL {row['kl']:.4f} (floor {row['kl_floor']:.4f})  "
                f"NLL {row['nll']:.4f}",
                flush=True,
            )


def run_images(data: str, samples: int, seed: int, rows: list[dict]) -> None:
    model = DiffusionModel.from_pretrained(MODELS[data])
    source = held_out_source(data, 32, seed=seed, channels=1, minimum=REFERENCE_SETS * samples)
    size = min(samples, crop_capacity(source, REFERENCE_SETS, seed))
    references = disjoint_crop_sets(source, REFERENCE_SETS, size, seed)
    runs = [("sde", REFERENCE_NFE)] + [(name, nfe) for nfe in IMAGE_NFES for name in SAMPLERS]
    first = len(rows)
    for name, nfe in runs:
        sampler = Sampler(name)
        begin = time.perf_counter()
        result = model.sample(
            samples,
            sampler=sampler,
            nfe=requested_nfe(sampler, nfe),
            generator=torch.Generator().manual_seed(seed + 1),
            batch_size=samples,
        )
        images = model.decode(result.states)[0].cpu()
        sample_s = time.perf_counter() - begin
        cells = np.array([laplacian_swd(reference, images, seed=seed)["swd_mean"] for reference in references])
        row = {
            "part": "images",
            "data": data,
            "sampler": name,
            "nfe": result.function_evaluations,
            "swd": float(cells.mean()),
            "swd_low": float(cells.min()),
            "swd_high": float(cells.max()),
            "swd_cells": cells.tolist(),
            "reference_size": size,
            "sample_s": sample_s,
        }
        rows.append(row)
        row["ratio"] = row["swd"] / rows[first]["swd"]
        print(
            f"{data:12s} {name:9s} nfe {row['nfe']:4d}  SWD {row['swd']:.2f} [{row['swd_low']:.2f}, {row['swd_high']:.2f}]  ratio {row['ratio']:.3f}  "
            f"({sample_s:.0f} s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("torus", "images"), default=["torus", "images"])
    parser.add_argument("--torus-budget", choices=("tiny", "small"), default="small")
    parser.add_argument("--data", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "fewstep.json")
    args = parser.parse_args()
    rows: list[dict] = []
    started = time.perf_counter()
    tables: dict[str, str] = {}

    def save(complete: bool) -> None:
        write_json(
            args.out,
            {
                "command": "OMP_NUM_THREADS=1 python bench/fewstep.py",
                "settings": vars(args),
                "machine": machine(),
                "complete": complete,
                "wall_s": time.perf_counter() - started,
                "rows": rows,
                "tables": tables,
            },
            quiet=not complete,
        )

    if "torus" in args.parts:
        run_torus(args.torus_budget, args.seed, rows)
        save(False)
    if "images" in args.parts:
        for data in args.data:
            run_images(data, args.samples, args.seed, rows)
            save(False)
    for part, columns in (("torus", TORUS_COLUMNS), ("images", IMAGE_COLUMNS)):
        chosen = [row for row in rows if row["part"] == part]
        if chosen:
            tables[part] = print_table(chosen, columns)
    save(True)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
