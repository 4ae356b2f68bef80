"""What the structure metrics (kid_random, singular_points_w1, minutiae_w1) say about known degradations, and
what they cost.

    python bench/structure_metrics.py [--data fingerprints textures] [--samples 256] [--size 32]
                                      [--out bench/results/structure_metrics.json]

For each data set, ``--samples`` crops of the training split are the reference; the fake sets are other
held-out crops (the real-against-real floor) and those crops degraded: pixel noise, a blur, reduced contrast.
Each metric's value is printed beside SWD and orientation W1 for comparison. The cost table gives each
metric's seconds for one reference-against-fake call, as a ratio to laplacian_swd timed in the same run.
About 1 min per data set on one CPU thread.
"""

from __future__ import annotations

import argparse
import time

import scipy.ndimage
import torch

from common import print_table, write_json
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.metrics import kid_random, laplacian_swd, minutiae_w1, orientation_distance, singular_points_w1

METRICS = {
    "swd_mean": lambda real, fake: laplacian_swd(real, fake)["swd_mean"],
    "orientation_w1": lambda real, fake: orientation_distance(real, fake)["orientation_w1"],
    "kid_random": kid_random,
    "singular_points_w1": singular_points_w1,
    "minutiae_w1": minutiae_w1,
}


def degraded(images: torch.Tensor) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "real (held out)": images,
        "noise 0.1": (images + 0.1 * torch.randn(images.shape, generator=generator, dtype=images.dtype)).clamp(-1, 1),
        "blur 0.7 px": torch.from_numpy(scipy.ndimage.gaussian_filter(images.numpy(), (0, 0, 0.7, 0.7))),
        "contrast × 0.7": 0.7 * images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["fingerprints", "textures"])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", default="structure_metrics.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, costs = [], []
    for data in args.data:
        real = open_image_source(data, args.size, split="train").fixed_batch(args.samples, seed=1).double()
        held_out = open_image_source(data, args.size, split="val").fixed_batch(args.samples, seed=2).double()
        for label, fake in degraded(held_out).items():
            row: dict[str, object] = {"data": data, "fake": label}
            for name, metric in METRICS.items():
                began = time.perf_counter()
                row[name] = float(metric(real, fake))
                if label == "real (held out)":
                    costs.append({"data": data, "metric": name, "seconds": time.perf_counter() - began})
            rows.append(row)
    print_table(rows, ["data", "fake", *METRICS])
    for cost in costs:
        reference = next(c["seconds"] for c in costs if c["data"] == cost["data"] and c["metric"] == "swd_mean")
        cost["ratio_to_swd"] = cost["seconds"] / reference
    print()
    print_table(costs, ["data", "metric", "seconds", "ratio_to_swd"])
    write_json(args.out, {"settings": vars(args), "rows": rows, "costs": costs})


if __name__ == "__main__":
    main()
