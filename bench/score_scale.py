"""Diagnostic: is a trained model's learned score the right size? Sample it with the score multiplied by λ.

    python bench/score_scale.py --model DIR [--model DIR ...] [--data fingerprints] [--lambdas 1 1.05 1.1 1.25]
                                [--samples 256] [--seed 0] [--out bench/results/score_scale.json]

For each saved model (``bench/quality.py --save-models``) and each λ, samples with the reverse SDE at
NFE = T using λ·s(x, t) in place of the learned score s, and evaluates SWD and orientation W1 against
the held-out crops that ``bench/quality.py`` uses (same seeds, so λ = 1 reproduces its SDE row). If
λ slightly above 1 improves the samples, the learned score is systematically too small (SPEC §11);
a model whose score is the right size is best at λ = 1. This is a diagnostic only: the library has
no sampling-time factor, because the fix belongs in training.

About 1.5 min per (model, λ) on one CPU thread at the small budget (256 samples of 32 px, T = 100).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.metrics import evaluate_images
from kuramoto_diffusion.model import DiffusionModel
from quality import BUDGETS, real_sets


class ScaledScore(DiffusionModel):
    """A model whose score is multiplied by a constant λ (diagnostic only)."""

    factor: float = 1.0

    def score(self, x, t_query, condition=None, class_labels=None, guidance=1.0):  # noqa: ANN001, ANN201
        return self.factor * super().score(x, t_query, condition, class_labels, guidance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, nargs="+", required=True, help="saved model folders")
    parser.add_argument("--data", default="fingerprints", help="the data set the models were trained on")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 1.05, 1.1, 1.25])
    parser.add_argument("--budget", default="small", choices=sorted(BUDGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "score_scale.json")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    real, _ = real_sets(args.data, budget, args.seed)
    options = {"seed": args.seed, "fingerprints": args.data == "fingerprints"}
    rows = []
    for folder in args.model:
        loaded = DiffusionModel.from_pretrained(folder)
        for factor in args.lambdas:
            model = ScaledScore(loaded.config, loaded.network)
            model.factor = factor
            start = time.perf_counter()
            result = model.sample(
                budget.samples,
                sampler="sde",
                nfe=budget.steps,
                generator=torch.Generator().manual_seed(args.seed + 1),
                batch_size=budget.sample_batch,
            )
            images, clipped = model.decode(result.states)
            metrics = evaluate_images(real, images.cpu(), **options)
            rows.append(
                {
                    "model": folder.name,
                    "lambda": factor,
                    "swd_mean": metrics["swd_mean"],
                    "orientation_w1": metrics["orientation_w1"],
                    "clipped_fraction": clipped / images.numel(),
                    "sample_s": time.perf_counter() - start,
                }
            )
            print(
                f"{folder.name} λ {factor}: swd {metrics['swd_mean']:.2f} orientation {metrics['orientation_w1']:.4f}",
                flush=True,
            )
            write_json(
                args.out, {"command": "python bench/score_scale.py", "data": args.data, "rows": rows}, quiet=True
            )
    table = print_table(rows, ["model", "lambda", "swd_mean", "orientation_w1", "clipped_fraction"])
    write_json(args.out, {"command": "python bench/score_scale.py", "data": args.data, "rows": rows, "table": table})


if __name__ == "__main__":
    main()
