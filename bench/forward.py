"""Cost of one forward step of each process, against one forward pass of a UNet-sized conv stack.

    python bench/forward.py [--batch 64] [--sizes 32 64 128] [--repeat 5]

Prints a table and writes bench/results/forward.json. Times are per image; the ratio
divides by a reference measured in the same run (machines here are noisy): a stack of
3×3 convolutions shaped like a small UNet's first level, on the same batch.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from common import print_table, time_call, write_json
from kuramoto_diffusion.processes import EuclideanVPProcess, KuramotoProcess


def reference_stack(channels: int = 64) -> nn.Module:
    """Four 3×3 convolutions of 64 channels with SiLU: roughly one UNet level at full resolution."""
    layers: list[nn.Module] = [nn.Conv2d(2, channels, 3, padding=1)]
    for _ in range(3):
        layers += [nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1)]
    return nn.Sequential(*layers, nn.SiLU(), nn.Conv2d(channels, 2, 3, padding=1)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    processes = {
        "kuramoto-global": KuramotoProcess(coupling="global"),
        "kuramoto-local (M=5)": KuramotoProcess(coupling="local", neighbourhood=5),
        "euclidean": EuclideanVPProcess(),
    }
    stack = reference_stack()
    rows = []
    generator = torch.Generator().manual_seed(0)
    for size in args.sizes:
        x = (torch.rand(args.batch, 1, size, size, generator=generator) * 2 - 1) * 2.8
        with torch.no_grad():
            reference = time_call(lambda: stack(torch.cat([torch.cos(x), torch.sin(x)], 1)), repeat=args.repeat)
        for name, process in processes.items():
            seconds = time_call(lambda: process.step(x, 50, generator=generator), repeat=args.repeat)
            rows.append(
                {
                    "process": name,
                    "size": size,
                    "batch": args.batch,
                    "us_per_image": 1e6 * seconds / args.batch,
                    "reference_us_per_image": 1e6 * reference / args.batch,
                    "ratio_to_conv_stack": seconds / reference,
                }
            )
    table = print_table(rows, ["process", "size", "us_per_image", "reference_us_per_image", "ratio_to_conv_stack"])
    write_json("forward.json", {"command": "python bench/forward.py", "rows": rows, "table": table})


if __name__ == "__main__":
    main()
