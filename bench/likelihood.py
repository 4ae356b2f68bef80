"""Likelihood through the probability-flow ODE: learned models against the true density, and bits/dim on images.

    python bench/likelihood.py --part torus [--budget tiny|small] [--torus-nfes 200 100 50 20] [--seed 0]
    python bench/likelihood.py --part images --models DIR [--data fingerprints textures] [--num 16]
                               [--image-nfes 200 100 50] [--probes 2] [--out bench/results/likelihood.json]

torus   On each known 2-torus density (``data.torus``), trains a Kuramoto model (global coupling) and
        a Euclidean VP model (angles as they are) with ``bench/torus.py``'s training at T = 100, then
        computes the held-out NLL of each by ``DiffusionModel.log_likelihood`` (exact divergence: 2
        dimensions) at each NFE, beside the true NLL (the density's entropy estimated on the same
        held-out points) and the KDE NLL of bench/torus.py's samples-based estimate. The Euclidean
        model's density lives on ℝ²; the mass it puts outside [-π, π)² is not folded back, so its NLL
        is an upper bound of that of its wrapped samples.
images  bits/dim (uniform dequantisation) of the saved models in --models (``bench/quality.py
        --save-models DIR`` writes DIR/{data}_{method}) on --num held-out crops, with Hutchinson's
        estimator (--probes Rademacher probes per image), its standard error and the seconds per
        image.

Writes the JSON after every model and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.data.torus import TORUS_DENSITIES, open_torus_source
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.sampling.likelihood import bits_per_dim, dequantise
from torus import BUDGETS, Evaluator, train

TORUS_COLUMNS = [
    "density",
    "method",
    "nfe",
    "nll",
    "nll_se",
    "true_nll",
    "kde_nll_exact_samples",
    "seconds_per_example",
]
IMAGE_COLUMNS = [
    "data",
    "method",
    "nfe",
    "probes",
    "bits_per_dim",
    "bits_per_dim_se",
    "probe_se_bits",
    "seconds_per_image",
]


def torus_rows(args, device: torch.device, rows: list[dict], save) -> None:  # noqa: ANN001
    budget = BUDGETS[args.budget]
    for name in args.densities:
        density = open_torus_source(name)
        evaluator = Evaluator(density, budget, args.seed)
        heldout = evaluator.heldout[: args.num_torus].to(torch.float32)
        for method, process in (
            ("kuramoto-global", KuramotoConfig(coupling="global", steps=100)),
            ("euclidean", EuclideanConfig(steps=100)),
        ):
            model, _ = train(density, process, budget, args.seed, device)
            for nfe in args.torus_nfes:
                began = time.perf_counter()
                result = model.log_likelihood(heldout, nfe=nfe, batch_size=len(heldout))
                seconds = time.perf_counter() - began
                nll = -result.log_likelihood
                rows.append(
                    {
                        "part": "torus",
                        "density": name,
                        "method": method,
                        "nfe": result.function_evaluations,
                        "nll": float(nll.mean()),
                        "nll_se": float(nll.std() / math.sqrt(len(nll))),
                        "true_nll": float(-density.log_prob(heldout.double()).mean()),
                        "kde_nll_exact_samples": evaluator.nll_exact,
                        "seconds_per_example": seconds / len(nll),
                    }
                )
                print(
                    f"torus {name:18s} {method:16s} nfe {result.function_evaluations:4d}  NLL {rows[-1]['nll']:.4f} "
                    f"± {rows[-1]['nll_se']:.4f}  (true {rows[-1]['true_nll']:.4f})",
                    flush=True,
                )
            save(complete=False)


def image_rows(args, device: torch.device, rows: list[dict], save) -> None:  # noqa: ANN001
    for data in args.data:
        folders = sorted(args.models.glob(f"{data}_*"))
        if not folders:
            raise SystemExit(f"{args.models}: no {data}_* model folders (bench/quality.py --save-models writes them)")
        for folder in folders:
            model = DiffusionModel.from_pretrained(folder, device=device)
            source = open_image_source(data, model.config.image_size, channels=model.config.channels, split="val")
            images = dequantise(
                source.fixed_batch(args.num, seed=args.seed + 1), torch.Generator().manual_seed(args.seed)
            )
            dimension = math.prod(images.shape[1:])
            for nfe in args.image_nfes:
                began = time.perf_counter()
                result = model.log_likelihood(
                    images,
                    nfe=nfe,
                    probes=args.probes,
                    batch_size=args.num,
                    generator=torch.Generator().manual_seed(args.seed + 2),
                )
                seconds = time.perf_counter() - began
                bits = bits_per_dim(result.log_likelihood, dimension)
                probe_se = result.probe_standard_error.square().sum().sqrt() / len(bits) / (dimension * math.log(2))
                rows.append(
                    {
                        "part": "images",
                        "data": data,
                        "method": folder.name.removeprefix(f"{data}_"),
                        "nfe": result.function_evaluations,
                        "probes": args.probes,
                        "bits_per_dim": float(bits.mean()),
                        "bits_per_dim_se": float(bits.std() / math.sqrt(len(bits))),
                        "probe_se_bits": float(probe_se),
                        "seconds_per_image": seconds / len(bits),
                    }
                )
                print(
                    f"images {data:12s} {rows[-1]['method']:16s} nfe {rows[-1]['nfe']:4d}  bits/dim "
                    f"{rows[-1]['bits_per_dim']:.3f} ± {rows[-1]['bits_per_dim_se']:.3f} "
                    f"(probes ± {rows[-1]['probe_se_bits']:.3f})  {rows[-1]['seconds_per_image']:.1f} s/image",
                    flush=True,
                )
                save(complete=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=("torus", "images"), default=["torus"])
    parser.add_argument("--budget", choices=("tiny", "small"), default="small")
    parser.add_argument("--densities", nargs="+", choices=list(TORUS_DENSITIES), default=list(TORUS_DENSITIES))
    parser.add_argument("--num-torus", type=int, default=2000, help="held-out points per torus density")
    parser.add_argument(
        "--models", type=Path, default=None, help="with --part images: bench/quality.py --save-models DIR"
    )
    parser.add_argument("--data", nargs="+", default=["fingerprints", "textures"])
    parser.add_argument("--num", type=int, default=16, help="held-out images per data set")
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--torus-nfes", type=int, nargs="+", default=[200, 100, 50, 20])
    parser.add_argument("--image-nfes", type=int, nargs="+", default=[200, 100, 50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "likelihood.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows: list[dict] = []
    started = time.perf_counter()
    command = "OMP_NUM_THREADS=1 python bench/likelihood.py --part " + " ".join(args.part)

    def save(complete: bool, tables: dict[str, str] | None = None) -> None:
        payload = {
            "command": command,
            "settings": {**vars(args)},
            "complete": complete,
            "wall_s": time.perf_counter() - started,
            "rows": rows,
            **(tables or {}),
        }
        write_json(args.out, payload, quiet=not complete)

    tables = {}
    if "torus" in args.part:
        torus_rows(args, device, rows, save)
        tables["table_torus"] = print_table([r for r in rows if r["part"] == "torus"], TORUS_COLUMNS)
    if "images" in args.part:
        if args.models is None:
            raise SystemExit("--part images needs --models DIR")
        image_rows(args, device, rows, save)
        tables["table_images"] = print_table([r for r in rows if r["part"] == "images"], IMAGE_COLUMNS)
    save(complete=True, tables=tables)
    print(f"total {time.perf_counter() - started:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
