"""Sampling throughput: images/s per sampler and number of network evaluations (NFE).

    python bench/sample_throughput.py [--preset small] [--num 16] [--nfe 10 25 50 100]

Uses an untrained network of the given preset (speed does not depend on the weights).
The reference is one network forward pass on the same batch, measured in the same run:
a sweep costs about NFE × that plus the process's own work. Writes
bench/results/sample_throughput.json.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import peak_rss_mib, print_table, write_json
from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.runtime import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for name, process in (("kuramoto-local", KuramotoConfig(coupling="local")), ("euclidean", EuclideanConfig())):
        model = DiffusionModel(image_model_config(process, 1, args.image_size, args.preset)).to(device)
        model.network.eval()
        x = torch.zeros(args.num, 1, args.image_size, args.image_size, device=device)
        with torch.no_grad():
            model.score(x, 50)
            start = time.perf_counter()
            for _ in range(3):
                model.score(x, 50)
            one_pass = (time.perf_counter() - start) / 3
        for sampler in ("sde", "ode", "ode-heun"):
            for nfe in args.nfe:
                start = time.perf_counter()
                result = model.sample(
                    args.num, sampler=sampler, nfe=nfe, batch_size=args.num, generator=torch.Generator().manual_seed(0)
                )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "process": name,
                        "sampler": sampler,
                        "nfe": result.function_evaluations,
                        "images_per_s": args.num / seconds,
                        "seconds_per_batch": seconds,
                        "ratio_to_nfe_forward_passes": seconds / (result.function_evaluations * one_pass),
                    }
                )
    table = print_table(
        rows, ["process", "sampler", "nfe", "images_per_s", "seconds_per_batch", "ratio_to_nfe_forward_passes"]
    )
    write_json(
        "sample_throughput.json",
        {
            "command": "python bench/sample_throughput.py",
            "settings": vars(args),
            "rows": rows,
            "table": table,
            "peak_rss_mib": peak_rss_mib(),
        },
    )


if __name__ == "__main__":
    main()
