"""The command line of a tiny training run, which the tests that train through the CLI share: 16-px textures, the
`tiny` UNet, T = 10, batches of 8, no sample pictures, quiet. Each test adds what it is about (steps, checkpoint
cadence, device, torchrun)."""

from __future__ import annotations

from pathlib import Path

TINY_TRAIN = [
    "train",
    "--data",
    "textures",
    "--image-size",
    "16",
    "--preset",
    "tiny",
    "--steps",
    "10",
    "--batch-size",
    "8",
    "--sample-every",
    "0",
    "--quiet",
]


def tiny_train(out: Path, train_steps: int, checkpoint_every: int, *extra: str, keep: int | None = None) -> list[str]:
    """``train`` arguments (after ``python -m kuramoto_diffusion``) for a tiny run of ``train_steps`` steps into ``out``,
    a checkpoint every ``checkpoint_every`` steps (the newest ``keep`` kept, if given), then ``extra``."""
    keeping = ["--keep-checkpoints", str(keep)] if keep is not None else []
    return [
        *TINY_TRAIN,
        "--train-steps",
        str(train_steps),
        "--checkpoint-every",
        str(checkpoint_every),
        *keeping,
        "--out",
        str(out),
        *extra,
    ]
