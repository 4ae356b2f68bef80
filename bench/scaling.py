"""Data-parallel scaling: training examples/s with 1 … N processes, as a ratio to one process.

    python bench/scaling.py [--processes 1 2] [--preset small] [--batch-size 32] [--steps 8]
                            [--device cpu|cuda] [--out bench/results/scaling.json]

Each configuration is a fresh ``torchrun --standalone --nproc_per_node W`` job of this script in
worker mode: every rank builds the same Trainer (Kuramoto local, 32 px, the given UNet preset,
global batch --batch-size split over the ranks), runs 2 warm-up steps and times --steps steps;
rank 0 reports examples/s of the global batch and the largest peak resident memory of any rank
(CPU) or peak CUDA memory (GPU). On the CPU each process gets OMP_NUM_THREADS = cores ÷ W, so
the comparison is at a fixed number of cores. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import RESULTS, peak_rss_mib, print_table, write_json

HERE = Path(__file__).resolve()


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
    from kuramoto_diffusion.data import open_image_source
    from kuramoto_diffusion.processes import KuramotoConfig
    from kuramoto_diffusion.runtime import init_distributed, shutdown_distributed
    from kuramoto_diffusion.training import Trainer

    context, device = init_distributed(args.device)
    source = open_image_source("textures", 32, channels=1, split="train")
    config = RunConfig(
        model=image_model_config(KuramotoConfig(coupling="local", steps=100), 1, 32, args.preset),
        data=DataConfig(image_size=32),
        training=TrainConfig(train_steps=10**6, batch_size=args.batch_size, checkpoint_every=10**6, sample_every=0),
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, source, Path(folder) / "run", device=device, quiet=True, context=context)
        trainer.start()
        for _ in range(2):
            trainer.train_step()
        context.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        context.barrier()
        seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    peak = torch.tensor([memory])
    if context.distributed:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if context.is_main:
        Path(args.report).write_text(
            json.dumps(
                {
                    "examples_per_second": args.batch_size * args.steps / seconds,
                    "seconds": seconds,
                    "peak_memory_mib_per_rank": float(peak.item()),
                }
            )
        )
    shutdown_distributed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores shared by the processes")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for processes in args.processes:
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "report.json"
            threads = max(1, args.cores // processes)
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                str(processes),
                str(HERE),
                "--worker",
                "--report",
                str(report),
                "--preset",
                args.preset,
                "--batch-size",
                str(args.batch_size),
                "--steps",
                str(args.steps),
                "--device",
                args.device,
            ]
            environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            subprocess.run(command, check=True, env=environment, cwd=HERE.parent)
            result = json.loads(report.read_text())
        rows.append({"processes": processes, "threads_per_process": threads, **result})
    reference = rows[0]["examples_per_second"]
    for row in rows:
        row["ratio_to_first"] = row["examples_per_second"] / reference
    columns = ["processes", "threads_per_process", "examples_per_second", "ratio_to_first", "peak_memory_mib_per_rank"]
    table = print_table(rows, columns)
    write_json(
        args.out,
        {
            "command": "python bench/scaling.py " + " ".join(sys.argv[1:]),
            "rows": rows,
            "table": table,
            "settings": vars(args),
        },
    )


if __name__ == "__main__":
    main()
