"""Cost of a training step per network preset: what ``train --help`` and the README quote.

    python bench/preset_cost.py [--presets tiny small] [--steps 10] [--batch-size 32] [--image-size 32]
                                [--process kuramoto-local] [--device cpu]

For each preset, a Trainer with TrainConfig's defaults (the default objective, the chain pool) on 32-px grey
texture crops is started, runs 2 warm-up steps, then ``--steps`` timed steps (forward states, loss, backward,
AdamW, EMA). Reports seconds per step and each preset's cost as a ratio to the first preset's, measured in the
same run (the absolute seconds depend on the machine and its load; the ratio much less). Writes
bench/results/preset_cost.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile

import torch

from common import print_table, synchronized_seconds, write_json
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.processes import process_config
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.training import Trainer

WARMUP_STEPS = 2


def seconds_per_step(preset: str, args: argparse.Namespace, device: torch.device) -> tuple[float, int]:
    """(mean seconds per timed training step, parameter count) of ``preset``."""
    from kuramoto_diffusion.nets import count_parameters

    source = open_image_source("textures", args.image_size, channels=1)
    config = RunConfig(
        model=image_model_config(process_config(args.process, steps=100), 1, args.image_size, preset),
        data=DataConfig(image_size=args.image_size),
        training=TrainConfig(
            train_steps=10**6, batch_size=args.batch_size, fit_prior=False, checkpoint_every=10**6, sample_every=0
        ),
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, source, folder, device=device, quiet=True)
        trainer.start()
        for _ in range(WARMUP_STEPS):
            trainer.train_step()

        def steps() -> None:
            for _ in range(args.steps):
                trainer.train_step()

        return synchronized_seconds(steps, device) / args.steps, count_parameters(trainer.model.network)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--process", default="kuramoto-local")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="preset_cost.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows, reference = [], None
    for preset in args.presets:
        seconds, parameters = seconds_per_step(preset, args, device)
        reference = reference or seconds
        rows.append(
            {
                "preset": preset,
                "parameters": parameters,
                "seconds_per_step": seconds,
                "ratio_to_first": seconds / reference,
            }
        )
    print(
        f"{args.process}, batch {args.batch_size}, {args.image_size} px, {args.steps} steps after {WARMUP_STEPS} "
        f"warm-up; {torch.get_num_threads()} thread(s) on {device}"
    )
    table = print_table(rows, ["preset", "parameters", "seconds_per_step", "ratio_to_first"])
    write_json(
        args.out,
        {
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "settings": vars(args),
            "threads": torch.get_num_threads(),
            "rows": rows,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
